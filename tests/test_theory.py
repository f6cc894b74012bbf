"""Closed forms of pcl.theory against the spec tables and against Monte Carlo from pcl.sim.

Specs: docs/papers/wga-bias-correction.md (§1.5) and docs/papers/optimal-model-averaging.md (§2.3-2.4).
Tolerances follow spec §4.3: ≤3% for stationary errors at ≥300 seeds, ≤1% for the averaging curve at
≥10⁵ replications, log-log slopes −1 ± 0.1 (linear speedup) and |slope| < 0.1 (bias plateau).
"""
import numpy as np
import pytest
from scipy.optimize import minimize

from pcl.sim.collab_sgd import (BiasCorrection, EstimatedWeights, LinearRegressionOracle, QuadraticOracle,
                                StreamOracle, bc_weights, collab_sgd, wga_weights)
from pcl.sim.mean_estimation import Family, estimation_table, mse_curve, simulate
from pcl.theory import averaging as av
from pcl.theory import wga

ETA = 0.05
NS = [1, 3, 7, 15, 31]


def slope(x, y):
    return np.polyfit(np.log(x), np.log(y), 1)[0]


def rel_err(measured, theory):
    return abs(measured / theory - 1.0)


# ------------------------------------------------------------------------------- spec tables (exact)
TABLE_A = {  # spec §1.5(a), η = 0.05, uniform α = 1/(N+1)
    "local": [0.02564] * 5,
    0.0: [0.01282, 0.00641, 0.00321, 0.00160, 0.00080],
    0.3: [0.03532, 0.05704, 0.07211, 0.08070, 0.08526],
}
TABLE_B = {  # spec §1.5(b), BC with α = a
    "eta/(N+1)": ([0.02521, 0.01183, 0.00604, 0.00308, 0.00156], lambda n: ETA / (n + 1)),
    "1/(N+1)": ([0.02483, 0.02277, 0.01944, 0.01501, 0.0103], lambda n: 1.0 / (n + 1)),
    "0.002": ([0.02559, 0.00917, 0.00448, 0.00261, 0.00176], lambda n: 0.002),
}


def test_wga_table_a():
    for i, n in enumerate(NS):
        assert round(wga.constant_step_variance(ETA), 5) == TABLE_A["local"][i]
        for zeta in (0.0, 0.3):
            b = np.r_[0.0, np.full(n, zeta)]
            assert round(wga.wga_stationary_error(wga.uniform_weights(n), b, eta=ETA), 5) == TABLE_A[zeta][i]


@pytest.mark.parametrize("row", list(TABLE_B))
def test_bc_table_b(row):
    values, a_of = TABLE_B[row]
    for n, expected in zip(NS, values):
        digits = len(repr(expected).split(".")[1])
        assert round(wga.bc_stationary_error(ETA, a_of(n), n), digits) == expected


def bc_second_moment_direct(eta, a, b, h, sigma, alpha=None):
    """E(x − b_0)² of BC at stationarity, evaluated from the update rule alone (independent of pcl.theory's Lyapunov
    form): the state s = (x, c) of d = α g_0 + (1−α)(ĝ + c), c ← (1−a)c + a(g_0 − ĝ), x ← x − ηd with
    g_i = h_i(x − b_i) + σ_i ε_i and ĝ the uniform collaborator average, is affine, s' = A s + m + G ε. The
    stationary mean solves (I − A) s̄ = m; the covariance Σ_k A^k G Gᵀ (A^k)ᵀ is summed by doubling (2⁶⁰ terms)."""
    alpha = a if alpha is None else alpha
    b, h, sigma = (np.asarray(v, float) for v in (b, h, sigma))
    w = np.full(len(b) - 1, 1.0 / (len(b) - 1))
    hbar, hb = w @ h[1:], w @ (h[1:] * b[1:])
    # coefficients of (x, c), the constant and the noises (ε_0, ε̂) in g_0 and in ĝ
    g0 = (np.array([h[0], 0.0]), -h[0] * b[0], np.array([sigma[0], 0.0]))
    gh = (np.array([hbar, 0.0]), -hb, np.array([0.0, np.sqrt(w**2 @ sigma[1:] ** 2)]))
    d = [alpha * u + (1 - alpha) * v for u, v in zip(g0, gh)]
    d[0] = d[0] + (1 - alpha) * np.array([0.0, 1.0])
    x_row = [np.array([1.0, 0.0]) - eta * d[0], -eta * d[1], -eta * d[2]]
    c_row = [np.array([0.0, 1 - a]) + a * (g0[0] - gh[0]), a * (g0[1] - gh[1]), a * (g0[2] - gh[2])]
    A, m, G = (np.array([x, c]) for x, c in zip(x_row, c_row))
    mean = np.linalg.solve(np.eye(2) - A, m)
    P, Ak = G @ G.T, A
    for _ in range(60):
        P, Ak = P + Ak @ P @ Ak.T, Ak @ Ak
    return (mean[0] - b[0]) ** 2 + P[0, 0]


