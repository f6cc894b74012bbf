"""Neural WGA, bias correction and optimal model averaging: per-pair gradients vs a double loop, the special cases
that reduce to Local SGD / FedAvg-like averaging / each other, the error ordering of the theory (and its closed
forms) on a synthetic mean-estimation federation, and model averaging's validation-only choice of α."""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from torch.func import functional_call

from pcl.algorithms import ALGORITHMS, Context, make_hparams
from pcl.data.federation import Federation
from pcl.data.types import ClientData
from pcl.engine import LocalTrainer, broadcast, evaluate, task_loss
from pcl.engine.batches import make_plan
from pcl.engine.pairwise import mixed_grads, own_grads, pair_grad_stats, pair_grads
from pcl.models import build_model
from pcl import diagnostics
from pcl.run import train
from pcl.theory.wga import bc_stationary_error, wga_stationary_error

MLP = {"name": "mlp", "hidden": [16]}


def _alg(name, fed, model=MLP, seed=0, **hp):
    net = build_model(model, fed.input_shape, max(fed.num_classes, 1))
    ctx = Context(net, fed, LocalTrainer(net), seed=seed)
    cls = ALGORITHMS[name]
    return cls(make_hparams(cls.Hparams, hp), ctx)


def _next_plan(alg, batch, steps=1):
    """The plan the algorithm's next ``make_plan`` call will draw (from a copy of its RNG tree)."""
    return make_plan(alg.ctx.train.n, batch, steps=steps, generator=copy.deepcopy(alg.ctx.rngs).torch("batches"))


def _close(a, b, atol=1e-6):
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=0, atol=atol)


def _grad(model, p, x, y):
    leaves = {n: v.detach().clone().requires_grad_(True) for n, v in p.items()}
    loss = task_loss(functional_call(model, leaves, (x,)), y)
    return dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))


