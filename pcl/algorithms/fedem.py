"""FedEM (Marfoq, Neglia, Bellet, Kameni, Vidal, NeurIPS 2021, "Federated Multi-Task Learning under a Mixture of
Distributions"), Algorithm 1, the centralized version: M shared learners theta_m and per-client mixture weights pi_i.
Each round every sampled client runs
  E-step: q_i(m | x, y) proportional to pi_im exp(-loss(f_theta_m(x), y)), for each of its training samples;
  M-step: pi_i = the mean of q_i over its samples; each learner trained locally on the q-weighted loss;
and the server averages each learner over the sampled clients, weighted by training-set size. A client predicts
with its mixture sum_m pi_im p_m(y | x) (``evaluate``, via the engine's ``Mixture`` predictor, whose output is the
log of the mixed probability, so the loss and accuracy are the mixture's). For regression exp(-squared error) is the
likelihood (a Gaussian of variance 1/2) and the prediction is sum_m pi_im f_m(x).

Every client's M learners are trained at once, stacked ``[M, ...]`` inside its row, vectorized over clients. The
engine's objectives see a minibatch but not its sample indices, so the per-sample weights q cannot be looked up;
``ResponsibilityWeighted`` recomputes them from the round-start learners, which is exact, since q depends only on
(x, y), pi_i and those learners (one extra forward pass of the M learners per step). The sum over m of the
q-weighted losses separates, so each learner takes exactly its own M-step gradient. With M = 1, q = 1 and FedEM is
FedAvg (tested). As in the paper, learners start from independent initialisations and pi_i from uniform weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from pcl.algorithms.base import Algorithm, register
from pcl.algorithms.fedavg import FedAvgHparams
from pcl.algorithms.hparams import param
from pcl.data.types import ClientData
from pcl.engine import Mixture, Objective, Params, broadcast, outputs, score, weighted_mean


@dataclass
class FedEMHparams(FedAvgHparams):
    """``num_learners``: M, the shared components (the paper's default 3). The paper trains 1 local epoch per round
    with all clients, lr 0.05 for FedEM, batch 128 (its code's settings, decentralized-bilevel.md)."""

    num_learners: int = param(3, ge=1)


def sample_losses(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample loss ``[..., B]`` of outputs ``[..., B, out]``: cross-entropy, or squared error (one output)."""
    if out.shape[-1] == 1 and y.dtype.is_floating_point:
        return (out.squeeze(-1) - y) ** 2
    return -F.log_softmax(out, -1).gather(-1, y.expand(*out.shape[:-1]).unsqueeze(-1)).squeeze(-1)


def posterior(losses: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
    """The E-step: q(m) proportional to pi_m exp(-loss_m), along the last dimension."""
    logpi = pi.clamp_min(torch.finfo(losses.dtype).tiny).log()
    return torch.softmax(logpi - losses, dim=-1)


def _learner_outputs(model: nn.Module, learners: Params, x: torch.Tensor) -> torch.Tensor:
    return vmap(lambda p: functional_call(model, p, (x,)))(learners)  # [M, B, out]


@dataclass(frozen=True)
class ResponsibilityWeighted(Objective):
    """The M-step loss of one client: sum_m mean_b q_b(m) loss(f_theta_m(x_b), y_b), with q from the round-start
    learners ``extras['start']`` and weights ``extras['pi']`` (no gradient flows into q)."""

    def value(self, model, trained, frozen, x, y, extras) -> torch.Tensor:
        losses = sample_losses(_learner_outputs(model, {**trained, **frozen}, x), y)          # [M, B]
        with torch.no_grad():
            q = posterior(sample_losses(_learner_outputs(model, extras["start"], x), y).T, extras["pi"])  # [B, M]
        return (q.T * losses).sum(0).mean()


@register("fedem")
class FedEM(Algorithm):
    Hparams = FedEMHparams

    def init(self) -> dict:
        m = self.hp.num_learners
        return {"learners": self.ctx.init_params(independent=m),
                "pi": torch.full((self.ctx.num_clients, m), 1.0 / m, dtype=torch.float64)}

    def e_step(self, learners: Params, pi: torch.Tensor, clients: torch.Tensor) -> torch.Tensor:
        """Responsibilities ``[len(clients), n_max, M]`` on the clients' training samples (0 on padding rows)."""
        d = self.ctx.train
        sub = ClientData(d.x[clients], d.y[clients], d.n[clients])
        losses = torch.stack([sample_losses(outputs(self.ctx.model, broadcast({n: v[m] for n, v in learners.items()},
                                                                            len(clients)), sub), sub.y)
                              for m in range(self.hp.num_learners)], -1)                   # [c, n_max, M]
        q = posterior(losses.double(), pi.to(losses.device)[:, None, :])
        return q * sub.mask()[..., None]

    def round(self, state: dict, t: int) -> dict:
        chosen = self.ctx.sample_clients(self.hp.client_fraction)
        learners, pi = state["learners"], state["pi"]
        q = self.e_step(learners, pi[chosen], chosen)
        n = self.ctx.train.n[chosen]
        start = broadcast(learners, len(chosen))
        extras = {"start": start, "pi": pi[chosen].to(next(iter(learners.values())))}
        local = self.ctx.local_train(start, chosen, self.hp, objective=ResponsibilityWeighted(), extras=extras)
        new_pi = pi.clone()
        new_pi[chosen] = (q.sum(1) / n[:, None].to(q)).cpu()
        return {"learners": weighted_mean(local, n), "pi": new_pi}

    @torch.no_grad()
    def evaluate(self, state: dict, splits: tuple[str, ...]) -> dict[str, dict[str, torch.Tensor]]:
        """Each client's mixture prediction on its own split (all clients in one vmapped call)."""
        learners, model = state["learners"], self.ctx.model
        predict = Mixture("pi")
        out = {}
        for s in splits:
            data = self.ctx.data(s)
            pi = state["pi"].to(next(iter(learners.values())))
            mixed = vmap(lambda w, x: predict(model, learners, x, {"pi": w}))(pi, data.x)
            out[s] = score(mixed, data)
        return out