# Spec §1.5(b): BC (N = 31, a = η/32) with collaborators' curvature h_i = 1.2 and 2 "gives 0.00124 and 0.00076". The
# update rule evaluated directly gives 0.00131 and 0.00080, and so does Monte Carlo: R = 2000 seeds × T = 20000 steps
# (c from a 1000-sample estimate, last 3/4 averaged) measured 0.001309 ± 0.000005 and 0.000802 ± 0.000004, 14 and 12
# standard errors from the spec's numbers and 0.3 from the closed form. The spec's two values are misprints.
SPEC_BC_CURVED = {1.2: 0.00124, 2.0: 0.00076}


def test_bc_curvature_and_approximation():
    # Collaborator curvature h_i > 1 speeds up contraction: lower error than h_i = 1 (spec §1.5(b)).
    n, a = 31, ETA / 32
    base = wga.bc_stationary_error(ETA, a, n)
    b = np.r_[0.0, np.full(n, 0.3)]  # the collaborators' bias: no floor, whatever it is
    for h, printed in SPEC_BC_CURVED.items():
        hs = np.r_[1.0, np.full(n, h)]
        curved = wga.bc_stationary_error(ETA, a, n, h=hs)
        direct = bc_second_moment_direct(ETA, a, b, hs, np.ones(n + 1))
        assert curved == pytest.approx(direct, rel=1e-9)
        assert base > curved
        assert rel_err(printed, direct) > 0.04  # the spec's misprint (see SPEC_BC_CURVED)
    # the direct evaluation also covers the general options: heterogeneous noise, α ≠ a
    sig, hs = np.array([1.0, 0.5, 1.5, 1.0]), np.array([1.0, 1.2, 0.8, 2.0])
    assert wga.bc_stationary_error(0.1, 0.05, 3, alpha=0.3, sigma=sig, h=hs) == pytest.approx(
        bc_second_moment_direct(0.1, 0.05, [0.0, 1.0, -2.0, 0.5], hs, sig, alpha=0.3), rel=1e-9)
    # (σ²/2)(η/N + a(1+1/N)) is a small-a, large-N approximation.
    assert rel_err(wga.bc_error_approx(ETA, a, n), base) < 0.05
    assert rel_err(wga.bc_error_approx(ETA, ETA / 2, 1), wga.bc_stationary_error(ETA, ETA / 2, 1)) > 0.5


