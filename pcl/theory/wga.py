"""Closed forms for weighted gradient averaging (WGA) and bias correction (BC) on quadratics.

Paper A: Chayti, Karimireddy, Stich, Flammarion, Jaggi, *Linear Speedup in Personalized Collaborative
Learning* (arXiv 2111.05968); specification in ``docs/papers/wga-bias-correction.md`` (§1.2, §1.3, §1.5).
Everything here is *derived* ([D]) for the model the spec uses as its oracle:

    f_i(x) = (h_i/2)·‖x − b_i‖²,   stochastic gradient h_i(x − b_i) + σ_i·ξ,   ξ ~ N(0, I_d) i.i.d.,

task 0 is the target and tasks 1..N are the collaborators (arrays over tasks have length K = N + 1).
Errors are E‖x − b_0‖² summed over the d coordinates. The BC update form is *reconstructed* ([R]).
"""
from __future__ import annotations

import numpy as np
from scipy.linalg import solve_discrete_lyapunov

__all__ = [
    "uniform_weights",
    "beta_weights",
    "constant_step_variance",
    "wga_stationary_error",
    "wga_harmonic_error",
    "bc_stationary_error",
    "bc_error_approx",
    "beta_star",
    "qp_objective",
    "optimal_weights",
]


def uniform_weights(n_collab: int) -> np.ndarray:
    """α_i = 1/(N+1) on the target and every collaborator (plain gradient averaging)."""
    _check_n(n_collab)
    return np.full(n_collab + 1, 1.0 / (n_collab + 1))


def beta_weights(beta: float, n_collab: int) -> np.ndarray:
    """The spec's one-parameter family: 1−β on the target, β/N on each collaborator."""
    _check_n(n_collab)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta={beta} must lie in [0, 1]")
    return np.concatenate([[1.0 - beta], np.full(n_collab, beta / n_collab)])


def constant_step_variance(eta: float, sigma: float = 1.0, h: float = 1.0) -> float:
    """Stationary variance ησ²/(h(2−ηh)) of constant-step SGD alone on one scalar quadratic.

    This is the "alone" error of table (a) and the constant c of the β* closed form.
    """
    _check_step(eta, h, "h")
    return eta * sigma**2 / (h * (2.0 - eta * h))


def wga_stationary_error(alpha, b, *, eta: float, sigma=1.0, h=1.0) -> float:
    """Stationary E‖x − b_0‖² of WGA with constant step η (spec §1.5(a), general h_i).

    The mean dynamics contract with H = Σα_i h_i towards x̄ = Σα_i h_i b_i / H, and the noise
    −ηΣα_iσ_iξ_i is i.i.d., so the error is ‖x̄ − b_0‖² + d·ησ_α²/(H(2 − ηH)) with σ_α² = Σα_i²σ_i².
    For h_i = h this is the spec's (Σα_i(b_i − b_0))² + ησ²Σα_i²/(h(2 − ηh)).
    ``b`` has shape (K,) (scalar tasks) or (K, d); ``sigma`` and ``h`` are scalars or length K.
    """
    alpha, b, sigma, h = _tasks(alpha, b, sigma, h)
    big_h = float(alpha @ h)
    _check_step(eta, big_h, "Σα_i h_i")
    mean = (alpha * h) @ b / big_h
    var = eta * float(alpha**2 @ sigma**2) / (big_h * (2.0 - eta * big_h))
    return float(np.sum((mean - b[0]) ** 2) + b.shape[1] * var)


def wga_harmonic_error(alpha, b, *, steps: int, sigma=1.0) -> float:
    """E‖x_T − b_0‖² of WGA with η_t = 1/(t+1) and h_i = 1 (spec §1.5(c), the exact bridge).

    Then x_T = Σα_i ȳ_i(T) (weighted average of per-task sample means), hence
    ‖Σα_i(b_i − b_0)‖² + d·Σα_i²σ_i²/T.
    """
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    alpha, b, sigma, _ = _tasks(alpha, b, sigma, 1.0)
    bias = alpha @ (b - b[0])
    return float(np.sum(bias**2) + b.shape[1] * float(alpha**2 @ sigma**2) / steps)


