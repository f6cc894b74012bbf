"""Monte Carlo of optimal model averaging (1−α)·L + α·G for scalar mean estimation (paper B, spec §2).

One target agent holds n_0 samples with mean μ_0; the others hold n_O samples in total with mean μ_0 + Δ.
L is the local mean, O the others' mean, and the global model G is either pooled (the mean over all
samples, G = w_0 L + (1−w_0) O) or independent (G = O). Families: Gaussian, Bernoulli and Student-t
(ν > 2, rescaled to the requested standard deviation), to show the "minimal assumptions" claim: the
relative benefit collapses onto the parabola 1 − (1 − α/α*)² for every distribution (spec §2.4).
Everything is vectorised over replications; sufficient statistics are drawn exactly where the family
allows it (Gaussian mean and χ² sample variance, Bernoulli counts), so 10⁵–10⁶ replications take a second.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pcl.theory import averaging

__all__ = ["FAMILIES", "Family", "AveragingDraws", "simulate", "mc_mse", "mse_curve", "estimation_table"]

FAMILIES = ("gaussian", "bernoulli", "student_t")


@dataclass(frozen=True)
class Family:
    """A data distribution given by its mean: ``std`` scales Gaussian and Student-t data (Bernoulli's is
    implied by its mean, so it must be left as None); ``df`` is Student-t's ν."""

    name: str = "gaussian"
    std: float | None = None
    df: float = 5.0

    def __post_init__(self) -> None:
        if self.name not in FAMILIES:
            raise ValueError(f"family name={self.name!r} is not one of {FAMILIES}")
        if self.name == "bernoulli" and self.std is not None:
            raise ValueError(f"family bernoulli: std={self.std} is implied by the mean; leave it None")
        if self.std is not None and self.std <= 0:
            raise ValueError(f"family {self.name}: std={self.std} must be > 0")
        if self.name == "student_t" and self.df <= 2:
            raise ValueError(f"family student_t: df={self.df} must be > 2 (finite variance)")

    def variance(self, mean: float) -> float:
        if self.name == "bernoulli":
            _check_probability(mean)
            return mean * (1.0 - mean)
        return 1.0 if self.std is None else self.std**2

    def sample(self, rng: np.random.Generator, mean: float, size) -> np.ndarray:
        """Raw i.i.d. samples (float64), e.g. per-task data streams for the WGA bridge (spec §1.5(c))."""
        if self.name == "bernoulli":
            _check_probability(mean)
            return (rng.random(size) < mean).astype(float)
        std = np.sqrt(self.variance(mean))
        if self.name == "gaussian":
            return mean + std * rng.standard_normal(size)
        return mean + std * np.sqrt((self.df - 2.0) / self.df) * rng.standard_t(self.df, size)

    def mean_and_var(self, rng: np.random.Generator, mean: float, n: int, reps: int):
        """Sample mean and unbiased sample variance of n samples, for ``reps`` replications."""
        if n < 2:
            raise ValueError(f"n={n} samples cannot give a sample variance; need n >= 2")
        if self.name == "gaussian":
            var = self.variance(mean)
            return (mean + np.sqrt(var / n) * rng.standard_normal(reps),
                    var * rng.chisquare(n - 1, reps) / (n - 1))
        if self.name == "bernoulli":
            _check_probability(mean)
            p_hat = rng.binomial(n, mean, reps) / n
            return p_hat, p_hat * (1.0 - p_hat) * n / (n - 1)
        x = self.sample(rng, mean, (reps, n))
        return x.mean(1), x.var(1, ddof=1)


@dataclass(frozen=True)
class AveragingDraws:
    """Replications of (L, O) and their sample variances, plus the truth needed by the closed forms."""

    local: np.ndarray
    others: np.ndarray
    s2_local: np.ndarray
    s2_others: np.ndarray
    n_local: int
    n_others: int
    mu0: float
    var_local: float  # σ_L² = Var(one local sample)/n_0
    var_others: float  # σ_O²
    delta: float
    pooled: bool

    @property
    def w0(self) -> float:
        return self.n_local / (self.n_local + self.n_others) if self.pooled else 0.0

    @property
    def global_model(self) -> np.ndarray:
        return self.w0 * self.local + (1.0 - self.w0) * self.others

    @property
    def alpha_star(self) -> float:
        """Closed-form α* (pooled or independent, spec §2.2)."""
        if self.pooled:
            return float(averaging.alpha_star_pooled(self.var_local, self.var_others, self.delta, self.w0))
        return float(averaging.alpha_star_independent(self.var_local, self.var_others, self.delta))

    def theory_mse(self, alpha) -> np.ndarray:
        a_star = self.alpha_star
        if self.pooled:
            return self.var_local * averaging.mse_ratio_pooled(alpha, a_star, self.w0)
        return self.var_local * averaging.mse_ratio_independent(alpha, a_star)

    def plugin_alpha(self) -> np.ndarray:
        return averaging.plugin_alpha(self.local, self.others, self.s2_local, self.s2_others,
                                      self.n_local, self.n_others, pooled=self.pooled)