# ---------------------------------------------------------------------------- optimal weights / β*
def test_optimal_weights_match_scipy():
    rng = np.random.default_rng(0)
    sigma2 = rng.uniform(0.1, 3.0, (40, 6))
    zeta = rng.uniform(0.0, 1.0, (40, 6)) * rng.integers(0, 2, (40, 6))
    horizon = rng.uniform(1.0, 300.0, 40)
    batch = wga.optimal_weights(sigma2, zeta, horizon)
    np.testing.assert_allclose(batch.sum(-1), 1.0)
    for s2, z, t, alpha in zip(sigma2, zeta, horizon, batch):
        ref = minimize(lambda x: wga.qp_objective(x, s2, z, t), np.full(6, 1 / 6), method="SLSQP",
                       bounds=[(0, 1)] * 6, constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1}],
                       options={"ftol": 1e-15, "maxiter": 500})
        assert wga.qp_objective(alpha, s2, z, t) <= ref.fun * (1 + 1e-7)
        np.testing.assert_allclose(alpha, wga.optimal_weights(s2, z, t))
    # no bias anywhere: inverse-variance weights
    s2 = np.array([1.0, 2.0, 4.0])
    np.testing.assert_allclose(wga.optimal_weights(s2, np.zeros(3), 10.0), (1 / s2) / np.sum(1 / s2))


@pytest.mark.parametrize("zeta", [0.0, 0.1, 0.3, 1.0])
def test_qp_reduces_to_beta_star(zeta):
    n = 7
    c = wga.constant_step_variance(ETA)
    beta = wga.beta_star(zeta, n, c)
    qp = wga.optimal_weights(np.ones(n + 1), np.r_[0.0, np.full(n, zeta)], (2 - ETA) / ETA)
    np.testing.assert_allclose(qp, wga.beta_weights(beta, n), atol=1e-12)
    grid = np.linspace(0, 1, 2001)
    b = np.r_[0.0, np.full(n, zeta)]
    errors = [wga.wga_stationary_error(wga.beta_weights(x, n), b, eta=ETA) for x in grid]
    best = wga.wga_stationary_error(wga.beta_weights(beta, n), b, eta=ETA)
    assert best <= min(errors) + 1e-15
    assert abs(grid[np.argmin(errors)] - beta) <= 1e-3


def test_beta_star_vanishes_with_horizon():
    betas = [wga.beta_star(0.3, 7, 1.0 / t) for t in (10, 100, 1000, 10_000)]
    assert np.all(np.diff(betas) < 0)
    assert betas[-1] == pytest.approx(1 / (10_000 * 0.3**2), rel=0.01)  # β* ≈ σ²/(Tζ²) → 0
    assert wga.beta_star(0.0, 7, 1.0 / 10_000) == pytest.approx(7 / 8)


# -------------------------------------------------------------------- WGA: Monte Carlo vs closed form
def as_target(m, row, oracle):
    """Reorder tasks so that target m comes first, for the single-target closed forms."""
    order = np.r_[m, np.delete(np.arange(oracle.num_tasks), m)]
    return row[order], oracle.b[order], oracle.sigma[order], oracle.h[order]


WGA_CASES = {
    "uniform_scalar": (QuadraticOracle.shifted(3, 0.3), None),
    "beta_heterogeneous_2d": (
        QuadraticOracle(b=[[0, 0], [0.3, 0.1], [-0.2, 0.4], [0.5, -0.5]], h=[1.0, 1.5, 0.8, 2.0],
                        sigma=[1.0, 0.5, 2.0, 1.0]),
        wga_weights(4, beta=0.5)[0]),
}


@pytest.mark.parametrize("case", list(WGA_CASES))
def test_wga_stationary_mc(case):
    """Both cases are mostly bias (89% and 68% of the error), so the 3% check of the total would let a 25% error of
    the variance term through: the variance part (error − bias², the bias from x̄ = Σα_i h_i b_i / Σα_i h_i, the
    mean dynamics' fixed point) is judged on its own, within 4 MC standard errors (< 15% of it: a 25% error fails)."""
    oracle, weights = WGA_CASES[case]
    res = collab_sgd(oracle, steps=2000, eta=ETA, reps=2000, seed=11, weights=weights)
    alpha = res.weights[0, 0]
    theory = wga.wga_stationary_error(alpha, oracle.b, eta=ETA, sigma=oracle.sigma, h=oracle.h)
    mean, se = (v[0] for v in res.stationary())
    xbar = (alpha * oracle.h) @ oracle.b / (alpha @ oracle.h)
    bias2 = np.sum((xbar - oracle.b[0]) ** 2)
    assert rel_err(mean, theory) <= 0.03
    assert 4 * se < 0.15 * (theory - bias2)
    assert abs((mean - bias2) - (theory - bias2)) <= 4 * se