def bc_stationary_error(
    eta: float,
    a: float,
    n_collab: int,
    *,
    alpha: float | None = None,
    sigma=1.0,
    h=1.0,
    w=None,
    fresh_samples: bool = False,
    dim: int = 1,
) -> float:
    """Stationary E‖x − b_0‖² of bias correction (BC) with constant η and EMA rate a (spec §1.5(b)).

    The BC update is *reconstructed* (spec §1.3 [R]): with ĝ = Σ_{i≥1} w_i g_i,
    d_t = α g_0 + (1−α)(ĝ + c_{t−1}),  c_t = (1−a)c_{t−1} + a(g_0 − ĝ),  x_{t+1} = x_t − η d_t.
    Its fixed point is x = b_0 for any b_i, h_i (no bias floor), so the error is the stationary
    variance of the linear state s_t = (x_t − b_0, c_{t−1} − c*), s_{t+1} = A s_t + B ε_t, from the
    discrete Lyapunov equation P = A P Aᵀ + B W Bᵀ. With h_i = 1 this is the spec's A, B, W.
    ``sigma`` and ``h`` are scalars or length N+1 (index 0 = target); ``w`` defaults to 1/N;
    ``alpha`` defaults to a; ``fresh_samples`` draws independent samples for the c update.
    """
    _check_n(n_collab)
    if not 0.0 < a <= 1.0:
        raise ValueError(f"a={a} must lie in (0, 1]")
    alpha = a if alpha is None else alpha
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must lie in [0, 1]")
    k = n_collab + 1
    sigma = _per_task(sigma, k, "sigma")
    h = _per_task(h, k, "h")
    w = np.full(n_collab, 1.0 / n_collab) if w is None else _simplex(w, n_collab, "w")
    h_bar = float(w @ h[1:])
    noise = np.array([sigma[0] ** 2, float(w**2 @ sigma[1:] ** 2)])  # Var g_0, Var ĝ
    A = np.array(
        [[1.0 - eta * (alpha * h[0] + (1.0 - alpha) * h_bar), -eta * (1.0 - alpha)],
         [a * (h[0] - h_bar), 1.0 - a]]
    )
    radius = max(abs(np.linalg.eigvals(A)))
    if radius >= 1.0:
        raise ValueError(f"BC with eta={eta}, a={a}, alpha={alpha} is unstable (spectral radius {radius:.4f})")
    step = np.array([[-eta * alpha, -eta * (1.0 - alpha)], [0.0, 0.0]])
    ema = np.array([[0.0, 0.0], [a, -a]])
    if fresh_samples:
        B, W = np.hstack([step, ema]), np.diag(np.tile(noise, 2))
    else:
        B, W = step + ema, np.diag(noise)
    P = solve_discrete_lyapunov(A, B @ W @ B.T)
    return float(dim * P[0, 0])


def bc_error_approx(eta: float, a: float, n_collab: int, sigma: float = 1.0) -> float:
    """The spec's small-a approximation of BC's error, (σ²/2)(η/N + a(1 + 1/N)) (§1.5(b)).

    η/N is SGD on the collaborators' average; a(1+1/N) the EMA noise of the bias estimate.
    """
    _check_n(n_collab)
    return 0.5 * sigma**2 * (eta / n_collab + a * (1.0 + 1.0 / n_collab))


def beta_star(zeta: float, n_collab: int, c: float) -> float:
    """Optimal β of the one-parameter family on the scalar quadratic: c / (ζ² + c(1 + 1/N)) (§1.2).

    The error of β is β²ζ² + c((1−β)² + β²/N), where c is the variance of the local-only estimate:
    c = ησ²/(2−η) for a constant step (:func:`constant_step_variance`), c = σ²/T for η_t = 1/(t+1).
    """
    _check_n(n_collab)
    if c <= 0:
        raise ValueError(f"c={c} must be > 0")
    return c / (zeta**2 + c * (1.0 + 1.0 / n_collab))


