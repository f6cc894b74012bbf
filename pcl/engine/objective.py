"""Per-client local objectives, composed from small pieces instead of trainer keywords.

An ``Objective`` is the loss ONE client minimises, written for one client's (unstacked) parameters and a batch; the
engine vmaps it over clients or loops it, so every piece works in both backends and under ``torch.func``. Pieces
read per-client tensors from ``extras`` (a dict whose values have a leading client dimension in the stacked call and
are one client's slice inside the objective), so an algorithm passes anchors, class weights, mixture weights or
control variates as data, never as a new engine keyword:

* ``TaskLoss(class_weights=key)``: mean cross-entropy (optionally per-class weighted) or mean squared error;
* ``Mixture(weights=key)``: the client's parameters hold M learners stacked ``[M, ...]``; it predicts with their
  mixture ``sum_m w_m softmax(f_m(x))`` (FedEM, PDBO-MTL). Its output is the log of the mixed probability, so the
  task loss on it is exactly ``-log sum_m w_m p_m(y|x)``;
* ``Prox(anchor=key, lam)``: (lam/2)||p - anchor||^2 on the trained parameters, either differentiated (FedProx's
  solver) or applied as the exact proximal map after each step (stable for any lam: Ditto's limits);
* ``Linear(key)``: <c, p>, a linear correction of the gradient by c (SCAFFOLD's control variates c - c_i).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from pcl.engine.stack import Params

Extras = dict[str, "torch.Tensor | Params"]


def task_loss(out: torch.Tensor, y: torch.Tensor, class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy (optionally with per-class weights on each sample's loss) or mean squared error."""
    if out.shape[-1] == 1 and y.dtype.is_floating_point:
        return F.mse_loss(out.squeeze(-1), y)
    ce = F.cross_entropy(out, y, reduction="none")
    return (ce * class_weights[y]).mean() if class_weights is not None else ce.mean()


@dataclass(frozen=True)
class TaskLoss:
    """The data term; ``class_weights`` names an extras entry ``[C]`` weighting each sample's loss by its class."""

    class_weights: str | None = None

    def __call__(self, out: torch.Tensor, y: torch.Tensor, extras: Extras) -> torch.Tensor:
        return task_loss(out, y, extras[self.class_weights] if self.class_weights else None)


@dataclass(frozen=True)
class Single:
    """One parameter set per client: outputs are the model's."""

    def __call__(self, model: nn.Module, params: Params, x: torch.Tensor, extras: Extras) -> torch.Tensor:
        return functional_call(model, params, (x,))


@dataclass(frozen=True)
class Mixture:
    """M learners stacked in each client's parameters, mixed by the client's weights ``extras[weights]`` ``[M]``.

    Classification returns log(sum_m w_m softmax(f_m(x))) (normalised, so cross-entropy on it is the mixture's
    negative log-likelihood); regression returns sum_m w_m f_m(x)."""

    weights: str = "mixture"

    def __call__(self, model: nn.Module, params: Params, x: torch.Tensor, extras: Extras) -> torch.Tensor:
        outs = vmap(lambda p: functional_call(model, p, (x,)))(params)  # [M, B, out]
        w = extras[self.weights].to(outs.dtype)
        if outs.shape[-1] == 1:
            return torch.einsum("m,mbo->bo", w, outs)
        logw = w.clamp_min(torch.finfo(outs.dtype).tiny).log()
        return torch.logsumexp(logw[:, None, None] + outs.log_softmax(-1), dim=0)


@dataclass(frozen=True)
class Prox:
    """(lam/2)||p - extras[anchor]||^2 over the trained parameters that the anchor has. ``exact``: applied as the
    proximal map p <- (p + lr*lam*anchor)/(1 + lr*lam) after each step instead of being differentiated."""

    anchor: str = "anchor"
    lam: float = 0.0
    exact: bool = True

    def penalty(self, params: Params, extras: Extras) -> torch.Tensor:
        anchor = extras[self.anchor]
        return 0.5 * self.lam * sum(((p - anchor[n]) ** 2).sum() for n, p in params.items() if n in anchor)

    def apply(self, params: Params, extras: Extras, lrs: dict[str, float]) -> Params:
        anchor = extras[self.anchor]
        return {n: (p + (lrs[n] * self.lam) * anchor[n]) / (1 + lrs[n] * self.lam) if n in anchor else p
                for n, p in params.items()}


@dataclass(frozen=True)
class Linear:
    """<extras[key], p> summed over the trained parameters the correction has (adds extras[key] to the gradient)."""

    key: str = "correction"

    def penalty(self, params: Params, extras: Extras) -> torch.Tensor:
        c = extras[self.key]
        return sum((c[n] * p).sum() for n, p in params.items() if n in c)


@dataclass(frozen=True)
class Objective:
    """predict -> data loss, plus parameter terms. ``Objective()`` is plain empirical risk."""

    predict: Single | Mixture = field(default_factory=Single)
    loss: TaskLoss = field(default_factory=TaskLoss)
    terms: tuple[Prox | Linear, ...] = ()

    def __add__(self, term: Prox | Linear) -> Objective:
        return replace(self, terms=(*self.terms, term))

    @property
    def active_terms(self) -> tuple:
        """Terms that change anything (a Prox with lam 0 is skipped, so e.g. FedProx with mu=0 is FedAvg bit for bit)."""
        return tuple(t for t in self.terms if not (isinstance(t, Prox) and t.lam == 0))

    def value(self, model: nn.Module, trained: Params, frozen: Params, x: torch.Tensor, y: torch.Tensor,
              extras: Extras) -> torch.Tensor:
        """One client's loss on one batch; ``trained`` are the parameters the gradient is taken for."""
        loss = self.loss(self.predict(model, {**trained, **frozen}, x, extras), y, extras)
        for term in self.active_terms:
            if not (isinstance(term, Prox) and term.exact):
                loss = loss + term.penalty(trained, extras)
        return loss

    def after_step(self, trained: Params, extras: Extras, lrs: dict[str, float]) -> Params:
        """The exact proximal maps, with each parameter's own step size."""
        for term in self.active_terms:
            if isinstance(term, Prox) and term.exact:
                trained = term.apply(trained, extras, lrs)
        return trained