def test_wga_personalized_for_everyone_mc():
    oracle = QuadraticOracle.shifted(3, [0.1, 0.3, 0.6], sigma=[1.0, 0.7, 1.3, 1.0])
    w = wga_weights(4, "all", beta=0.4)
    res = collab_sgd(oracle, steps=4000, eta=ETA, reps=400, seed=12, weights=w, targets="all")
    measured = res.stationary()[0]
    for m in range(4):
        alpha, b, sigma, h = as_target(m, w[m], oracle)
        assert rel_err(measured[m], wga.wga_stationary_error(alpha, b, eta=ETA, sigma=sigma, h=h)) <= 0.03


def test_linear_regression_oracle():
    theta = np.array([[1.0, -1.0], [1.0, -1.0], [1.0, -1.0], [1.0, -1.0]])
    oracle = LinearRegressionOracle(theta, noise=0.5, scale=[1.0, 1.0, 2.0, 1.0])
    x = np.array([[[0.0, 0.0]]])
    g = oracle.grads(x, 0, 200_000, np.random.default_rng(0))[0, 0]  # mean gradient = s_i² (x − θ_i)
    np.testing.assert_allclose(g, np.array([1.0, 1.0, 4.0, 1.0])[:, None] * (x[0, 0] - theta), atol=0.03)
    # Same optimum for all 8 tasks, features N(0, I_d): the noise a(aᵀe − νε) of one task at error e has covariance
    # E[aaᵀPaaᵀ] − P + ν²I = P + tr(P)I + ν²I (Gaussian fourth moments), so averaging K tasks gives, for P = pI,
    # p = (1−η)²p + η²((d+1)p + ν²)/K, i.e. E‖x − θ‖² = d·ην²/(K(2 − η − η(d+1)/K)). The state-dependent part makes
    # the speedup 0.114 rather than 1/8; the MC is judged within 4 SE, which are below 5% of it.
    oracle = LinearRegressionOracle(np.zeros((8, 3)), noise=1.0)
    for k, weights in ((1, np.eye(8)[0]), (8, None)):
        mean, se = collab_sgd(oracle, steps=1000, eta=ETA, reps=400, seed=13, weights=weights).stationary()
        theory = 3 * ETA / (k * (2 - ETA - ETA * 4 / k))
        assert 4 * se[0] < 0.05 * theory
        assert abs(mean[0] - theory) <= 4 * se[0], (k, mean[0], theory)


# ------------------------------------------------------------------------ BC: Monte Carlo vs Lyapunov
BC_CASES = {
    "a=eta/(N+1)": (dict(n_collab=3), BiasCorrection(ETA / 4), {}),
    "curved_fresh_alpha": (dict(n_collab=3, delta=0.2, sigma=[1.0, 0.5, 1.5, 1.0]),
                           BiasCorrection(0.05, alpha=0.2, fresh_samples=True),
                           dict(alpha=0.2, h=[1.0, 1.2, 1.2, 1.2], sigma=[1.0, 0.5, 1.5, 1.0], fresh_samples=True)),
}


@pytest.mark.parametrize("case", list(BC_CASES))
def test_bc_stationary_mc(case):
    knobs, bc, theory_kw = BC_CASES[case]
    oracle = QuadraticOracle.shifted(zeta=0.5, **knobs)
    res = collab_sgd(oracle, steps=4000, eta=ETA, reps=600, seed=21, bc=bc)
    theory = wga.bc_stationary_error(ETA, bc.a, knobs["n_collab"], **theory_kw)
    assert rel_err(res.stationary()[0][0], theory) <= 0.03


