"""Weighted gradient averaging (WGA), personalized for everyone (Chayti, Karimireddy, Stich, Flammarion, Jaggi,
"Linear Speedup in Personalized Collaborative Learning", arXiv 2111.05968; spec docs/papers/wga-bias-correction.md
§1.2).

Every client i is a target with its own model x_i and its own weight row A[i, :]. At each step every task j draws
a minibatch, and client i moves along Σ_j A[i, j] g_j(x_i), where g_j(x_i) is task j's minibatch gradient at
client i's model (all K×K pairs in one vectorized call, ``pcl.engine.pairwise``); a round is ``local_steps``
such steps. This is the neural-network counterpart of ``pcl.sim.collab_sgd.collab_sgd(targets="all")``.

Weights: ``uniform`` (1/K: plain gradient averaging, FedAvg-like; variance / K but bias from every other task),
``beta`` (1−β on the own task, β/(K−1) on each other; β = 0 is Local SGD) or ``estimated``, our practical recipe
(not the paper's). Every ``reestimate_every`` rounds, on a fresh batch of ``estimate_batch`` samples per task:

* σ_ij² = an unbiased estimate of the trace of task j's per-sample gradient covariance at x_i;
* ζ_ij² = ‖ḡ_j(x_i) − ḡ_i(x_i)‖² minus its noise (σ_ij² + σ_ii²)/``estimate_batch`` (clipped at 0 when used);
* both are smoothed over estimates (running mean, then an EMA with rate ``memory``, as
  ``pcl.sim.collab_sgd.EstimatedWeights``), and row i solves the spec's convex program
  min Σ_j A_ij²·(σ_ij²/B)/T′ + (Σ_j A_ij ζ_ij)² over the simplex (``pcl.theory.wga.optimal_weights``):
  inverse-variance weights shrunk by the estimated bias.

Execution is always vectorized (``train.engine`` does not apply; the per-pair gradients are tested against a plain
double loop in tests/test_wga_bc_oma_algorithms.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pcl.algorithms.base import Algorithm, LocalSGD, register
from pcl.algorithms.hparams import param
from pcl.engine import Params
from pcl.engine.batches import make_plan
from pcl.engine.pairwise import mixed_grads, pair_grad_stats
from pcl.sim.collab_sgd import wga_weights
from pcl.theory.wga import optimal_weights

WEIGHTS = ("uniform", "beta", "estimated")


@dataclass
class PairwiseSGDHparams(LocalSGD):
    """Plain SGD with step ``lr`` on minibatches of ``batch_size`` per task; a round is ``local_steps`` steps
    (the shared local-SGD spec, with these defaults; a round is counted in steps, not epochs)."""

    lr: float = param(0.1, gt=0)
    batch_size: int = param(16, ge=1)
    local_epochs: float | None = param(None, gt=0)
    local_steps: int | None = param(5, ge=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.local_steps is None:
            raise ValueError(f"local_epochs={self.local_epochs!r}: {type(self).__qualname__} counts a round in "
                             "local_steps; set local_steps and leave local_epochs null")
        if self.optimizer != "sgd" or self.weight_decay or self.drop_last:
            raise ValueError(f"optimizer={self.optimizer!r}, weight_decay={self.weight_decay}, drop_last="
                             f"{self.drop_last}: {type(self).__qualname__} runs the paper's plain SGD steps")


class PairwiseSGD(Algorithm):
    """Every client steps along its own combination of all tasks' gradients at its own model; subclasses say
    which combination (``_step``) and what extra state they keep (``_extra_state``, ``_before_round``).

    Not ``ctx.local_train``: a step needs every task's gradient at every client's model (the K x K table of
    ``pcl.engine.pairwise``), not each client's gradient of its own objective on its own data."""

    Hparams = PairwiseSGDHparams

    def init(self) -> dict:
        params = self.ctx.broadcast(self.ctx.init_params())
        return {"params": params, **self._extra_state(params)}

    def round(self, state: dict, t: int) -> dict:
        state = self._before_round(dict(state), t)
        plan = make_plan(self.ctx.train.n.cpu(), self._draw, steps=self.hp.local_steps, generator=self.ctx.rng("batches"))
        for s in range(plan.steps):
            state = self._step(state, plan.index[s])
        return state

    def personalized(self, state: dict) -> Params:
        return state["params"]

    # --- hooks and helpers ---------------------------------------------------------------------------------
    @property
    def _draw(self) -> int:
        """Samples each task draws per step."""
        return self.hp.batch_size

    def _extra_state(self, params: Params) -> dict:
        return {}

    def _before_round(self, state: dict, t: int) -> dict:
        return state

    def _step(self, state: dict, index: torch.Tensor) -> dict:
        raise NotImplementedError

    def _batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Task j's samples ``index[j]`` from its training split: x ``[K, B, ...]``, y ``[K, B]``."""
        rows = torch.arange(self.ctx.num_clients)[:, None]
        return self.ctx.train.x[rows, index], self.ctx.train.y[rows, index]

    def _mixed(self, weights: torch.Tensor, params: Params, index: torch.Tensor) -> Params:
        """Row i: sum_j weights[i, j] g_j(x_i) on the tasks' batches ``index``."""
        return mixed_grads(self.ctx.model, params, *self._batch(index), weights)


    def _descend(self, params: Params, direction: Params) -> Params:
        return {n: p - self.hp.lr * direction[n] for n, p in params.items()}


