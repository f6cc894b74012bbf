"""The Monte Carlo standard errors of pcl.sim against the spread of their estimates over independent replications.

Every closed-form-vs-Monte-Carlo claim is judged within max(relative tolerance, 4 SE) (pcl.sim.experiments), so an
inflated SE would let any error pass. Here each estimator is recomputed on M independent data sets (different
seeds): if its reported SE is right, the sample variance of the M estimates is σ² = E[SE²] up to the χ²_{M−1}/(M−1)
spread (the estimates are means of ≥ 10³ replications: normal). The test accepts the ratio var/mean(SE²) inside the
two-sided 10⁻⁴ band of that distribution, [0.37, 2.07] for M = 40, so a 2× error of the SE either way (ratio 4 or
1/4) fails it.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chi2

from pcl.sim.collab_sgd import BiasCorrection, QuadraticOracle, collab_sgd, mean_se
from pcl.sim.mean_estimation import Family, mc_mse, mse_curve, simulate

M = 40  # independent replications of each estimator
BAND = chi2.ppf([1e-4, 1 - 1e-4], M - 1) / (M - 1)


def assert_se_matches_spread(estimates, ses):
    """``estimates`` and ``ses`` are [M, ...]: per replication, the estimates and their reported standard errors."""
    estimates, ses = np.asarray(estimates, float), np.asarray(ses, float)
    assert estimates.shape[0] == M and ses.shape == estimates.shape
    ratio = estimates.var(0, ddof=1) / np.mean(ses**2, 0)
    assert np.all((BAND[0] <= ratio) & (ratio <= BAND[1])), (ratio, BAND)


def test_the_band_rejects_a_factor_two():
    assert BAND[0] > 1 / 4 and BAND[1] < 4


@pytest.mark.parametrize("family, mu0, delta", [(Family("gaussian"), 0.0, 0.3), (Family("bernoulli"), 0.5, 0.15)])
def test_mc_mse_standard_error(family, mu0, delta):
    """mc_mse at fixed weights (the averaging curve, the local/global/oracle columns) and at one weight per
    replication (the plug-in α̂ of the estimation table)."""
    alphas = np.array([0.0, 0.5, 1.0, 2.0])
    est, se = [], []
    for seed in range(M):
        draws = simulate(family, delta=delta, n_local=10, n_others=90, reps=2000, seed=seed, mu0=mu0)
        fixed, plugin = mc_mse(draws, alphas * draws.alpha_star), mc_mse(draws, draws.plugin_alpha())
        est.append(np.r_[fixed[0], plugin[0]])
        se.append(np.r_[fixed[1], plugin[1]])
    assert_se_matches_spread(est, se)


def test_relative_benefit_standard_error():
    """The delta-method SE of the relative benefit ū/v̄ (the 'universal parabola' claim's tolerance). At α = α* the
    benefit is 1 by construction (no spread, SE 0), so only the other ratios are judged."""
    ratios = [0.5, 1.5, 2.5]
    est, se = [], []
    for seed in range(M):
        draws = simulate(Family("student_t", std=1.0, df=5.0), delta=0.3, n_local=10, n_others=90, reps=2000,
                         seed=seed)
        curve = mse_curve(draws, ratios)
        est.append(curve.benefit_mc.to_numpy())
        se.append(curve.benefit_se.to_numpy())
    assert_se_matches_spread(est, se)


def test_stationary_standard_error_across_seeds():
    """SGDResult.stationary (the speedup study) for WGA and for BC, whose EMA makes the tail errors of one seed
    strongly correlated in time: the SE is taken across seeds, which are independent, so it stays right."""
    oracle = QuadraticOracle.shifted(3, 0.5)
    kw = dict(steps=400, eta=0.1, reps=30, record_every=2)
    est, se = [], []
    for seed in range(M):
        wga = collab_sgd(oracle, seed=seed, **kw).stationary(0.5)
        bc = collab_sgd(oracle, seed=10_000 + seed, bc=BiasCorrection(0.05, c_init_batch=100), **kw).stationary(0.5)
        est.append([wga[0][0], bc[0][0]])
        se.append([wga[1][0], bc[1][0]])
    assert_se_matches_spread(est, se)


def test_mean_se_over_replications():
    """mean_se, the horizon study's per-T error and SE: the error of x_T at several T under η_t = 1/(t+1)."""
    oracle = QuadraticOracle.shifted(7, 0.1)
    est, se = [], []
    for seed in range(M):
        res = collab_sgd(oracle, steps=64, eta=1.0, schedule="harmonic", reps=200, seed=seed)
        mean, err = mean_se(res.errors[:, 0, [4, 16, 64]])
        est.append(mean)
        se.append(err)
    assert_se_matches_spread(est, se)