def test_bc_personalized_for_everyone_mc():
    sigma = np.array([1.0, 0.6, 1.4, 1.0])
    oracle = QuadraticOracle.shifted(3, [0.2, 0.5, 1.0], sigma=sigma)
    res = collab_sgd(oracle, steps=4000, eta=ETA, reps=400, seed=24, bc=BiasCorrection(0.05), targets="all")
    measured = res.stationary()[0]
    for m in range(4):
        order = np.r_[m, np.delete(np.arange(4), m)]
        assert rel_err(measured[m], wga.bc_stationary_error(ETA, 0.05, 3, sigma=sigma[order])) <= 0.03


@pytest.mark.parametrize("delta", [0.0, 0.2])
def test_bc_has_no_bias_floor(delta):
    """Same seed, growing bias ζ: BC's stationary error does not move; WGA's grows like ζ²."""
    bc = BiasCorrection(ETA / 8)
    errs = {z: collab_sgd(QuadraticOracle.shifted(7, z, delta=delta), steps=3000, eta=ETA, reps=300, seed=22,
                          bc=bc).stationary()[0][0] for z in (0.0, 1.0, 3.0)}
    assert max(errs.values()) / min(errs.values()) - 1 < 0.01
    assert errs[3.0] < wga.constant_step_variance(ETA)  # beats "alone" even at ζ = 3
    wga_err = collab_sgd(QuadraticOracle.shifted(7, 3.0, delta=delta), steps=500, eta=ETA, reps=50, seed=22)
    assert wga_err.stationary()[0][0] > 100 * errs[3.0]


def test_bc_large_batch_init_removes_transient():
    oracle = QuadraticOracle.shifted(7, 3.0)
    kw = dict(steps=400, eta=ETA, reps=200, seed=23)
    cold = collab_sgd(oracle, bc=BiasCorrection(0.01), **kw).errors[:, 0, 100:].mean()
    warm = collab_sgd(oracle, bc=BiasCorrection(0.01, c_init_batch=1000), **kw).errors[:, 0, 100:].mean()
    assert warm < 0.1 * cold


# ---------------------------------------------------------------------------------- slopes in N and T
def test_linear_speedup_slopes_in_n():
    wga0 = [collab_sgd(QuadraticOracle.shifted(n, 0.0), steps=3000, eta=ETA, reps=300, seed=31)
            .stationary()[0][0] for n in NS]
    bc = [collab_sgd(QuadraticOracle.shifted(n, 0.3), steps=4000, eta=ETA, reps=300, seed=32,
                     bc=BiasCorrection(ETA / (n + 1))).stationary()[0][0] for n in NS]
    big = [15, 31, 63]
    wga3 = [collab_sgd(QuadraticOracle.shifted(n, 0.3), steps=1500, eta=ETA, reps=200, seed=33)
            .stationary()[0][0] for n in big]
    k = np.array(NS) + 1
    assert abs(slope(k, wga0) + 1) <= 0.1
    assert abs(slope(k, bc) + 1) <= 0.1
    assert abs(slope(np.array(big) + 1, wga3)) < 0.1
    for n, measured in zip(NS, wga0):
        assert rel_err(measured, wga.wga_stationary_error(wga.uniform_weights(n), np.zeros(n + 1), eta=ETA)) <= 0.03


