"""SCAFFOLD, APFL, Per-FedAvg and FedBN against independent computations: local SGD run by hand, closed-form optima of
a quadratic federation (numpy least squares), the FedAvg/Local limits, exact Hessian-vector products, and what each
client's normalisation layers may depend on."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.func import functional_call
from torch.nn import functional as F

import pcl.algorithms.apfl  # noqa: F401  (registration)
import pcl.algorithms.fedbn  # noqa: F401
import pcl.algorithms.perfedavg  # noqa: F401
import pcl.algorithms.scaffold  # noqa: F401
from pcl.algorithms import ALGORITHMS, Context, make_hparams
from pcl.algorithms.perfedavg import MetaObjective, finite_difference_hvp
from pcl.data.federation import Federation
from pcl.data.types import ClientData, Partition, Pool
from pcl.engine import LocalTrainer, task_loss
from pcl.engine.batches import make_plan
from pcl.models import build_model

N = 24  # samples per client of the quadratic federation (equal, so data-size and uniform weights agree)


def quadratic_federation(k: int = 4, d: int = 3, seed: int = 0) -> Federation:
    """Linear regression clients with different optima and different input scales (so different Hessians: with equal
    Hessians FedAvg's drift would cancel and it would find the global optimum too)."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for _ in range(k):
        x = rng.normal(size=(N, d)) * rng.uniform(0.3, 2.0, size=d)
        xs.append(x)
        ys.append(x @ rng.normal(size=d) * 2 + rng.normal() + 0.1 * rng.normal(size=N))
    idx = [np.arange(i * N, (i + 1) * N) for i in range(k)]
    part = Partition(train=idx, val=idx, test=idx, rotation=np.zeros(k), noise=np.zeros(k),
                     cluster=-np.ones(k, dtype=np.int64))
    pool = Pool("quadratic", np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.float32), 0)
    return Federation(pool=pool, part=part, spec={})