def simulate(family: Family, *, delta: float, n_local: int, n_others: int, reps: int, seed: int,
             mu0: float = 0.0, pooled: bool = True) -> AveragingDraws:
    """Draw ``reps`` independent data sets: n_local target samples (mean mu0), n_others with mean mu0 + delta."""
    if reps < 1:
        raise ValueError(f"reps={reps} must be >= 1")
    rng = np.random.default_rng(seed)
    local, s2_local = family.mean_and_var(rng, mu0, n_local, reps)
    others, s2_others = family.mean_and_var(rng, mu0 + delta, n_others, reps)
    return AveragingDraws(local, others, s2_local, s2_others, n_local, n_others, mu0,
                          family.variance(mu0) / n_local, family.variance(mu0 + delta) / n_others,
                          delta, pooled)


def mc_mse(draws: AveragingDraws, alpha) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo MSE of (1−α)L + αG and its standard error; α is a scalar, an array of weights,
    or one weight per replication (e.g. the plug-in α̂)."""
    alpha = np.asarray(alpha, float)
    per_rep = alpha.ndim == 1 and alpha.shape[0] == draws.local.shape[0]
    a = alpha[None, :] if per_rep else alpha.reshape(-1, 1)
    sq = ((1.0 - a) * draws.local + a * draws.global_model - draws.mu0) ** 2
    shape = () if per_rep or alpha.ndim == 0 else alpha.shape
    n = sq.shape[1]
    return sq.mean(1).reshape(shape), (sq.std(1, ddof=1) / np.sqrt(n)).reshape(shape)


def mse_curve(draws: AveragingDraws, ratios) -> pd.DataFrame:
    """MSE and relative benefit vs α/α*, Monte Carlo (with standard errors) beside the closed forms (spec §2.4)."""
    ratios = np.asarray(ratios, float)
    a_star = draws.alpha_star
    alphas = ratios * a_star
    mc, se = mc_mse(draws, alphas)
    return pd.DataFrame({
        "ratio": ratios, "alpha": alphas, "mse_mc": mc, "mse_se": se, "mse_theory": draws.theory_mse(alphas),
        **dict(zip(("benefit_mc", "benefit_se"), _benefit(draws, alphas))),
        "benefit_theory": averaging.relative_benefit(alphas, a_star),
    })


def _benefit(draws: AveragingDraws, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo relative benefit ū/v̄, u = sq_L − sq_α and v = sq_L − sq_α* per replication, and its
    delta-method standard error (paired on the same draws, so most of the noise cancels)."""
    def sq(a):
        return ((1.0 - a) * draws.local + a * draws.global_model - draws.mu0) ** 2

    base = sq(0.0)
    v = base - sq(draws.alpha_star)
    benefit, se = [], []
    for a in alphas:
        u = base - sq(a)
        ratio = u.mean() / v.mean()
        benefit.append(ratio)
        se.append(np.std(u - ratio * v, ddof=1) / np.sqrt(len(u)) / abs(v.mean()))
    return np.array(benefit), np.array(se)


def estimation_table(family: Family, deltas, *, n_local: int, n_others: int, reps: int, seed: int,
                     pooled: bool = True) -> pd.DataFrame:
    """Local vs global vs oracle α* vs plug-in α̂ across the shift Δ (spec §2.3 table), with MC standard
    errors and the share of replications where α̂ falls outside (0, 2α*), i.e. where it hurts."""
    rows = []
    for i, delta in enumerate(deltas):
        draws = simulate(family, delta=delta, n_local=n_local, n_others=n_others, reps=reps,
                         seed=seed + i, pooled=pooled)
        a_star = draws.alpha_star
        a_hat = draws.plugin_alpha()
        row = {"delta": delta, "alpha_star": a_star}
        for name, alpha in (("local", 0.0), ("global", 1.0), ("oracle", min(a_star, 1.0)), ("plugin", a_hat)):
            row[name], row[f"{name}_se"] = (float(v) for v in mc_mse(draws, alpha))
        row["plugin_outside"] = float(np.mean((a_hat <= 0) | (a_hat >= 2 * a_star)))
        rows.append(row)
    return pd.DataFrame(rows)


def _check_probability(mean: float) -> None:
    if not 0.0 < mean < 1.0:
        raise ValueError(f"bernoulli mean={mean} must lie in (0, 1)")