def test_horizon_slopes_harmonic():
    n, horizons = 7, np.array([125, 250, 500, 1000, 2000])
    kw = dict(steps=2000, eta=1.0, schedule="harmonic", reps=1000, seed=41)
    runs = {
        "local": collab_sgd(QuadraticOracle.shifted(n, 0.3), weights=np.eye(n + 1)[0], **kw),
        "wga0": collab_sgd(QuadraticOracle.shifted(n, 0.0), **kw),
        "bc": collab_sgd(QuadraticOracle.shifted(n, 0.3), bc=BiasCorrection(1.0, a_schedule="harmonic"), **kw),
        "wga.3": collab_sgd(QuadraticOracle.shifted(n, 0.3), **kw),
    }
    curves = {name: r.errors[:, 0, horizons].mean(0) for name, r in runs.items()}
    for name in ("local", "wga0", "bc"):
        assert abs(slope(horizons, curves[name]) + 1) <= 0.1, name
    assert abs(slope(horizons, curves["wga.3"])) < 0.1  # T ≫ σ²/((N+1)ζ²) ≈ 1.4: at the bias floor
    for name in ("local", "wga0", "wga.3"):
        oracle = QuadraticOracle.shifted(n, 0.3 if name != "wga0" else 0.0)
        theory = [wga.wga_harmonic_error(runs[name].weights[0, 0], oracle.b, steps=t) for t in horizons]
        assert np.all(np.abs(curves[name] / theory - 1) <= 0.1)  # 1000 seeds per point: ≈4.5% standard error
    assert runs["wga.3"].errors[:, 0, -1].mean() == pytest.approx(0.3**2 * (7 / 8) ** 2, rel=0.02)


def test_harmonic_bridge_is_exact_model_averaging():
    """WGA with η_t = 1/(t+1) on f_i = ½(x − y_i)² returns Σ_i α_i ȳ_i(T) (spec §1.5(c)), for every target."""
    rng = np.random.default_rng(5)
    k, steps, reps = 5, 300, 7
    means = np.array([0.0, 0.5, -1.0, 2.0, 0.3])
    data = np.stack([Family("student_t", std=2.0).sample(rng, mu, (reps, steps)) for mu in means], 1)
    w = rng.dirichlet(np.ones(k), size=k)
    res = collab_sgd(StreamOracle(data, means), steps=steps, eta=1.0, schedule="harmonic", reps=reps,
                     seed=0, weights=w, targets="all", x0=rng.normal(size=(k, 1)))
    np.testing.assert_allclose(res.x[..., 0], data.mean(-1) @ w.T, rtol=1e-12, atol=1e-13)


# ------------------------------------------------------------------------------------ estimated weights
def test_estimated_weights_track_the_qp():
    n, batch = 7, 2
    kw = dict(steps=4000, eta=ETA, reps=200, batch=batch, weights=EstimatedWeights(every=10))
    local = wga.constant_step_variance(ETA, sigma=batch**-0.5)
    far = collab_sgd(QuadraticOracle.shifted(n, 0.3), seed=51, **kw)
    uniform = wga.wga_stationary_error(wga.uniform_weights(n), np.r_[0, np.full(n, 0.3)], eta=ETA, sigma=batch**-0.5)
    err = far.stationary()[0][0]
    assert err < 1.1 * local and err < 0.2 * uniform  # uniform WGA pays the bias floor (7/8·0.3)²
    assert far.weights[:, 0, 0].mean() > 0.7  # mostly its own gradient, as the QP says (0.877)
    near = collab_sgd(QuadraticOracle.shifted(n, 0.0), seed=52, **kw)
    assert near.stationary()[0][0] < 0.3 * local


# ---------------------------------------------------------------------------------- model averaging
def test_averaging_curve_closed_form():
    """Spec §2.4: Δ = 0.3, n_0 = 10, 90 other samples, σ = 1, pooled (w_0 = 0.1)."""
    a_star = av.alpha_star_pooled(0.1, 1 / 90, 0.3, 0.1)
    assert round(float(a_star), 4) == 0.5525
    ratios = np.array([0, 0.25, 0.5, 1, 1.5, 2])
    curve = 0.1 * av.mse_ratio_pooled(ratios * a_star, a_star, 0.1)
    assert [round(float(v), 5) for v in curve] == [0.1, 0.07825, 0.06271, 0.05028, 0.06271, 0.1]
    assert round(float(0.1 * av.mse_ratio_pooled(1.0, a_star, 0.1)), 5) == 0.0829
    np.testing.assert_allclose(av.relative_benefit(ratios * a_star, a_star), [0, 0.4375, 0.75, 1, 0.75, 0])
    # the generic form with L − G = (1−w_0)(L − O): cross = (1−w_0)σ_L², gap = (1−w_0)²(σ_L²+σ_O²+Δ²)
    cross, gap = 0.9 * 0.1, 0.81 * (0.1 + 1 / 90 + 0.09)
    np.testing.assert_allclose(av.mse(ratios * a_star, 0.1, cross, gap), curve)
    np.testing.assert_allclose(av.alpha_star(cross, gap), a_star)