# --------------------------------------------------------------------------------------- per-pair gradients
def test_pair_gradients_equal_a_double_loop(digits_fed):
    alg = _alg("local", digits_fed)
    model, data = alg.ctx.model, alg.ctx.train
    params = alg.ctx.init_params(independent=3)
    x, y = data.x[:4, :6], data.y[:4, :6]
    table = pair_grads(model, params, x, y)
    mean, var = pair_grad_stats(model, params, x, y)  # one group per sample
    _, var3 = pair_grad_stats(model, params, x, y, groups=3)
    for i in range(3):
        p_i = {n: v[i] for n, v in params.items()}
        for j in range(4):
            g = _grad(model, p_i, x[j], y[j])
            per = [_grad(model, p_i, x[j, s:s + 1], y[j, s:s + 1]) for s in range(6)]
            trace = sum(torch.stack([q[n] for q in per]).var(0).sum() for n in g)
            pairs = [_grad(model, p_i, x[j, s:s + 2], y[j, s:s + 2]) for s in (0, 2, 4)]
            trace3 = 2 * sum(torch.stack([q[n] for q in pairs]).var(0).sum() for n in g)
            for n in g:
                torch.testing.assert_close(table[n][i, j], g[n], rtol=0, atol=1e-6)
                torch.testing.assert_close(mean[n][i, j], g[n], rtol=0, atol=1e-6)
            torch.testing.assert_close(var[i, j], trace, rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(var3[i, j], trace3, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="groups=4"):
        pair_grad_stats(model, params, x, y, groups=4)


def test_mixed_own_and_gap_statistics_equal_the_double_loop(digits_fed):
    """The training steps' weighted rows, computed without the K x K table (and in chunks of one model)."""
    alg = _alg("local", digits_fed)
    model, data = alg.ctx.model, alg.ctx.train
    params = alg.ctx.init_params(independent=4)
    x, y = data.x[:4, :6], data.y[:4, :6]
    w = torch.rand(4, 4, generator=torch.Generator().manual_seed(0))
    mixed, own = mixed_grads(model, params, x, y, w, max_rows=24), own_grads(model, params, x, y)
    gaps, _ = pair_grad_stats(model, params, x, y, groups=3, gaps=True, max_elements=1)  # chunks of one model
    for i in range(4):
        p_i = {n: v[i] for n, v in params.items()}
        g = [_grad(model, p_i, x[j], y[j]) for j in range(4)]
        for n in g[0]:
            torch.testing.assert_close(mixed[n][i], sum(w[i, j] * g[j][n] for j in range(4)), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(own[n][i], g[i][n], rtol=0, atol=1e-6)
        gap = [sum(((g[j][n] - g[i][n]) ** 2).sum() for n in g[0]) for j in range(4)]
        torch.testing.assert_close(gaps[i], torch.stack(gap).double(), rtol=1e-4, atol=1e-8)


# ------------------------------------------------------------------------------------------ special cases
def test_uniform_wga_step_is_the_pooled_gradient_step_and_keeps_clients_identical(digits_fed):
    alg = _alg("wga", digits_fed, weights="uniform", local_steps=1, batch_size=4, lr=0.1)
    state = alg.init()
    index = _next_plan(alg, 4).index[0]
    after = alg.round(state, 0)
    data, k = alg.ctx.train, alg.ctx.num_clients
    rows = torch.arange(k)[:, None]
    x0 = {n: v[0] for n, v in state["params"].items()}
    pooled = _grad(alg.ctx.model, x0, data.x[rows, index].flatten(0, 1), data.y[rows, index].flatten(0, 1))
    _close(after["params"], {n: (x0[n] - 0.1 * pooled[n]).expand_as(after["params"][n]) for n in x0})
    for t in range(1, 4):
        after = alg.round(after, t)
    _close(after["params"], {n: v[:1].expand_as(v) for n, v in after["params"].items()})


def test_wga_beta_zero_is_local_sgd_on_the_same_batches(digits_fed):
    wga = _alg("wga", digits_fed, weights="beta", beta=0.0, local_steps=3, batch_size=8, lr=0.1)
    local = _alg("local", digits_fed, batch_size=8, lr=0.1)
    w, loc = wga.round(wga.init(), 0), local.init()
    everyone = torch.arange(local.ctx.num_clients)
    _close(w["params"], local.ctx.local_train(loc["params"], everyone, local.hp, local_steps=3, local_epochs=None))


def test_bias_correction_special_cases(digits_fed):
    common = dict(local_steps=2, batch_size=8, lr=0.1, c_init_batch=None)
    # a = 0 and c = 0: c stays 0, so d = α g_i + (1−α) mean_{j≠i} g_j, i.e. WGA with β = 1 − α
    bc, wga = _alg("bias_correction", digits_fed, a=0.0, alpha=0.3, **common), \
        _alg("wga", digits_fed, weights="beta", beta=0.7, local_steps=2, batch_size=8, lr=0.1)
    s, w = bc.init(), wga.init()
    for t in range(2):
        s, w = bc.round(s, t), wga.round(w, t)
    _close(s["params"], w["params"])
    assert all(float(v.abs().max()) == 0 for v in s["c"].values())
    # α = 1 ignores the collaborators entirely (Local SGD), whatever c does
    bc1 = _alg("bias_correction", digits_fed, a=0.5, alpha=1.0, **common)
    loc = _alg("wga", digits_fed, weights="beta", beta=0.0, local_steps=2, batch_size=8, lr=0.1)
    s1 = bc1.round(bc1.init(), 0)
    _close(s1["params"], loc.round(loc.init(), 0)["params"])
    assert any(float(v.abs().max()) > 0 for v in s1["c"].values())


def test_bias_correction_fresh_samples_and_initial_estimate(digits_fed):
    # a = 1, fresh samples: d uses the first half of the draw, and c becomes g_i − ĝ_i on the second half
    bc = _alg("bias_correction", digits_fed, a=1.0, alpha=1.0, fresh_samples=True, c_init_batch=None,
              local_steps=1, batch_size=4, lr=0.1)
    state = bc.init()
    first, second = _next_plan(bc, 8).index[0].split(4, dim=1)
    after = bc.round(state, 0)
    k, data = bc.ctx.num_clients, bc.ctx.train
    rows, idx = torch.arange(k)[:, None], torch.arange(k)
    g1 = pair_grads(bc.ctx.model, state["params"], data.x[rows, first], data.y[rows, first])
    g2 = pair_grads(bc.ctx.model, state["params"], data.x[rows, second], data.y[rows, second])
    for n, p in state["params"].items():
        torch.testing.assert_close(after["params"][n], p - 0.1 * g1[n][idx, idx], rtol=0, atol=1e-6)
        others = (g2[n].sum(1) - g2[n][idx, idx]) / (k - 1)
        torch.testing.assert_close(after["c"][n], g2[n][idx, idx] - others, rtol=0, atol=1e-6)
    # the initial estimate at the shared init: c_i = g_i − mean_{j≠i} g_j, so the c_i sum to zero
    c0 = _alg("bias_correction", digits_fed, c_init_batch=32).init()["c"]
    for v in c0.values():
        assert float(v.abs().max()) > 1e-3
        torch.testing.assert_close(v.sum(0), torch.zeros_like(v[0]), rtol=0, atol=1e-5)


def test_estimated_weights_stay_inside_the_planted_label_groups():
    fed = Federation.build({"source": {"name": "digits"},
                            "partition": {"scheme": "label_groups", "num_clients": 8, "seed": 0,
                                          "groups": [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]], "shares": [0.5, 0.5]}})
    alg = _alg("wga", fed, local_steps=2)
    state = alg.init()
    for t in range(2):
        state = alg.round(state, t)
    w = state["weights"].numpy()
    same = fed.part.cluster[:, None] == fed.part.cluster[None, :]
    assert np.all(w >= 0) and np.allclose(w.sum(1), 1.0)
    assert (w * same).sum(1).min() > 0.95, w.round(2)  # (almost) no weight across label groups ...
    assert np.diag(w).mean() < 0.7, w.round(2)  # ... but real collaboration inside them


# ------------------------------------------------------------------- theory ordering on mean estimation
K, LR = 8, 0.25


BURN_IN, BLOCK = 50, 50


@pytest.fixture(scope="module")
def mean_estimation_errors():
    """Stationary ‖x_i − ȳ_i‖² (time- and client-averaged) of each method on scalar mean estimation: model w·1 with
    squared loss, so g = 2(w − y): the spec's quadratic with h = 2, optimum ȳ_i and gradient noise std 2s_i, where
    ȳ_i and s_i are the mean and standard deviation of client i's 800 training samples (what SGD sees; the
    population's μ_i and σ = 1 are off by ~σ/√800 and ~σ/√1600, several Monte Carlo errors at this precision).
    ``se_<method>``: the Monte Carlo standard error, from means over blocks of 50 rounds (the iterates forget in
    ~1/(η h) = 2 rounds, BC's c in ~1/a = 32, so block means are nearly independent). Local never looks at the
    collaborators and both federations share their noise draws, so its ζ = 0 run serves ζ = 2 too; uniform WGA
    keeps all clients identical (one trajectory, not K), so at ζ = 0 it runs longer to reach a useful precision."""
    def run(data, name, rounds=800, **hp):
        fed, ybar = data
        alg = _alg(name, fed, model={"name": "linear", "bias": False}, lr=LR, batch_size=1, local_steps=1, **hp)
        state, errors = alg.init(), []
        for t in range(rounds):
            state = alg.round(state, t)
            if t >= BURN_IN:
                errors.append(((state["params"]["fc.weight"].reshape(K).double() - ybar) ** 2).mean().item())
        blocks = np.reshape(errors, (-1, BLOCK)).mean(1)
        return blocks.mean(), blocks.std(ddof=1) / np.sqrt(len(blocks))

    out = {}
    for zeta in (0.0, 2.0):
        fed = Federation.build({"source": {"name": "synthetic_mean", "num_clients": K, "samples_per_client": 1000,
                                           "zeta": zeta, "seed": 1},
                                "partition": {"scheme": "natural", "val_frac": 0.1, "test_frac": 0.1}})
        train = _alg("local", fed, model={"name": "linear", "bias": False}).ctx.train
        y = [train.y[i, :n].double() for i, n in enumerate(train.n.tolist())]
        ybar = torch.stack([v.mean() for v in y])
        mu, sigma = ybar.numpy(), 2.0 * torch.stack([v.std(correction=0) for v in y]).numpy()

        def as_target(i):
            order = np.r_[i, np.delete(np.arange(K), i)]
            return mu[order], sigma[order]

        e = out[zeta] = {
            "theory_local": np.mean([wga_stationary_error([1.0], [m], eta=LR, sigma=sg, h=2.0)
                                     for m, sg in zip(mu, sigma)]),
            "theory_uniform": np.mean([wga_stationary_error(np.full(K, 1 / K), as_target(i)[0], eta=LR,
                                                            sigma=as_target(i)[1], h=2.0) for i in range(K)])}
        local = (out[0.0]["local"], out[0.0]["se_local"]) if zeta else run((fed, ybar), "wga", weights="beta", beta=0.0)
        e["local"], e["se_local"] = local
        e["uniform"], e["se_uniform"] = run((fed, ybar), "wga", rounds=800 if zeta else 2050, weights="uniform")
        if zeta:
            e["bc"], e["se_bc"] = run((fed, ybar), "bias_correction", a=LR / K, c_init_batch=256)
            e["theory_bc"] = np.mean([bc_stationary_error(LR, LR / K, K - 1, sigma=as_target(i)[1], h=2.0)
                                      for i in range(K)])
            e["estimated"], _ = run((fed, ybar), "wga", weights="estimated")
    return out


def test_wga_and_bc_error_ordering_matches_the_theory(mean_estimation_errors):
    e0, e1 = mean_estimation_errors[0.0], mean_estimation_errors[2.0]
    assert e0["uniform"] < e0["local"] / 4  # ζ = 0: linear speedup (theory: / K)
    assert e1["uniform"] > 3 * e1["local"]  # large ζ: the bias floor makes averaging worse than alone
    assert e1["bc"] < e1["local"] / 2  # bias correction keeps (part of) the speedup with no floor
    assert e1["estimated"] < e1["local"] and e1["estimated"] < e1["uniform"] / 5  # the QP weights avoid the floor


def test_neural_errors_match_the_closed_forms(mean_estimation_errors):
    """Within 4 Monte Carlo standard errors (was: 25%): about 10% of local's error, 0.4% of uniform WGA's at ζ = 2
    (mostly bias), 16% at ζ = 0 and 17% of BC's (the slowest to forget); the SE must stay small enough to mean
    something."""
    for zeta, e in mean_estimation_errors.items():
        for method in ("local", "uniform", "bc"):
            if method in e:
                theory, se = e[f"theory_{method}"], e[f"se_{method}"]
                assert se < 0.06 * theory, (zeta, method, e)
                assert abs(e[method] - theory) <= 4 * se, (zeta, method, e)


# ------------------------------------------------------------------------------------------ model averaging
def test_model_averaging_endpoints_are_local_and_fedavg(digits_fed):
    ma0, local = _alg("model_averaging", digits_fed, alpha=0.0, lr=0.1), _alg("local", digits_fed, lr=0.1)
    s0, loc = ma0.round(ma0.init(), 0), local.round(local.init(), 0)
    _close(s0["params"], loc["params"], atol=0)  # the local half is exactly a Local run
    model = ma0.ctx.model
    metrics = ma0.evaluate(s0, ("val", "test"))
    assert torch.equal(ma0.ctx.take_diagnostics()["alpha"], torch.zeros(20))
    for split, m in metrics.items():
        ref = evaluate(model, loc["params"], ma0.ctx.data(split))
        assert torch.equal(m["acc"], ref["acc"])
        torch.testing.assert_close(m["loss"], ref["loss"], rtol=1e-5, atol=1e-5)
    ma1 = _alg("model_averaging", digits_fed, alpha=1.0, lr=0.1)
    s1 = ma1.round(ma1.init(), 0)
    glob = evaluate(model, broadcast(s1["global"], 20), ma1.ctx.data("test"))
    m1 = ma1.evaluate(s1, ("test",))["test"]
    assert torch.equal(m1["acc"], glob["acc"])
    assert float((s1["params"]["head.bias"] - s1["global"]["head.bias"]).abs().max()) > 0  # two different models
    torch.testing.assert_close(m1["loss"], glob["loss"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("select_by", ["loss", "acc"])
def test_model_averaging_picks_alpha_on_validation_only(digits_fed, select_by, monkeypatch):
    ma = _alg("model_averaging", digits_fed, lr=0.1, select_by=select_by)
    state = ma.init()
    for t in range(3):
        state = ma.round(state, t)
    metrics = ma.evaluate(state, ("val", "test"))
    alpha = ma.ctx.take_diagnostics()["alpha"]
    assert "alpha" not in metrics["val"] and "alpha" not in metrics["test"]  # a diagnostic, not a metric
    assert bool(((alpha >= 0) & (alpha <= 1)).all())
    ends = {a: _alg("model_averaging", digits_fed, alpha=a).evaluate(state, ("val",))["val"] for a in (0.0, 1.0)}
    if select_by == "loss":
        assert bool((metrics["val"]["loss"] <= torch.minimum(ends[0.0]["loss"], ends[1.0]["loss"]) + 1e-6).all())
    else:
        assert bool((metrics["val"]["acc"] >= torch.maximum(ends[0.0]["acc"], ends[1.0]["acc"])).all())
    assert bool(((alpha > 0) & (alpha < 1)).any()), alpha  # a real mixture somewhere on this partition
    # scrambling the test labels changes the test scores but never the chosen α
    test = ma.ctx.data("test")
    scrambled = ClientData(x=test.x, y=test.y.roll(1, dims=1), n=test.n)
    real = ma.ctx.data
    monkeypatch.setattr(ma.ctx, "data", lambda split: scrambled if split == "test" else real(split))
    again = ma.evaluate(state, ("val", "test"))
    assert torch.equal(ma.ctx.take_diagnostics()["alpha"], alpha) and not torch.equal(again["test"]["acc"], metrics["test"]["acc"])


def test_parameter_interpolation_endpoints(digits_fed):
    ma = _alg("model_averaging", digits_fed, lr=0.1, interpolate="params", alpha=0.0)
    state = ma.round(ma.init(), 0)
    ref = evaluate(ma.ctx.model, state["params"], ma.ctx.data("val"))
    got = ma.evaluate(state, ("val",))["val"]
    assert torch.equal(got["acc"], ref["acc"]) and torch.equal(got["loss"], ref["loss"])


def test_model_averaging_alpha_reaches_the_diagnostics_file(digits_fed, tmp_path):
    digits_fed.save(tmp_path / "fed")
    cfg = {"name": "oma", "data": digits_fed.spec, "model": MLP,
           "train": {"rounds": 2, "eval_every": 1, "engine": "vectorized"},
           "algorithms": {"model_averaging": {"default": {"lr": 0.1}}}}
    train(cfg, tmp_path / "fed", tmp_path / "run", seed=0, progress=False)
    assert "alpha" not in set(pd.read_csv(tmp_path / "run/metrics.csv").metric)
    diag = pd.read_csv(tmp_path / "run/diagnostics.csv")
    alpha = diag[diag.name == "alpha"]
    assert sorted(alpha["round"].unique()) == [1, 2] and len(alpha) == 2 * 20 and alpha.value.between(0, 1).all()
    assert (alpha.col == -1).all() and sorted(alpha[alpha["round"] == 2].row) == list(range(20))
    assert diagnostics.as_array(diag, "alpha").shape == (20,)


def test_bad_hyperparameters_are_named(digits_fed):
    for name, bad, key in [("wga", {"weights": "oracle"}, "weights"), ("wga", {"beta": 2.0}, "beta"),
                           ("wga", {"estimate_batch": 30, "estimate_groups": 4}, "estimate_groups"),
                           ("bias_correction", {"a": -0.1}, "a=-0.1"),
                           ("model_averaging", {"alpha": 1.5}, "alpha=1.5"),
                           ("model_averaging", {"alpha_grid": [0.0, 2.0]}, "alpha_grid"),
                           ("model_averaging", {"interpolate": "weights"}, "interpolate")]:
        with pytest.raises(ValueError, match=key):
            make_hparams(ALGORITHMS[name].Hparams, bad)
    regression = Federation.build({"source": {"name": "synthetic_mean", "num_clients": 4, "samples_per_client": 20},
                                   "partition": {"scheme": "natural"}})
    with pytest.raises(ValueError, match="select_by='acc'"):
        _alg("model_averaging", regression, model={"name": "linear"}, select_by="acc")
