"""One vectorised core for personalized collaborative SGD: weighted gradient averaging and bias correction.

Paper A (Chayti et al., arXiv 2111.05968; spec ``docs/papers/wga-bias-correction.md`` §1.2, §1.3, §4.1).
:func:`collab_sgd` runs ``reps`` independent seeds at once, for one or several *targets*: row m of the
weight matrix optimises task ``targets[m]``, so ``targets="all"`` with a K×K matrix is the
personalized-for-everyone form (every task is a target with its own weight row). Each target queries
every task's oracle at its own iterate with independent noise. Arrays are laid out
[rep, target, task, (sample,) coordinate]; numpy float64 throughout so that the exact bridge to model
averaging (spec §1.5(c)) holds to round-off.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from pcl.theory.wga import optimal_weights

__all__ = [
    "QuadraticOracle",
    "LinearRegressionOracle",
    "StreamOracle",
    "BiasCorrection",
    "EstimatedWeights",
    "SGDResult",
    "wga_weights",
    "bc_weights",
    "collab_sgd",
    "mean_se",
]

Schedule = Literal["constant", "harmonic"]
SCHEDULES = ("constant", "harmonic")


# --------------------------------------------------------------------------------------------- oracles
@dataclass(frozen=True)
class QuadraticOracle:
    """f_i(x) = (h_i/2)‖x − b_i‖² with per-sample gradient h_i(x − b_i) + σ_i ξ, ξ ~ N(0, I_d) (spec §1.5).

    ``b`` is (K, d) (or (K,) for scalar tasks), ``h`` and ``sigma`` scalars or length K.
    """

    b: np.ndarray
    h: np.ndarray | float = 1.0
    sigma: np.ndarray | float = 1.0
    single_draw = False

    def __post_init__(self) -> None:
        b = np.asarray(self.b, dtype=float)
        b = b[:, None] if b.ndim == 1 else b
        if b.ndim != 2:
            raise ValueError(f"b must have shape (K,) or (K, d), got {b.shape}")
        object.__setattr__(self, "b", b)
        for name in ("h", "sigma"):
            object.__setattr__(self, name, _per_task(getattr(self, name), b.shape[0], name))
        if np.any(self.h <= 0) or np.any(self.sigma < 0):
            raise ValueError(f"h must be > 0 and sigma >= 0, got h={self.h}, sigma={self.sigma}")

    @classmethod
    def shifted(cls, n_collab: int, zeta=0.0, *, delta=0.0, sigma=1.0, dim: int = 1,
                directions=None) -> "QuadraticOracle":
        """The spec's knobs (§4.2): b_0 = 0, h_0 = 1, b_i = ζ_i·u_i, h_i = 1 + δ_i for collaborators.

        ``directions`` (N, d) are normalised to unit u_i; by default every u_i = e_1 (the scalar setting).
        """
        if n_collab < 1:
            raise ValueError(f"n_collab={n_collab} must be >= 1")
        u = np.zeros((n_collab, dim))
        if directions is None:
            u[:, 0] = 1.0
        else:
            u = np.asarray(directions, dtype=float).reshape(n_collab, dim)
            u = u / np.linalg.norm(u, axis=1, keepdims=True)
        zeta = _per_task(zeta, n_collab, "zeta")
        b = np.vstack([np.zeros((1, dim)), zeta[:, None] * u])
        return cls(b, np.r_[1.0, 1.0 + _per_task(delta, n_collab, "delta")], sigma)

    @property
    def num_tasks(self) -> int:
        return self.b.shape[0]

    @property
    def optimum(self) -> np.ndarray:
        return self.b

    def grads(self, x, t: int, batch: int, rng: np.random.Generator, per_sample: bool = False):
        mean = self.h[:, None] * (x[:, :, None, :] - self.b)  # [rep, target, task, d]
        if per_sample:
            noise = rng.standard_normal(mean.shape[:3] + (batch,) + mean.shape[3:])
            return mean[..., None, :] + self.sigma[:, None, None] * noise
        return mean + self.sigma[:, None] / np.sqrt(batch) * rng.standard_normal(mean.shape)


@dataclass(frozen=True)
class LinearRegressionOracle:
    """Task i: features a ~ N(0, s_i² I_d), y = a·θ_i + ν_i ε; F_i(x) = ½(a·x − y)², Hessian s_i² I.

    The gradient noise a(a·(x − θ_i) − ν_i ε) depends on the iterate (unlike the quadratic oracle).
    """

    theta: np.ndarray
    noise: np.ndarray | float = 1.0
    scale: np.ndarray | float = 1.0
    single_draw = False

    def __post_init__(self) -> None:
        theta = np.asarray(self.theta, dtype=float)
        if theta.ndim != 2:
            raise ValueError(f"theta must have shape (K, d), got {theta.shape}")
        object.__setattr__(self, "theta", theta)
        for name in ("noise", "scale"):
            object.__setattr__(self, name, _per_task(getattr(self, name), theta.shape[0], name))

    @property
    def num_tasks(self) -> int:
        return self.theta.shape[0]

    @property
    def optimum(self) -> np.ndarray:
        return self.theta

    def grads(self, x, t: int, batch: int, rng: np.random.Generator, per_sample: bool = False):
        r, m, d = x.shape
        k = self.num_tasks
        feats = self.scale[:, None, None] * rng.standard_normal((r, m, k, batch, d))
        resid = np.einsum("rmkbd,rmkd->rmkb", feats, x[:, :, None, :] - self.theta)
        resid = resid - self.noise[:, None] * rng.standard_normal((r, m, k, batch))
        g = feats * resid[..., None]
        return g if per_sample else g.mean(-2)


@dataclass(frozen=True)
class StreamOracle:
    """f_i(x) = ½E(x − Y_i)² read from fixed data ``data`` [rep, task, n]: step t uses samples
    t·B … (t+1)·B − 1 of every task (shared by all targets), gradient x − Y. This is paper B's data
    seen by paper A's algorithm: with η_t = 1/(t+1), WGA returns Σα_i ȳ_i exactly (spec §1.5(c)).
    Each step's samples can be read once only, so BC's fresh samples and large-batch init are refused.
    """

    data: np.ndarray
    means: np.ndarray
    single_draw = True

    def __post_init__(self) -> None:
        data = np.asarray(self.data, dtype=float)
        means = np.asarray(self.means, dtype=float).reshape(-1, 1)
        if data.ndim != 3 or data.shape[1] != means.shape[0]:
            raise ValueError(f"data must be [rep, task, n] with one mean per task, got {data.shape} and {means.shape}")
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "means", means)

    @property
    def num_tasks(self) -> int:
        return self.data.shape[1]

    @property
    def optimum(self) -> np.ndarray:
        return self.means

    def grads(self, x, t: int, batch: int, rng: np.random.Generator, per_sample: bool = False):
        if (t + 1) * batch > self.data.shape[2] or x.shape[0] != self.data.shape[0]:
            raise ValueError(f"stream data {self.data.shape} cannot serve step {t} with batch {batch} "
                             f"for {x.shape[0]} reps")
        y = self.data[:, None, :, t * batch:(t + 1) * batch, None]  # [rep, 1, task, sample, 1]
        g = x[:, :, None, None, :] - y
        return g if per_sample else g.mean(-2)


# ------------------------------------------------------------------------------------ configuration
@dataclass(frozen=True)
class BiasCorrection:
    """Bias correction (BC) options. The update form is *reconstructed* (spec §1.3 [R]), not the paper's:

        d_t = α g_own + (1−α)(ĝ + c_{t−1}),   c_t = (1−a)c_{t−1} + a(g_own − ĝ),   ĝ = Σ_j w_j g_j,

    an EMA (momentum) estimate c of the bias ∇f_own − Σw_j∇f_j added back to the collaborators' average
    (the AuxMOM pattern). ``alpha`` defaults to a (then d_t = ĝ + c_t). ``fresh_samples`` draws new
    samples for the c update; ``c_init_batch`` initialises c from one estimate with that batch size
    (None: c = 0); ``a_schedule="harmonic"`` uses a_t = a/(t+1) (a = 1: the running mean of all differences).
    """

    a: float
    alpha: float | None = None
    fresh_samples: bool = False
    c_init_batch: int | None = None
    a_schedule: Schedule = "constant"

    def __post_init__(self) -> None:
        if not 0.0 < self.a <= 1.0:
            raise ValueError(f"BiasCorrection a={self.a} must lie in (0, 1]")
        if self.alpha is not None and not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"BiasCorrection alpha={self.alpha} must lie in [0, 1]")
        if self.c_init_batch is not None and self.c_init_batch < 1:
            raise ValueError(f"BiasCorrection c_init_batch={self.c_init_batch} must be >= 1 or None")
        _check_schedule(self.a_schedule, "a_schedule")


@dataclass(frozen=True)
class EstimatedWeights:
    """WGA weights from the convex program of spec §1.2, re-solved from running estimates (a practical
    recipe, not the paper's): σ_i² from the per-sample gradient variance and ζ_i² from ‖ḡ_i − ḡ_own‖²
    minus its noise (s_i² + s_own²)/B, both at the current iterate and averaged over steps (running mean,
    or an EMA with rate ``memory``). ``horizon`` is T′ in Σα_i²σ_i²/T′ + (Σα_iζ_i)²; None assumes unit
    curvature: (2−η)/η for a constant step, the number of steps for η_t ∝ 1/(t+1). Needs batch >= 2.
    """

    horizon: float | None = None
    every: int = 1
    memory: float | None = None

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"EstimatedWeights every={self.every} must be >= 1")
        if self.memory is not None and not 0.0 < self.memory <= 1.0:
            raise ValueError(f"EstimatedWeights memory={self.memory} must lie in (0, 1]")
        if self.horizon is not None and self.horizon <= 0:
            raise ValueError(f"EstimatedWeights horizon={self.horizon} must be > 0")


@dataclass(frozen=True)
class SGDResult:
    """``errors[r, m, j]`` = ‖x − x*_{targets[m]}‖² of seed r after ``steps[j]`` updates; ``weights``
    are the weights of the last step ([rep, target, task]); ``x`` the final iterates."""

    steps: np.ndarray
    errors: np.ndarray
    x: np.ndarray
    weights: np.ndarray
    targets: np.ndarray

    def tail(self, frac: float = 0.25) -> np.ndarray:
        """Per-seed mean error over the last ``frac`` of the records ([rep, target]), the spec's metric."""
        if not 0.0 < frac <= 1.0:
            raise ValueError(f"frac={frac} must lie in (0, 1]")
        start = int(np.floor(len(self.steps) * (1.0 - frac)))
        return self.errors[:, :, start:].mean(-1)

    def stationary(self, frac: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
        """Mean tail error per target and its standard error across seeds."""
        return mean_se(self.tail(frac))


def mean_se(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean over independent replications (seeds) along ``axis`` and its Monte Carlo standard error s/√R."""
    values = np.asarray(values, float)
    return values.mean(axis), values.std(axis, ddof=1) / np.sqrt(values.shape[axis])


def wga_weights(n_tasks: int, targets=None, beta: float | None = None) -> np.ndarray:
    """Rows for WGA: uniform 1/K (beta None) or 1−β on the row's own task and β/(K−1) on the others."""
    if n_tasks < 2:
        raise ValueError(f"n_tasks={n_tasks} must be >= 2 (a target and at least one collaborator)")
    own = _targets(targets, n_tasks)
    if beta is None:
        return np.full((len(own), n_tasks), 1.0 / n_tasks)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta={beta} must lie in [0, 1]")
    w = np.full((len(own), n_tasks), beta / (n_tasks - 1))
    w[np.arange(len(own)), own] = 1.0 - beta
    return w


def bc_weights(n_tasks: int, targets=None) -> np.ndarray:
    """Collaborator weights for BC: 1/(K−1) on every task but the row's own (which gets 0)."""
    return wga_weights(n_tasks, targets, beta=1.0)


# -------------------------------------------------------------------------------------------- core
def collab_sgd(
    oracle,
    *,
    steps: int,
    eta: float,
    reps: int,
    seed: int,
    weights=None,
    targets=None,
    bc: BiasCorrection | None = None,
    batch: int = 1,
    schedule: Schedule = "constant",
    x0=None,
    record_every: int = 1,
) -> SGDResult:
    """Run WGA (``bc=None``) or bias correction for ``reps`` seeds and every target at once.

    ``weights``: None (WGA uniform 1/K; BC uniform over collaborators), a (M, K) row-stochastic matrix
    (a length-K vector for the single default target 0; for BC the own entry must be 0), or
    :class:`EstimatedWeights` (WGA only). ``targets``: task index per row (default (0,)), or "all".
    ``schedule``: η_t = η (constant) or η/(t+1) (harmonic). Randomness comes from
    ``np.random.default_rng(seed)`` only.
    """
    for name, value in (("steps", steps), ("reps", reps), ("batch", batch), ("record_every", record_every)):
        if value < 1:
            raise ValueError(f"{name}={value} must be >= 1")
    if eta <= 0:
        raise ValueError(f"eta={eta} must be > 0")
    _check_schedule(schedule, "schedule")
    k = oracle.num_tasks
    own = _targets(targets, k)
    m = len(own)
    rows = np.arange(m)
    estimated = isinstance(weights, EstimatedWeights)
    if estimated:
        if bc is not None:
            raise ValueError("weights=EstimatedWeights is for WGA only; pass bc=None")
        if batch < 2:
            raise ValueError(f"batch={batch}: EstimatedWeights needs batch >= 2 for per-sample variances")
        horizon = weights.horizon or ((2.0 - eta) / eta if schedule == "constant" else float(steps))
        estimator = _WeightEstimator(weights, horizon, own, (reps, m, k))
        w = np.eye(k)[own]  # replaced at step 0
    else:
        w = _weight_rows(weights, own, k, bc is not None)
    if bc is not None and oracle.single_draw and (bc.fresh_samples or bc.c_init_batch):
        raise ValueError("bc.fresh_samples / bc.c_init_batch need fresh draws; this oracle reads each step once")

    rng = np.random.default_rng(seed)
    opt = oracle.optimum[own]  # [target, d]
    x = np.broadcast_to(np.zeros_like(opt) if x0 is None else np.asarray(x0, float), (reps,) + opt.shape).copy()
    w_rep = np.broadcast_to(w, (reps, m, k)).copy()
    if bc is not None:
        c = np.zeros_like(x)
        if bc.c_init_batch:
            c = _bias_estimate(oracle.grads(x, 0, bc.c_init_batch, rng), w, own)

    errors = [np.sum((x - opt) ** 2, -1)]
    for t in range(steps):
        eta_t = _rate(eta, schedule, t)
        if estimated:
            per = oracle.grads(x, t, batch, rng, per_sample=True)
            g = per.mean(-2)
            w_rep = estimator.step(per, g, t)
            d = np.einsum("rmk,rmkd->rmd", w_rep, g)
        else:
            g = oracle.grads(x, t, batch, rng)
            if bc is None:
                d = np.einsum("mk,rmkd->rmd", w, g)
            else:
                a_t = _rate(bc.a, bc.a_schedule, t)
                alpha_t = a_t if bc.alpha is None else bc.alpha
                g_hat = np.einsum("mk,rmkd->rmd", w, g)
                d = alpha_t * g[:, rows, own] + (1.0 - alpha_t) * (g_hat + c)
                diff = _bias_estimate(oracle.grads(x, t, batch, rng), w, own) if bc.fresh_samples \
                    else g[:, rows, own] - g_hat
                c += a_t * (diff - c)
        x -= eta_t * d
        if (t + 1) % record_every == 0:
            errors.append(np.sum((x - opt) ** 2, -1))
    record_steps = np.r_[0, np.arange(record_every, steps + 1, record_every)]
    return SGDResult(record_steps, np.stack(errors, -1), x, w_rep, own)


class _WeightEstimator:
    """Running per-(rep, target, task) estimates of σ_i² and ζ_i², and the QP weights they imply."""

    def __init__(self, cfg: EstimatedWeights, horizon: float, own: np.ndarray, shape: tuple[int, int, int]):
        self.cfg, self.horizon, self.own = cfg, horizon, own
        self.rows = np.arange(len(own))
        self.s2 = np.zeros(shape)
        self.z = np.zeros(shape)
        self.weights = np.broadcast_to(np.eye(shape[2])[own], shape)

    def step(self, per: np.ndarray, g: np.ndarray, t: int) -> np.ndarray:
        """Fold in one step's per-sample gradients [rep, target, task, sample, d] (batch means ``g``);
        every ``cfg.every`` steps re-solve the QP with per-step variance σ̂_i²/B and ζ̂_i = √max(ẑ_i, 0)."""
        batch = per.shape[-2]
        s2 = per.var(-2, ddof=1).sum(-1)  # trace of the per-sample covariance
        s2_own = s2[:, self.rows, self.own]
        # ‖ḡ_i − ḡ_own‖² minus its noise (s_i² + s_own²)/B is unbiased for ζ_i² (independent tasks)
        z = np.sum((g - g[:, self.rows, self.own][:, :, None]) ** 2, -1) - (s2 + s2_own[..., None]) / batch
        z[:, self.rows, self.own] = 0.0
        mix = max(1.0 / (t + 1), self.cfg.memory or 0.0)
        self.s2 += mix * (s2 - self.s2)
        self.z += mix * (z - self.z)
        if t % self.cfg.every == 0:
            self.weights = optimal_weights(np.maximum(self.s2, 1e-12) / batch, np.sqrt(np.maximum(self.z, 0.0)),
                                           self.horizon)
        return self.weights


def _bias_estimate(g, w, own):
    """g_own − Σ_j w_j g_j per target: one sample of the bias ∇f_own − Σw_j∇f_j."""
    return g[:, np.arange(len(own)), own] - np.einsum("mk,rmkd->rmd", w, g)


def _weight_rows(weights, own, k: int, bias_correction: bool) -> np.ndarray:
    if weights is None:
        return bc_weights(k, own) if bias_correction else wga_weights(k, own)
    w = np.asarray(weights, dtype=float)
    if w.ndim == 1 and len(own) == 1:
        w = w[None, :]
    if w.shape != (len(own), k):
        raise ValueError(f"weights shape {w.shape} does not match {len(own)} targets x {k} tasks")
    if np.any(w < 0) or not np.allclose(w.sum(1), 1.0):
        raise ValueError(f"weights rows must be non-negative and sum to 1, got row sums {w.sum(1)}")
    if bias_correction and np.any(w[np.arange(len(own)), own] != 0):
        raise ValueError("weights for BC are collaborator weights: each row's own-task entry must be 0")
    return w


def _targets(targets, k: int) -> np.ndarray:
    if targets is None:
        return np.array([0])
    if isinstance(targets, str):
        if targets != "all":
            raise ValueError(f"targets={targets!r}: use a sequence of task indices or 'all'")
        return np.arange(k)
    own = np.asarray(targets, dtype=int)
    if own.ndim != 1 or len(own) == 0 or np.any((own < 0) | (own >= k)):
        raise ValueError(f"targets={targets!r} must be task indices in [0, {k})")
    return own


def _per_task(value, k: int, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != k):
        raise ValueError(f"{name} must be a scalar or have {k} entries, got shape {arr.shape}")
    return np.broadcast_to(arr, (k,)).copy()


def _rate(base: float, schedule: str, t: int) -> float:
    return base if schedule == "constant" else base / (t + 1)


def _check_schedule(schedule: str, name: str) -> None:
    if schedule not in SCHEDULES:
        raise ValueError(f"{name}={schedule!r} is not one of {SCHEDULES}")