def test_alpha_star_positive_iff_local_variance():
    rng = np.random.default_rng(6)
    var_l, var_o = rng.uniform(1e-6, 5, 1000), rng.uniform(0, 5, 1000)
    delta, w0 = rng.normal(0, 10, 1000), rng.uniform(0, 0.99, 1000)
    assert np.all(av.alpha_star_pooled(var_l, var_o, delta, w0) > 0)
    ind = av.alpha_star_independent(var_l, var_o, delta)
    assert np.all((ind > 0) & (ind <= 1))
    assert np.all(av.alpha_star_independent(0.0, var_o + 0.1, delta) == 0)
    np.testing.assert_allclose(av.mse_ratio_independent(ind, ind), 1 - ind)
    assert av.alpha_star_independent(1.0, 1.0, 1e4) < 1e-7  # α* → 0 as |Δ| → ∞
    assert av.alpha_star_pooled(1.0, 1.0, 0.0, 0.5) == 1.0  # homogeneous pooled: α* = 1


@pytest.mark.parametrize("family, mu0, delta, reps", [
    (Family("gaussian"), 0.0, 0.3, 1_000_000),  # exact sufficient statistics: 10⁶ replications are cheap
    (Family("bernoulli"), 0.5, 0.15, 1_000_000),
    (Family("student_t", std=1.0, df=4.0), 0.0, 0.3, 200_000),  # raw samples: the spec's 2·10⁵
])
@pytest.mark.parametrize("pooled", [True, False])
def test_averaging_curve_mc(family, mu0, delta, reps, pooled):
    draws = simulate(family, delta=delta, n_local=10, n_others=90, reps=reps, seed=7, mu0=mu0, pooled=pooled)
    curve = mse_curve(draws, [0, 0.25, 0.5, 1, 1.5, 2, 2.5])
    assert np.all(np.abs(curve.mse_mc / curve.mse_theory - 1) <= 0.01)
    assert np.all(np.abs(curve.benefit_mc - curve.benefit_theory) <= 0.03)  # the universal parabola


SPEC_TABLE_23 = {  # Δ: α*, local, global, oracle, plug-in; 40k replications in the spec
    0.0: (1.000, 0.100, 0.010, 0.010, 0.043),
    0.1: (0.917, 0.100, 0.018, 0.018, 0.049),  # oracle 0.018: a misprint (= its global column), see below
    0.2: (0.735, 0.100, 0.042, 0.034, 0.062),
    0.3: (0.552, 0.100, 0.083, 0.0503, 0.081),
    0.5: (0.308, 0.100, 0.213, 0.072, 0.121),
    1.0: (0.100, 0.100, 0.822, 0.091, 0.138),
    3.0: (0.012, 0.100, 7.30, 0.099, 0.104),
}


def oracle_mse_direct(delta, var_l=0.1, var_o=1 / 90, w0=0.1):
    """min over α of E((1−α)L + αG − μ_0)², G = w_0 L + (1−w_0)O, from the definition: with c = α(1−w_0) the
    error is (1−c)L' + cO' with L' ~ (0, σ_L²) and O' ~ (Δ, σ_O²) independent, so MSE(c) = (1−c)²σ_L² + c²(σ_O² + Δ²),
    minimal at c = σ_L²/(σ_L² + σ_O² + Δ²) (α = c/(1−w_0) < 1 here)."""
    rest = var_o + delta**2
    return var_l * rest / (var_l + rest)


