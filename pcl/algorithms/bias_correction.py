"""Bias correction (BC), personalized for everyone (Chayti et al., arXiv 2111.05968, spec
docs/papers/wga-bias-correction.md §1.3). The update form is RECONSTRUCTED (spec §1.3 [R]): the paper's text was
not available, only the idea "use past observed gradients to estimate and correct the collaborators' bias".

Client i keeps its model x_i and an EMA c_i (parameter-shaped) of the bias ∇f_i − Σ_j w_ij ∇f_j. At each step
every task j draws a minibatch and, with g_j = g_j(x_i) (task j's gradient at client i's model) and
ĝ_i = Σ_{j≠i} w_ij g_j (w_ij = 1/(K−1)),

    d_i = α g_i + (1−α)(ĝ_i + c_i),   c_i ← (1−a) c_i + a (g_i − ĝ_i),   x_i ← x_i − lr·d_i.

With α = a this is d_i = ĝ_i + c_i(new): the collaborators' gradient plus a momentum estimate of (target −
collaborators), the AuxMOM pattern of Chayti & Karimireddy (arXiv 2206.00395). Special cases: a = 0 with c = 0 is
WGA with weight α on the own task and (1−α)/(K−1) on each other (``wga`` with β = 1 − α); α = 1 is Local SGD.
The spec's options are exposed: EMA rate ``a`` (linear speedup needs a ≪ lr, e.g. lr/K), own-gradient weight ``alpha``
(default a), ``fresh_samples`` (c is updated on a second, disjoint minibatch instead of the one d used) and
``c_init_batch`` (c starts from one estimate g_i − ĝ_i on that many samples per task at the initial model; None:
c = 0). The scalar/quadratic simulator of the same update is ``pcl.sim.collab_sgd.BiasCorrection``.

On a finite client dataset BC's fixed point is each client's own empirical minimiser (d_i = 0 with c_i at its mean
means ∇f_i(x_i) = 0): it removes WGA's bias floor and cuts the SGD noise, not the statistical error of a small local
dataset, so on real data it should land near Local at the same step size rather than beyond it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pcl.algorithms.base import register
from pcl.algorithms.hparams import param
from pcl.algorithms.wga import PairwiseSGD, PairwiseSGDHparams
from pcl.engine import Params
from pcl.engine.batches import make_plan
from pcl.engine.pairwise import own_grads
from pcl.sim.collab_sgd import bc_weights


@dataclass
class BiasCorrectionHparams(PairwiseSGDHparams):
    """BC (Chayti et al. 2021, arXiv 2111.05968; update form reconstructed, spec §1.3): EMA rate ``a`` in [0, 1],
    own-gradient weight ``alpha`` (None = a), ``fresh_samples`` for the c update, ``c_init_batch`` (None = c 0)."""

    a: float = param(0.05, ge=0, le=1)
    alpha: float | None = param(None, ge=0, le=1)
    fresh_samples: bool = False
    c_init_batch: int | None = param(64, ge=1)


@register("bias_correction")
class BiasCorrection(PairwiseSGD):
    Hparams = BiasCorrectionHparams

    @property
    def _draw(self) -> int:
        return self.hp.batch_size * (2 if self.hp.fresh_samples else 1)

    def _extra_state(self, params: Params) -> dict:
        weights = torch.from_numpy(bc_weights(self.ctx.num_clients, "all"))
        if self.hp.c_init_batch is None:
            c = {n: torch.zeros_like(v) for n, v in params.items()}
        else:
            index = make_plan(self.ctx.train.n.cpu(), self.hp.c_init_batch, steps=1,
                              generator=self.ctx.rng("estimate")).index[0]
            c = self._bias(weights, params, index)
        return {"weights": weights, "c": c}

    def _step(self, state: dict, index: torch.Tensor) -> dict:
        hp, params, c, w = self.hp, state["params"], state["c"], state["weights"]
        alpha = hp.a if hp.alpha is None else hp.alpha
        first, second = index.split(hp.batch_size, dim=1) if hp.fresh_samples else (index, index)
        own, others = self._own(params, first), self._mixed(w, params, first)
        direction = {n: alpha * own[n] + (1 - alpha) * (others[n] + c[n]) for n in params}
        bias = self._bias(w, params, second) if hp.fresh_samples else {n: own[n] - others[n] for n in params}
        c = {n: c[n] + hp.a * (bias[n] - c[n]) for n in params}
        return {**state, "params": self._descend(params, direction), "c": c}

    def _own(self, params: Params, index: torch.Tensor) -> Params:
        """g_i(x_i): each client's gradient of its own batch at its own model."""
        return own_grads(self.ctx.model, params, *self._batch(index))

    def _bias(self, weights: torch.Tensor, params: Params, index: torch.Tensor) -> Params:
        """One sample of g_i(x_i) − Σ_j w_ij g_j(x_i) per client."""
        own, others = self._own(params, index), self._mixed(weights, params, index)
        return {n: own[n] - others[n] for n in params}
