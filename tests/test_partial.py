"""Partial model personalization (FedSim, FedAlt; Pillutla et al. 2022), its baselines (pFedMe, FedPer, FedRep,
LG-FedAvg) and the server optimizers. Every expected value is computed independently of the code under test: by
torch.optim, hand-written loops, closed forms, or another registered algorithm (FedAvg)."""
from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

import pcl.algorithms.fedalt  # noqa: F401  (registration)
import pcl.algorithms.fedper  # noqa: F401
import pcl.algorithms.fedrep  # noqa: F401
import pcl.algorithms.fedsim  # noqa: F401
import pcl.algorithms.lg_fedavg  # noqa: F401
from pcl.algorithms import ALGORITHMS, Context, make_hparams
from pcl.algorithms.hparams import HparamError
from pcl.algorithms.pfedme import PFedMeStep, inner_solve
from pcl.engine import LocalTrainer, broadcast
from pcl.engine.server_opt import ServerOpt, pseudo_gradient
from pcl.models import build_model


def _algorithm(name, fed, seed=0, model=None, **hp):
    model = model or build_model({"name": "mlp", "hidden": [16]}, fed.input_shape, fed.num_classes)
    ctx = Context(model, fed, LocalTrainer(model), seed=seed)
    cls = ALGORITHMS[name]
    return cls(make_hparams(cls.Hparams, hp), ctx)


def _run(alg, rounds):
    alg.ctx.rngs.begin("init", 0)
    state = alg.init()
    for t in range(rounds):
        alg.ctx.rngs.begin("train", t)
        state = alg.round(state, t)
    return state


def _same(a, b, atol=0.0):
    assert set(a) == set(b)
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=0, atol=atol, msg=n)


# ----------------------------------------------------------------------------------------------- server optimizers
def _stack(k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(k, 3, 2, generator=g), "b": torch.randn(k, 5, generator=g)}