def test_estimation_table_reproduces_spec():
    reps, spec_reps = 400_000, 40_000
    table = estimation_table(Family("gaussian"), list(SPEC_TABLE_23), n_local=10, n_others=90, reps=reps, seed=8)
    misprints = {(0.1, "oracle"): oracle_mse_direct(0.1)}  # 0.01743: below the global model's 0.0181, as it must be
    for row in table.to_dict("records"):
        expected = SPEC_TABLE_23[row["delta"]]
        assert abs(row["alpha_star"] - expected[0]) <= 5e-4
        for col, value in zip(("local", "global", "oracle", "plugin"), expected[1:]):
            # both MC errors (ours and the spec's 40k draws), 4 standard errors, plus half a printed digit
            se = row[f"{col}_se"] * np.sqrt(1 + reps / spec_reps)
            half_digit = 0.5 * 10.0 ** -(len(repr(value).split(".")[1]))
            if (row["delta"], col) in misprints:
                # the definition does not round to the printed digits, and the Monte Carlo agrees with the definition
                # (the MC alone is 1.5 SE outside [0.0175, 0.0185): it could not refute the printed value by itself)
                exact = misprints[row["delta"], col]
                assert abs(exact - value) > half_digit
                assert abs(row[col] - exact) <= 4 * row[f"{col}_se"]
            else:
                assert abs(row[col] - value) <= 4 * se + half_digit, (row["delta"], col)
        if row["delta"] > 0:
            assert row["oracle"] == pytest.approx(oracle_mse_direct(row["delta"]), abs=4 * row["oracle_se"])
    # the plug-in hurts (worse than local) exactly where α̂ often leaves (0, 2α*)
    hurts = table.plugin > table.local
    assert list(table.delta[hurts]) == [0.5, 1.0, 3.0]
    assert np.all(table.plugin_outside[hurts] > 0.05) and np.all(table.plugin_outside[~hurts] == 0)


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("call, match", [
    (lambda: wga.wga_stationary_error([0.5, 0.5], [0, 1], eta=2.5), "eta=2.5"),
    (lambda: wga.wga_stationary_error([0.5, 0.6], [0, 1], eta=0.1), "alpha"),
    (lambda: wga.bc_stationary_error(ETA, 0.0, 3), "a=0.0"),
    (lambda: wga.optimal_weights([1.0, 1.0], [0.0, -0.1], 10.0), "zeta"),
    (lambda: av.alpha_star_pooled(0.1, 0.1, 0.0, 1.0), "w0"),
    (lambda: Family("cauchy"), "cauchy"),
    (lambda: Family("bernoulli", std=1.0), "std"),
    (lambda: Family("student_t", df=2.0), "df"),
    (lambda: collab_sgd(QuadraticOracle.shifted(2), steps=5, eta=ETA, reps=2, seed=0, schedule="cosine"), "schedule"),
    (lambda: collab_sgd(QuadraticOracle.shifted(2), steps=5, eta=ETA, reps=2, seed=0, bc=BiasCorrection(0.1),
                        weights=[0.5, 0.25, 0.25]), "own-task"),
    (lambda: collab_sgd(QuadraticOracle.shifted(2), steps=5, eta=ETA, reps=2, seed=0,
                        weights=EstimatedWeights()), "batch"),
    (lambda: collab_sgd(StreamOracle(np.zeros((2, 3, 5)), np.zeros(3)), steps=5, eta=1.0, reps=2, seed=0,
                        bc=BiasCorrection(0.1, fresh_samples=True)), "fresh_samples"),
    (lambda: collab_sgd(QuadraticOracle.shifted(2), steps=5, eta=ETA, reps=2, seed=0, targets=[3]), "targets"),
])
def test_bad_input_names_the_culprit(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bc_weights_rows():
    w = bc_weights(4, "all")
    np.testing.assert_allclose(np.diag(w), 0.0)
    np.testing.assert_allclose(w.sum(1), 1.0)