def design(fed: Federation, i: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """[x, 1] and y in float64, of client i or pooled."""
    sel = slice(None) if i is None else slice(i * N, (i + 1) * N)
    x = fed.pool.x[sel].astype(np.float64)
    return np.c_[x, np.ones(len(x))], fed.pool.y[sel].astype(np.float64)


def flat(p: dict) -> np.ndarray:
    """A linear model's (unstacked) parameters as [weight..., bias] in float64."""
    return np.r_[p["fc.weight"].double().flatten().numpy(), p["fc.bias"].double().numpy()]


def _alg(name, fed, model=None, seed=0, **hp):
    net = build_model(model or {"name": "linear"}, fed.input_shape, max(fed.num_classes, 1))
    ctx = Context(net, fed, LocalTrainer(net), seed=seed)
    cls = ALGORITHMS[name]
    return cls(make_hparams(cls.Hparams, hp), ctx)


def _run(alg, rounds):
    state = alg.init()
    for t in range(rounds):
        out = alg.round(state, t)
        state = out[0] if isinstance(out, tuple) else out
    return state


def _equal(a, b, atol=0.0):
    assert set(a) == set(b)
    for n in a:
        torch.testing.assert_close(a[n], b[n].expand_as(a[n]), rtol=0, atol=atol, msg=n)


FULL_BATCH = dict(batch_size=N, local_steps=5, local_epochs=None, lr=0.05)  # a batch of N is a permutation: GD


# ----------------------------------------------------------------------------------------------------- SCAFFOLD
def test_scaffold_with_one_client_is_local_sgd():
    """One client: c = c_1 always, so the correction vanishes and x follows plain local SGD across rounds."""
    fed = quadratic_federation(k=1)
    alg = _alg("scaffold", fed, batch_size=5, local_steps=4, local_epochs=None, lr=0.05)
    state = alg.init()
    w = {n: v.clone() for n, v in state["global"].items()}
    data = alg.ctx.train
    for t in range(3):
        plan = make_plan(data.n, 5, steps=4, generator=copy.deepcopy(alg.ctx.rngs).torch("batches"))
        for s in range(4):
            idx = plan.index[s, 0]
            leaves = {n: v.requires_grad_(True) for n, v in w.items()}
            loss = F.mse_loss(functional_call(alg.ctx.model, leaves, (data.x[0, idx],)).squeeze(-1), data.y[0, idx])
            grads = torch.autograd.grad(loss, list(leaves.values()))
            w = {n: (v - 0.05 * g).detach() for (n, v), g in zip(leaves.items(), grads)}
        state = alg.round(state, t)
        _equal(state["global"], w, atol=1e-6)


@pytest.mark.parametrize("fraction, rounds", [(1.0, 40), (0.5, 80)])
def test_scaffold_reaches_the_global_optimum_where_fedavg_drifts(fraction, rounds):
    """Also with half the clients per round: the stale c_i of the others still average to the right c."""
    fed = quadratic_federation()
    x, y = design(fed)
    optimum = np.linalg.lstsq(x, y, rcond=None)[0]
    scaffold, fedavg = (_run(_alg(name, fed, client_fraction=fraction, **FULL_BATCH), rounds)
                        for name in ("scaffold", "fedavg"))
    assert np.abs(flat(scaffold["global"]) - optimum).max() < 1e-5
    assert np.abs(flat(fedavg["global"]) - optimum).max() > 0.1  # five local steps on heterogeneous clients
    for i in range(fed.num_clients):  # option II's c_i converges to client i's full gradient at the optimum
        xi, yi = design(fed, i)
        gradient = 2 / N * xi.T @ (xi @ optimum - yi)
        ci = {n: v[i] for n, v in scaffold["c_clients"].items()}
        np.testing.assert_allclose(flat(ci), gradient, atol=1e-4)
    assert max(v.abs().max().item() for v in scaffold["c"].values()) < 1e-4  # c = mean c_i = mean gradient = 0
    early = _run(_alg("scaffold", fed, client_fraction=fraction, **FULL_BATCH), 3)  # before convergence too:
    share = fed.client_data("train").n.double() / (N * fed.num_clients)  # c is the data-weighted mean of the c_i
    for name, c in early["c"].items():
        torch.testing.assert_close(c, torch.tensordot(share.float(), early["c_clients"][name], dims=1), atol=1e-6,
                                   rtol=0)


def test_scaffold_refuses_adam():
    with pytest.raises(ValueError, match="SGD"):
        make_hparams(ALGORITHMS["scaffold"].Hparams, {"optimizer": "adam"})


# ---------------------------------------------------------------------------------------------------------- APFL
MLP = {"name": "mlp", "hidden": [16]}


def test_apfl_alpha_zero_predicts_with_fedavg_model(digits_fed):
    apfl = _alg("apfl", digits_fed, MLP, alpha=0.0, client_fraction=0.5)
    fedavg = _alg("fedavg", digits_fed, MLP, client_fraction=0.5)
    a, f = _run(apfl, 2), _run(fedavg, 2)
    _equal(apfl.personalized(a), fedavg.personalized(f))  # bit for bit: sg(w) adds nothing to w's gradient


def test_apfl_alpha_one_is_local(digits_fed):
    apfl, local = _alg("apfl", digits_fed, MLP, alpha=1.0), _alg("local", digits_fed, MLP)
    a, loc = _run(apfl, 2), _run(local, 2)
    _equal(apfl.personalized(a), loc["params"])
    assert max((a["personal"][n] - a["global"][n]).abs().max() for n in a["global"]) > 1e-3  # w still trained


def _grads(model, p, x, y):
    leaves = {n: v.detach().clone().requires_grad_(True) for n, v in p.items()}
    loss = task_loss(functional_call(model, leaves, (x,)), y)
    return dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))


@pytest.mark.parametrize("alpha_lr", [0.5, 1e4])
def test_apfl_adaptive_step_follows_algorithm_1(digits_fed, alpha_lr):
    """One local step by hand: w - eta g(w), v - eta alpha g(v_bar), alpha - eta_a <v - w, g(v_bar)> clipped to [0, 1]
    (a huge eta_a must land alpha on a bound)."""
    apfl = _alg("apfl", digits_fed, MLP, alpha=0.4, adaptive=True, alpha_lr=alpha_lr, lr=0.1, local_steps=1,
                local_epochs=None, batch_size=8)
    state = apfl.init()
    state["personal"] = apfl.ctx.init_params(independent=digits_fed.num_clients)  # v != w, so alpha moves
    data, model = apfl.ctx.train, apfl.ctx.model
    plan = make_plan(data.n, 8, steps=1, generator=copy.deepcopy(apfl.ctx.rngs).torch("batches"))
    new, diag = apfl.round(state, 0)
    ws, alphas = [], []
    for k in range(digits_fed.num_clients):
        x, y = data.x[k, plan.index[0, k]], data.y[k, plan.index[0, k]]
        w, v = state["global"], {n: p[k] for n, p in state["personal"].items()}
        mixed = {n: 0.4 * v[n] + 0.6 * w[n] for n in w}
        gw, gm = _grads(model, w, x, y), _grads(model, mixed, x, y)
        ws.append({n: w[n] - 0.1 * gw[n] for n in w})
        for n in v:
            torch.testing.assert_close(new["personal"][n][k], v[n] - 0.1 * 0.4 * gm[n], rtol=0, atol=1e-6)
        step = sum(((v[n] - w[n]) * gm[n]).sum() for n in w)
        alphas.append(float(np.clip(0.4 - alpha_lr * float(step), 0, 1)))
    expected_w = {n: sum(data.n[k] * ws[k][n] for k in range(len(ws))) / data.n.sum() for n in ws[0]}
    _equal(new["global"], expected_w, atol=1e-6)
    torch.testing.assert_close(new["alpha"], torch.tensor(alphas), rtol=0, atol=1e-5)
    assert torch.equal(diag["alpha"], new["alpha"])
    if alpha_lr > 1:
        assert set(new["alpha"].tolist()) <= {0.0, 1.0}