def test_server_sgd_lr_1_is_plain_weighted_averaging():
    local, w = _stack(), torch.tensor([1.0, 3.0, 0.5, 2.0])
    u = {n: torch.randn(v.shape[1:]) for n, v in local.items()}
    opt = ServerOpt("sgd", 1.0)
    new, _ = opt.step(u, pseudo_gradient(u, local, w), opt.init(u))
    for n, v in local.items():
        mean = sum(w[i] * v[i] for i in range(4)) / w.sum()  # by hand
        torch.testing.assert_close(new[n], mean, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name,kw", [("sgd", {"lr": 0.3, "momentum": 0.9}), ("adam", {"lr": 0.05})])
def test_server_optimizer_matches_torch_optim(name, kw):
    """Three server steps equal torch.optim's SGD/Adam fed the same pseudo-gradients as .grad."""
    u = {n: torch.randn(v.shape[1:], generator=torch.Generator().manual_seed(9)) for n, v in _stack().items()}
    ref = {n: v.clone().requires_grad_() for n, v in u.items()}
    torch_opt = (torch.optim.SGD if name == "sgd" else torch.optim.Adam)(list(ref.values()), **kw)
    opt = ServerOpt(name, **kw)
    state, w = opt.init(u), torch.tensor([1.0, 2.0, 3.0, 4.0])
    for r in range(3):
        g = pseudo_gradient(u, _stack(seed=r + 1), w)
        u, state = opt.step(u, g, state)
        for n, p in ref.items():
            p.grad = g[n].clone()
        torch_opt.step()
    for n in u:
        torch.testing.assert_close(u[n], ref[n].detach(), rtol=1e-5, atol=1e-6)


def test_server_adam_first_step_by_hand():
    """Adam's first bias-corrected step is lr * g / (|g| + eps) elementwise."""
    u, g = {"a": torch.tensor([1.0, -2.0])}, {"a": torch.tensor([0.5, -4.0])}
    opt = ServerOpt("adam", lr=0.1)
    new, state = opt.step(u, g, opt.init(u))
    torch.testing.assert_close(new["a"], torch.tensor([1.0 - 0.1, -2.0 + 0.1]), rtol=0, atol=1e-6)
    assert state["t"] == 1


def test_server_opt_rejects_bad_settings():
    with pytest.raises(ValueError, match="unknown"):
        ServerOpt("lamb")
    with pytest.raises(ValueError, match="server_lr"):
        ServerOpt("sgd", 0.0)


# ------------------------------------------------------------------------------------------------- FedSim / FedAlt
def test_fedsim_without_personal_part_is_fedavg(digits_fed):
    """personal: none (the shared part is the full model), server SGD lr 1, FedAvg's n_i weights -> FedAvg."""
    sim = _algorithm("fedsim", digits_fed, personal="none", weighting="examples", client_fraction=0.5, lr=0.05)
    avg = _algorithm("fedavg", digits_fed, client_fraction=0.5, lr=0.05)
    s, a = _run(sim, 3), _run(avg, 3)
    _same(s["global"], a["global"], atol=1e-6)
    assert "personal" not in s


def test_fedsim_with_zero_personal_step_keeps_v_and_trains_u_like_frozen_head_fedavg(digits_fed):
    alg = _algorithm("fedsim", digits_fed, personal="head", personal_lr=0.0, weighting="examples", lr=0.05)
    ctx = alg.ctx
    s0 = _run(alg, 0)
    s1 = _run(alg, 1)  # full participation: every client is sampled
    _same(s1["personal"], s0["personal"])
    ctx.rngs.begin("train", 0)  # the same batches, by the engine directly: FedAvg on the body with the head frozen
    everyone = torch.arange(ctx.num_clients)
    local = ctx.local_train(ctx.broadcast(s0["global"]), everyone, alg.hp, trainable="-head")
    n = ctx.train.n.double()
    for name, v in local.items():
        expected = (v.double() * (n / n.sum()).view(-1, *[1] * (v.dim() - 1))).sum(0).float()
        torch.testing.assert_close(s1["global"][name], expected, rtol=0, atol=1e-6)


def test_fedalt_with_no_personal_steps_leaves_v_unchanged(digits_fed):
    alg = _algorithm("fedalt", digits_fed, personal_epochs=0.0)
    s0 = _run(alg, 0)
    s2 = _run(alg, 2)
    _same(s2["personal"], s0["personal"])
    assert (s2["global"]["layers.0.weight"] - s0["global"]["layers.0.weight"]).abs().max() > 0


def test_fedalt_personal_step_trains_v_alone_from_the_broadcast_u(digits_fed):
    """gamma_u ~ 0: u stays at u^(k) (so the personal step froze it) and v_i^(k+1) is head-only local SGD from u^(k)."""
    alg = _algorithm("fedalt", digits_fed, lr=1e-12, personal_lr=0.1)
    ctx = alg.ctx
    s0, s1 = _run(alg, 0), _run(alg, 1)
    for n in alg.shared:
        torch.testing.assert_close(s1["global"][n], s0["global"][n], rtol=0, atol=1e-6)  # averaging rounds
    ctx.rngs.begin("train", 0)
    everyone = torch.arange(ctx.num_clients)
    v = ctx.local_train(ctx.broadcast(s0["global"]), everyone, alg.hp, trainable="head", lr=0.1)
    _same(s1["personal"], {n: v[n] for n in alg.personal})
    assert (s1["personal"]["head.weight"] - s0["personal"]["head.weight"]).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["fedsim", "fedalt"])
def test_unsampled_clients_keep_their_personal_part_bit_for_bit(name, digits_fed):
    alg = _algorithm(name, digits_fed, clients_per_round=4, lr=0.1)
    state = _run(alg, 1)
    alg.ctx.rngs.begin("train", 1)
    chosen = alg.ctx.sample_clients(count=4)  # the draw the round will make (same generator)
    alg.ctx.rngs.begin("train", 1)
    new = alg.round(state, 1)
    others = torch.tensor([k for k in range(alg.ctx.num_clients) if k not in chosen.tolist()])
    for n in new["personal"]:
        assert torch.equal(new["personal"][n][others], state["personal"][n][others])
        assert (new["personal"][n][chosen] - state["personal"][n][chosen]).abs().flatten(1).amax(1).min() > 0
    assert set(new["personal"]) == {"head.weight", "head.bias"}


@pytest.mark.parametrize("name", ["fedsim", "fedalt"])
def test_stateless_clients_restart_from_the_default_personal_part(name, digits_fed):
    """A stateless round equals a stateful round whose clients' v_i were first reset to the default v^0."""
    kw = dict(clients_per_round=10, lr=0.1)
    stateless = _algorithm(name, digits_fed, stateless_clients=True, finetune_epochs=0.0, **kw)
    stateful = _algorithm(name, digits_fed, **kw)
    a, b = _run(stateless, 1), _run(stateful, 1)
    assert "personal" not in a
    v0 = {n: b["global"][n] for n in b["personal"]}
    assert any((b["personal"][n] - v0[n]).abs().max() > 0 for n in v0)  # stateful clients did personalize
    reset = {**b, "personal": {n: v.expand_as(b["personal"][n]).clone() for n, v in v0.items()}}
    for alg, s in ((stateless, a), (stateful, reset)):
        alg.ctx.rngs.begin("train", 1)
    a2, b2 = stateless.round(a, 1), stateful.round(reset, 1)
    _same(a2["global"], b2["global"])
    _same({n: stateless.personalized(a2)[n] for n in v0}, broadcast(v0, digits_fed.num_clients))  # no fine-tune