@dataclass
class WGAHparams(PairwiseSGDHparams):
    """WGA (Chayti et al. 2021, arXiv 2111.05968, Algorithm 1, every client a target). ``weights``: 'uniform',
    'beta' (1−``beta`` on own, ``beta``/(K−1) on each other) or 'estimated' (our practical recipe, see the module
    docstring): re-solved every ``reestimate_every`` rounds from ``estimate_batch`` samples per task (variances from
    ``estimate_groups`` group means, see ``pcl.engine.pairwise.pair_grad_stats``), smoothed with
    EMA rate ``memory`` (None = running mean), horizon T′ = ``horizon`` (None: (2 − lr)/lr, the averaging window
    of constant-step SGD at unit curvature, as ``pcl.sim.collab_sgd.EstimatedWeights``)."""

    weights: str = param("estimated", choices=WEIGHTS)
    beta: float = param(0.5, ge=0, le=1)
    reestimate_every: int = param(1, ge=1)
    estimate_batch: int = param(32, ge=2)
    estimate_groups: int = param(4, ge=2)
    memory: float | None = param(0.3, gt=0, le=1)
    horizon: float | None = param(None, gt=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.estimate_groups > self.estimate_batch or self.estimate_batch % self.estimate_groups:
            raise ValueError(f"estimate_groups={self.estimate_groups} must split estimate_batch="
                             f"{self.estimate_batch} into >= 2 equal parts")


@register("wga")
class WGA(PairwiseSGD):
    Hparams = WGAHparams

    def _extra_state(self, params: Params) -> dict:
        k, hp = self.ctx.num_clients, self.hp
        if hp.weights == "estimated":
            zeros = torch.zeros(k, k, dtype=torch.float64)
            return {"weights": torch.eye(k, dtype=torch.float64), "sigma2": zeros, "zeta2": zeros.clone(),
                    "estimates": 0}
        beta = None if hp.weights == "uniform" else hp.beta
        return {"weights": torch.from_numpy(wga_weights(k, "all", beta=beta))}

    def _before_round(self, state: dict, t: int) -> dict:
        if self.hp.weights == "estimated" and t % self.hp.reestimate_every == 0:
            state.update(self._estimate(state))
        return state

    def _step(self, state: dict, index: torch.Tensor) -> dict:
        direction = self._mixed(state["weights"], state["params"], index)
        return {**state, "params": self._descend(state["params"], direction)}

    def _estimate(self, state: dict) -> dict:
        """Fold one estimate of σ_ij² and ζ_ij² into the running averages and re-solve every row's QP."""
        hp = self.hp
        index = make_plan(self.ctx.train.n.cpu(), hp.estimate_batch, steps=1, generator=self.ctx.rng("estimate")).index[0]
        gap, var = pair_grad_stats(self.ctx.model, state["params"], *self._batch(index), groups=hp.estimate_groups,
                                   gaps=True)  # ‖ḡ_j(x_i) − ḡ_i(x_i)‖², without the K x K gradient table
        gap, var = gap.cpu(), var.double().cpu()  # the weights' small K x K problem is solved on the CPU
        zeta2 = gap - (var + var.diagonal()[:, None]) / hp.estimate_batch
        zeta2.fill_diagonal_(0.0)
        mix = max(1.0 / (state["estimates"] + 1), hp.memory or 0.0)
        sigma2 = state["sigma2"] + mix * (var - state["sigma2"])
        zeta2 = state["zeta2"] + mix * (zeta2 - state["zeta2"])
        horizon = hp.horizon if hp.horizon is not None else (2.0 - hp.lr) / hp.lr
        weights = optimal_weights(np.maximum(sigma2.numpy(), 1e-12) / hp.batch_size,
                                  np.sqrt(np.maximum(zeta2.numpy(), 0.0)), horizon)
        return {"weights": torch.from_numpy(weights), "sigma2": sigma2, "zeta2": zeta2,
                "estimates": state["estimates"] + 1}
