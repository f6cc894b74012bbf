"""Closed forms for optimal weighted model averaging θ_α = (1−α)·L + α·G (scalar mean estimation).

Paper B: Grimberg, Hartley, Karimireddy, Jaggi, *Optimal Model Averaging: Towards Personalized
Collaborative Learning* (arXiv 2110.12946); specification in ``docs/papers/optimal-model-averaging.md``.
Notation is the spec's (α = weight on the global model); the forms are derived ([D]) and need only
finite second moments. L is the local mean over n_0 samples (unbiased, variance σ_L²); G is the global
model, either independent of L or pooled, G = w_0·L + (1−w_0)·O with O the others' mean.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "alpha_star",
    "mse",
    "relative_benefit",
    "alpha_star_independent",
    "mse_ratio_independent",
    "alpha_star_pooled",
    "mse_ratio_pooled",
    "plugin_alpha",
]


def alpha_star(cross, gap):
    """α* = E[(L−μ_0)(L−G)] / E[(L−G)²], the minimiser of the quadratic MSE(α) (§2.2)."""
    cross, gap = np.asarray(cross, float), np.asarray(gap, float)
    if np.any(gap <= 0):
        raise ValueError(f"gap=E[(L-G)^2] must be > 0, got {gap}")
    return cross / gap


def mse(alpha, mse_local, cross, gap):
    """MSE(α) = MSE_L − 2α·E[(L−μ_0)(L−G)] + α²·E[(L−G)²] (§2.2)."""
    alpha = np.asarray(alpha, float)
    return mse_local - 2.0 * alpha * cross + alpha**2 * gap


def relative_benefit(alpha, a_star):
    """(MSE_L − MSE(α)) / (MSE_L − MSE(α*)) = 1 − (1 − α/α*)²: the same parabola for every distribution.

    Positive iff 0 < α < 2α*, 1 at α*, negative beyond 2α* (the "possibly negative benefit").
    """
    a_star = np.asarray(a_star, float)
    if np.any(a_star <= 0):
        raise ValueError(f"a_star={a_star} must be > 0")
    return 1.0 - (1.0 - np.asarray(alpha, float) / a_star) ** 2


def alpha_star_independent(var_local, var_global, bias):
    """α* = σ_L² / (σ_L² + σ_G² + β²) for G independent of L with bias β = E[G] − μ_0.

    It lies in (0, 1] whenever σ_L² > 0: the abstract's "always some positive amount of averaging".
    """
    var_local, var_global = _variances(var_local=var_local, var_global=var_global)
    return var_local / (var_local + var_global + np.asarray(bias, float) ** 2)


def mse_ratio_independent(alpha, a_star):
    """MSE(α)/MSE_L = 1 − 2α + α²/α* for an independent global model; MSE(α*)/MSE_L = 1 − α*."""
    alpha = np.asarray(alpha, float)
    return 1.0 - 2.0 * alpha + alpha**2 / a_star


def alpha_star_pooled(var_local, var_others, delta, w0):
    """α* = σ_L² / ((1−w_0)(σ_L² + σ_O² + Δ²)) for G = w_0 L + (1−w_0) O, Δ = E[O] − μ_0.

    May reach or exceed 1 (homogeneous case); clip to [0, 1] where a method restricts α.
    """
    var_local, var_others = _variances(var_local=var_local, var_others=var_others)
    w0 = _w0(w0)
    return var_local / ((1.0 - w0) * (var_local + var_others + np.asarray(delta, float) ** 2))


def mse_ratio_pooled(alpha, a_star, w0):
    """MSE(α)/MSE_L = 1 − (1−w_0)(2α − α²/α*) for the pooled global model."""
    alpha = np.asarray(alpha, float)
    return 1.0 - (1.0 - _w0(w0)) * (2.0 * alpha - alpha**2 / a_star)


def plugin_alpha(local, others, s2_local, s2_others, n_local: int, n_others: int, *, pooled: bool = True):
    """Plug-in estimate α̂ of α* from one data set (§2.3; the paper's own estimator is not known).

    σ̂_L² = s_0²/n_0, σ̂_O² = s_O²/n_O; the single draw (L − O)² estimates E[(L − O)²] = σ_L² + σ_O² + Δ²
    and is floored at σ̂_L² + σ̂_O²; α̂ = clip(σ̂_L² / ((1−w_0)·max((L−O)², σ̂_L²+σ̂_O²)), 0, 1), with
    w_0 = n_0/(n_0 + n_O) for the pooled global model and 0 for an independent one.
    """
    if n_local < 1 or n_others < 1:
        raise ValueError(f"n_local={n_local} and n_others={n_others} must be >= 1")
    var_l = np.asarray(s2_local, float) / n_local
    var_o = np.asarray(s2_others, float) / n_others
    w0 = n_local / (n_local + n_others) if pooled else 0.0
    gap = np.maximum((np.asarray(local, float) - np.asarray(others, float)) ** 2, var_l + var_o)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(gap > 0, var_l / ((1.0 - w0) * gap), 0.0)
    return np.clip(ratio, 0.0, 1.0)


def _variances(**named):
    out = []
    for name, value in named.items():
        value = np.asarray(value, float)
        if np.any(value < 0):
            raise ValueError(f"{name}={value} must be >= 0")
        out.append(value)
    return out


def _w0(w0):
    w0 = np.asarray(w0, float)
    if np.any((w0 < 0) | (w0 >= 1)):
        raise ValueError(f"w0={w0} must lie in [0, 1)")
    return w0