def test_finetune_moves_only_the_personal_part_and_leaves_the_state(digits_fed):
    alg = _algorithm("fedalt", digits_fed, clients_per_round=5, finetune_epochs=2.0, lr=0.1)
    state = _run(alg, 1)
    before = {k: {n: v.clone() for n, v in d.items()} for k, d in state.items() if k != "server"}
    alg.ctx.rngs.begin("eval", 1)
    p = alg.personalized(state)
    for n in alg.shared:
        assert torch.equal(p[n], state["global"][n].expand_as(p[n]))
    assert all((p[n] - state["personal"][n]).abs().max() > 0 for n in alg.personal)
    for k, d in before.items():
        _same(state[k], d)


@pytest.mark.parametrize("name", ["fedsim", "fedalt"])
def test_personal_l2_pulls_v_to_its_default(name, digits_fed):
    """c -> infinity pins v (and its fine-tune) to v^0; a finite c moves it less than c = 0 does."""
    def gap(c):
        alg = _algorithm(name, digits_fed, lr=0.1, finetune_epochs=1.0, personal_l2=c)
        state = _run(alg, 2)
        alg.ctx.rngs.begin("eval", 2)
        p = alg.personalized(state)
        return max(float((v - state["global"][n]).abs().max()) for n in alg.personal
                   for v in (state["personal"][n], p[n]))
    assert gap(1e9) < 1e-6
    assert 0 < gap(1.0) < gap(0.0)


def test_batches_weighting_counts_local_batches_per_epoch(digits_fed):
    alg = _algorithm("fedsim", digits_fed, batch_size=16)
    clients = torch.arange(5)
    expected = torch.tensor([math.ceil(int(n) / 16) for n in digits_fed.client_data("train").n[:5]])
    assert torch.equal(alg.weights(clients), expected)


def test_init_from_a_saved_model(digits_fed, tmp_path):
    model = build_model({"name": "mlp", "hidden": [16], "adapter_dim": 4}, digits_fed.input_shape,
                        digits_fed.num_classes)
    g = torch.Generator().manual_seed(3)
    saved = {n: torch.randn(p.shape, generator=g) for n, p in model.named_parameters() if not n.startswith("adapters")}
    torch.save(saved, tmp_path / "pre.pt")
    alg = _algorithm("fedalt", digits_fed, model=model, personal="adapter", init_from=str(tmp_path / "pre.pt"))
    w = _run(alg, 0)["global"]
    for n, v in saved.items():
        assert torch.equal(w[n], v)
    assert all(w[n].abs().max() == 0 for n in w if n.startswith("adapters") and ".up." in n)  # identity adapters
    torch.save({k: v for k, v in saved.items() if k != "head.bias"}, tmp_path / "nohead.pt")
    torch.save({**saved, "head.bias": torch.zeros(3)}, tmp_path / "shape.pt")
    for bad in ("nohead.pt", "shape.pt"):
        with pytest.raises(ValueError, match="does not fit"):
            _run(_algorithm("fedalt", digits_fed, model=model, init_from=str(tmp_path / bad)), 0)


def test_bad_personal_parts_are_rejected(digits_fed):
    with pytest.raises(ValueError, match="no parameter"):  # the plain MLP declares no adapters
        _algorithm("fedsim", digits_fed, personal="adapter")
    with pytest.raises(ValueError, match="unknown parameter group"):
        _algorithm("fedsim", digits_fed, personal="decoder")
    with pytest.raises(ValueError, match="nothing is shared"):
        _algorithm("fedalt", digits_fed, personal="all")
    with pytest.raises(HparamError, match="exactly one"):
        _algorithm("fedalt", digits_fed, personal_epochs=1.0, personal_steps=3)


@pytest.mark.parametrize("name,base,hp", [
    ("fedper", "fedsim", dict(personal="head", weighting="examples", finetune_epochs=0.0)),
    ("lg_fedavg", "fedsim", dict(personal="-head", weighting="examples", finetune_epochs=0.0)),
    ("fedrep", "fedalt", dict(personal="head", personal_epochs=10.0, weighting="examples", finetune_epochs=0.0)),
])
def test_baselines_are_special_cases(name, base, hp, digits_fed):
    a = _run(_algorithm(name, digits_fed, clients_per_round=5), 2)
    b = _run(_algorithm(base, digits_fed, clients_per_round=5, **hp), 2)
    for k in ("global", "personal"):
        _same(a[k], b[k])