def qp_objective(alpha, sigma2, zeta, horizon) -> np.ndarray:
    """Σα_i²σ_i²/T′ + (Σα_iζ_i)², the WGA error bound the optimal weights minimise (§1.2)."""
    alpha, sigma2, zeta = np.broadcast_arrays(alpha, sigma2, zeta)
    horizon = np.asarray(horizon, dtype=float)
    return np.sum(alpha**2 * sigma2, -1) / horizon + np.sum(alpha * zeta, -1) ** 2


def optimal_weights(sigma2, zeta, horizon) -> np.ndarray:
    """Minimise :func:`qp_objective` over the simplex, exactly and vectorised over leading axes.

    KKT (§1.2): α_i = (T′/σ_i²)(μ − sζ_i)₊ with s = Σα_jζ_j, so the support is the set of tasks with
    the smallest ζ. For each prefix of tasks sorted by ζ the equalities Σα = 1, s = Σαζ are a 2×2
    linear system (never singular, by Cauchy–Schwarz); every non-negative candidate is feasible, so
    the cheapest one is the optimum. ``sigma2`` (> 0) and ``zeta`` (≥ 0) have tasks on the last axis;
    ``horizon`` (T′ > 0) broadcasts over the leading axes.
    """
    sigma2, zeta = np.broadcast_arrays(np.asarray(sigma2, float), np.asarray(zeta, float))
    horizon = np.asarray(horizon, dtype=float)[..., None]
    if np.any(~(sigma2 > 0)):
        raise ValueError("sigma2 must be > 0 for every task")
    if np.any(~(zeta >= 0)):
        raise ValueError("zeta must be >= 0 for every task")
    if np.any(~(horizon > 0)):
        raise ValueError("horizon must be > 0")
    order = np.argsort(zeta, axis=-1, kind="stable")
    z = np.take_along_axis(zeta, order, -1)
    s2 = np.take_along_axis(sigma2, order, -1)
    inv = horizon / s2
    A, B, C = (np.cumsum(inv * z**p, -1) for p in (0, 1, 2))  # prefix sums: candidate k keeps tasks 0..k
    mu = (1.0 + C) / (A * (1.0 + C) - B**2)
    s = B * mu / (1.0 + C)
    k = z.shape[-1]
    support = np.tril(np.ones((k, k), dtype=bool))  # [candidate, task]
    cand = np.where(support, inv[..., None, :] * (mu[..., :, None] - s[..., :, None] * z[..., None, :]), 0.0)
    cost = qp_objective(cand, s2[..., None, :], z[..., None, :], horizon)
    cost = np.where(np.all(cand >= -1e-12, -1), cost, np.inf)
    best = np.take_along_axis(cand, np.argmin(cost, -1)[..., None, None], -2)[..., 0, :]
    out = np.empty_like(best)
    np.put_along_axis(out, order, np.clip(best, 0.0, None), -1)
    return out / out.sum(-1, keepdims=True)


def _tasks(alpha, b, sigma, h):
    b = np.asarray(b, dtype=float)
    b = b[:, None] if b.ndim == 1 else b
    if b.ndim != 2:
        raise ValueError(f"b must have shape (K,) or (K, d), got {b.shape}")
    k = b.shape[0]
    return _simplex(alpha, k, "alpha"), b, _per_task(sigma, k, "sigma"), _per_task(h, k, "h")


def _per_task(value, k: int, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != k):
        raise ValueError(f"{name} must be a scalar or have one entry per task ({k}), got shape {arr.shape}")
    return np.broadcast_to(arr, (k,))


def _simplex(weights, k: int, name: str) -> np.ndarray:
    weights = np.asarray(weights, dtype=float)
    if weights.shape != (k,) or np.any(weights < 0) or not np.isclose(weights.sum(), 1.0):
        raise ValueError(f"{name} must be {k} non-negative weights summing to 1, got {weights}")
    return weights


def _check_n(n_collab: int) -> None:
    if n_collab < 1:
        raise ValueError(f"n_collab={n_collab} must be >= 1")


def _check_step(eta: float, curvature: float, name: str) -> None:
    if not 0.0 < eta * curvature < 2.0:
        raise ValueError(f"eta={eta} is unstable: eta*{name} = {eta * curvature} must lie in (0, 2)")