# ---------------------------------------------------------------------------------------------------- Per-FedAvg
@pytest.mark.parametrize("variant", ["fo", "hf"])
def test_perfedavg_with_alpha_zero_is_fedavg(variant):
    """alpha = 0: w_tilde = w and (I - 0 H) = I, so each step is SGD with step beta on D' (here the whole data)."""
    fed = quadratic_federation()
    per = _run(_alg("perfedavg", fed, alpha=0.0, variant=variant, **FULL_BATCH), 3)
    avg = _run(_alg("fedavg", fed, **FULL_BATCH), 3)
    _equal(per["global"], avg["global"], atol=1e-6)


def _hvp_case():
    torch.manual_seed(0)
    model = build_model({"name": "mlp", "hidden": [5]}, (4,), 3).double()
    p = {n: v.detach().clone() for n, v in model.named_parameters()}
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.randint(0, 3, (6,))
    loss = lambda *vals: task_loss(functional_call(model, dict(zip(p, vals)), (x,)), y)  # noqa: E731
    return model, p, x, y, loss


def test_finite_difference_hvp_matches_the_exact_one():
    model, p, x, y, loss = _hvp_case()
    u = {n: torch.randn_like(v) for n, v in p.items()}
    _, exact = torch.autograd.functional.hvp(loss, tuple(p.values()), tuple(u.values()))
    approx = finite_difference_hvp(lambda q: _grads(model, q, x, y), p, u, 1e-4)
    for n, e in zip(p, exact):
        torch.testing.assert_close(approx[n], e, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("variant", ["fo", "hf"])
def test_step_direction_is_the_maml_gradient(variant):
    """The gradient of MetaObjective is g(w_tilde; D') (FO), minus alpha H(w; D'') g(w_tilde; D') (HF; H exact here),
    with w_tilde = w - alpha g(w; D)."""
    model, p, x, y, loss = _hvp_case()
    xs, ys = torch.cat([x, x.flip(1), x * 0.5]), torch.cat([y, (y + 1) % 3, y])  # three different batches D, D', D''
    alpha, b = 0.3, len(x)
    obj = MetaObjective(alpha=alpha, variant=variant, delta=1e-4)
    leaves = {n: v.clone().requires_grad_(True) for n, v in p.items()}
    got = torch.autograd.grad(obj.value(model, leaves, {}, xs[:obj.parts * b], ys[:obj.parts * b], {}),
                              list(leaves.values()))
    inner = _grads(model, p, xs[:b], ys[:b])
    outer = _grads(model, {n: v - alpha * inner[n] for n, v in p.items()}, xs[b:2 * b], ys[b:2 * b])
    on_d2 = lambda *vals: task_loss(functional_call(model, dict(zip(p, vals)), (xs[2 * b:],)), ys[2 * b:])  # noqa: E731
    _, hv = torch.autograd.functional.hvp(on_d2, tuple(p.values()), tuple(outer.values()))
    for (n, g), h, e in zip(outer.items(), hv, got):
        torch.testing.assert_close(e, g - alpha * h if variant == "hf" else g, rtol=1e-5, atol=1e-7)


def test_perfedavg_hf_reaches_the_maml_optimum_in_closed_form():
    """F_i(w) = f_i(w - alpha grad f_i(w)) of a quadratic f_i = (w - b_i)' A_i (w - b_i)/2 + c is again quadratic with
    Hessian M_i = (I - alpha A_i) A_i (I - alpha A_i); one local step per round is gradient descent on mean_i F_i, whose
    minimum is (sum M_i)^-1 sum M_i b_i. FO and FedAvg settle elsewhere."""
    fed, alpha = quadratic_federation(), 0.05
    m_sum, mb_sum = 0, 0
    for i in range(fed.num_clients):
        x, y = design(fed, i)
        a = 2 / N * x.T @ x
        shrink = np.eye(len(a)) - alpha * a
        m = shrink @ a @ shrink
        m_sum, mb_sum = m_sum + m, mb_sum + m @ np.linalg.lstsq(x, y, rcond=None)[0]
    maml = np.linalg.solve(m_sum, mb_sum)
    hp = dict(FULL_BATCH, local_steps=1, lr=0.3, alpha=alpha, delta=1.0)  # finite differences are exact on quadratics
    hf, fo = (flat(_run(_alg("perfedavg", fed, variant=v, **hp), 50)["global"]) for v in ("hf", "fo"))
    assert np.abs(hf - maml).max() < 1e-4
    assert np.abs(fo - maml).max() > 1e-2
    assert np.abs(np.linalg.lstsq(*design(fed), rcond=None)[0] - maml).max() > 1e-2  # not FedAvg's optimum either


def test_perfedavg_evaluates_after_one_adaptation_step():
    fed = quadratic_federation()
    alg = _alg("perfedavg", fed, alpha=0.05, batch_size=N, lr=0.2)  # adapts with alpha, not the outer step
    state = alg.init()
    w = flat(state["global"])
    adapted = alg.personalized(state)
    for i in range(fed.num_clients):
        x, y = design(fed, i)
        np.testing.assert_allclose(flat({n: v[i] for n, v in adapted.items()}), w - 0.05 * 2 / N * x.T @ (x @ w - y),
                                   atol=1e-5)


# --------------------------------------------------------------------------------------------------------- FedBN
NORM_MLP = {"name": "mlp", "hidden": [8], "norm": "layer"}


def test_fedbn_first_round_is_fedavg_on_shared_and_local_on_norm(digits_fed):
    """Round 0 starts every client from one model, so its local training is FedAvg's and Local's: the shared part is
    FedAvg's average, each client's norm part is what Local trained."""
    fedbn, fedavg, local = (_alg(n, digits_fed, NORM_MLP) for n in ("fedbn", "fedavg", "local"))
    b, a, loc = _run(fedbn, 1), _run(fedavg, 1), _run(local, 1)
    norm = fedbn.norm
    assert norm and not set(norm) & set(b["shared"])  # the server holds no norm parameter
    _equal(b["shared"], {n: v for n, v in a["global"].items() if n not in norm})
    _equal(b["norm"], {n: loc["params"][n] for n in norm})
    _equal(fedbn.personalized(b), {**{n: v for n, v in a["global"].items() if n not in norm}, **b["norm"]})


def test_fedbn_norm_parameters_never_leave_their_client(digits_fed):
    """Changing one sampled client j's data changes its own norm rows and the shared part, never another client's
    norm rows; clients not sampled keep theirs exactly."""
    fedbn = _alg("fedbn", digits_fed, NORM_MLP, client_fraction=0.5)
    state = _run(fedbn, 2)
    chosen = copy.deepcopy(fedbn.ctx).sample_clients(0.5)  # the clients the next round samples
    j = int(chosen[0])
    other = copy.deepcopy(fedbn)
    x = other.ctx.train.x.clone()
    x[j] = x[j].flip(-1)
    other.ctx.train = ClientData(x=x, y=other.ctx.train.y, n=other.ctx.train.n)
    a, b = fedbn.round(state, 2), other.round(state, 2)
    rest = torch.ones(digits_fed.num_clients, dtype=torch.bool)
    idle = rest.clone()
    rest[j], idle[chosen] = False, False
    for n in fedbn.norm:
        assert torch.equal(a["norm"][n][rest], b["norm"][n][rest])
        assert not torch.equal(a["norm"][n][j], b["norm"][n][j])
        assert torch.equal(a["norm"][n][idle], state["norm"][n][idle])
    assert all(not torch.equal(a["shared"][n], b["shared"][n]) for n in a["shared"])


def test_fedbn_needs_a_norm_group(digits_fed):
    with pytest.raises(ValueError, match="'norm' parameter group"):
        _alg("fedbn", digits_fed, MLP)