# ---------------------------------------------------------------------------------------------------------- pFedMe
def _regression(seed=0, b=12, d=3):
    g = torch.Generator().manual_seed(seed)
    x, w_true = torch.randn(b, d, generator=g), torch.randn(d, generator=g)
    return x, x @ w_true + 0.1 * torch.randn(b, generator=g)


def test_pfedme_inner_solve_reaches_the_closed_form_prox_on_a_quadratic():
    """argmin_theta mean((x theta + c - y)^2) + lam/2 ||(theta, c) - (w, w_c)||^2, solved by the normal equations."""
    x, y = _regression()
    model, lam = torch.nn.Linear(3, 1), 0.7
    w = {"weight": torch.randn(1, 3), "bias": torch.randn(1)}
    loss = lambda p: ((functional_call(model, p, (x,)).squeeze(-1) - y) ** 2).mean()  # noqa: E731
    theta = inner_solve(loss, w, lam, lr=0.2, steps=300)
    xa = torch.cat([x, torch.ones(len(x), 1)], 1).double()
    wa = torch.cat([w["weight"].flatten(), w["bias"]]).double()
    a = 2 / len(x) * xa.T @ xa + lam * torch.eye(4, dtype=torch.double)
    exact = torch.linalg.solve(a, 2 / len(x) * xa.T @ y.double() + lam * wa).float()
    torch.testing.assert_close(torch.cat([theta["weight"].flatten(), theta["bias"]]), exact, rtol=0, atol=1e-5)
    plain = inner_solve(loss, w, 1e-9, lr=0.2, steps=300)  # no pull: the least-squares fit, far from the prox
    assert (torch.cat([plain["weight"].flatten(), plain["bias"]]) - exact).abs().max() > 1e-2


def test_pfedme_proximal_gradient_is_not_zero():
    """With no data term, theta - w shrinks by (1 - lr lam) per step (the official code's detached term: no move)."""
    w, start = {"p": torch.zeros(4)}, {"p": torch.tensor([1.0, -2.0, 3.0, 0.5])}
    theta = inner_solve(lambda p: p["p"].sum() * 0.0, w, lam=2.0, lr=0.1, steps=3, start=start)
    torch.testing.assert_close(theta["p"], start["p"] * 0.8 ** 3, rtol=0, atol=1e-6)


def test_pfedme_local_step_is_the_moreau_envelope_step(digits_fed):
    """One full-batch local step from w equals w - lr lam (w - theta~), theta~ by K autograd steps of eq. 7."""
    model = build_model({"name": "linear"}, digits_fed.input_shape, digits_fed.num_classes)
    alg = _algorithm("pfedme", digits_fed, model=model)
    ctx, c = alg.ctx, 2
    n = int(ctx.train.n[c])
    x, y = ctx.train.x[c, :n], ctx.train.y[c, :n]
    w = ctx.init_params()
    lam, lr, inner_lr, k = 0.5, 0.3, 0.2, 3
    step = PFedMeStep(lam=lam, inner_lr=inner_lr, inner_steps=k)
    hp = make_hparams(alg.Hparams, {"lr": lr, "batch_size": n, "local_epochs": None, "local_steps": 1})
    got = ctx.local_train(broadcast(w, 1), torch.tensor([c]), hp, objective=step)
    theta = {nm: v.clone().requires_grad_() for nm, v in w.items()}
    for _ in range(k):
        out = torch.nn.functional.linear(x.flatten(1), theta["fc.weight"], theta["fc.bias"])
        h = torch.nn.functional.cross_entropy(out, y) + lam / 2 * sum(((theta[m] - w[m]) ** 2).sum() for m in w)
        grads = torch.autograd.grad(h, list(theta.values()))
        theta = {m: (v - inner_lr * gr).detach().requires_grad_() for (m, v), gr in zip(theta.items(), grads)}
    for nm in w:
        torch.testing.assert_close(got[nm][0], w[nm] - lr * lam * (w[nm] - theta[nm].detach()), rtol=1e-4, atol=1e-6)


def test_pfedme_evaluates_its_personalized_model(digits_fed):
    alg = _algorithm("pfedme", digits_fed, clients_per_round=5)
    state = _run(alg, 1)
    alg.ctx.rngs.begin("eval", 1)
    theta = alg.personalized(state)
    assert all((theta[n] - state["global"][n]).abs().max() > 0 for n in theta)
    alg0 = _algorithm("pfedme", digits_fed, clients_per_round=5, finetune_epochs=0.0)
    _same(alg0.personalized(state), broadcast(state["global"], digits_fed.num_clients))
