"""Objective pieces against closed forms, differentiable local trajectories in both backends, and peer scoring."""
from __future__ import annotations

import pytest
import torch
from torch.func import functional_call
from torch.nn import functional as F

from pcl.data.types import ClientData
from pcl.engine import LocalSpec, LocalTrainer, Linear, Mixture, Objective, Prox, TaskLoss
from pcl.engine.scores import scores
from pcl.models import build_model

DT = torch.float64


def _data(K=4, n_max=12, seed=0, classes=5):
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(5, n_max + 1, (K,), generator=g)
    return ClientData(torch.randn(K, n_max, 6, generator=g, dtype=DT), torch.randint(0, classes, (K, n_max), generator=g), n)


def _model(classes=5):
    return build_model({"name": "mlp", "hidden": [7]}, (6,), classes).to(DT)


def _params(model, K, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {k: 0.5 * torch.randn(K, *v.shape, generator=g, dtype=DT) for k, v in model.named_parameters()}


def _value(objective, model, p, x, y, extras):
    return objective.value(model, p, {}, x, y, extras)


def test_class_weighted_task_loss_is_the_weighted_mean():
    model, data = _model(), _data()
    p = {k: v[0] for k, v in _params(model, 1).items()}
    x, y = data.x[0, :8], data.y[0, :8]
    w = torch.rand(5, dtype=DT)
    got = _value(Objective(loss=TaskLoss("cw")), model, p, x, y, {"cw": w})
    ce = F.cross_entropy(functional_call(model, p, (x,)), y, reduction="none")
    assert got.item() == pytest.approx((w[y] * ce).sum().item() / 8, rel=1e-12)


def test_mixture_is_the_negative_log_of_the_mixed_probability():
    model, data = _model(), _data()
    learners = {k: v[:3] for k, v in _params(model, 3).items()}  # one client holding M = 3 learners
    x, y = data.x[0, :8], data.y[0, :8]
    w = torch.tensor([0.2, 0.5, 0.3], dtype=DT)
    got = _value(Objective(predict=Mixture("mix")), model, learners, x, y, {"mix": w})
    probs = sum(w[m] * functional_call(model, {k: v[m] for k, v in learners.items()}, (x,)).softmax(-1) for m in range(3))
    assert got.item() == pytest.approx(-probs[torch.arange(8), y].log().mean().item(), rel=1e-12)


def test_prox_and_linear_terms_add_their_closed_form_gradients():
    model, data = _model(), _data()
    p0 = _params(model, 4)
    anchor, corr = _params(model, 4, seed=2), _params(model, 4, seed=3)
    spec = LocalSpec(lr=0.1, batch_size=4, local_steps=1)
    trainer = LocalTrainer(model, backend="vectorized")
    train = lambda obj, extras: trainer.train(p0, data, torch.arange(4), spec,  # noqa: E731
                                              generator=torch.Generator().manual_seed(0), objective=obj, extras=extras)
    plain = train(Objective(), {})
    prox = train(Objective() + Prox("a", 0.7, exact=False), {"a": anchor})
    lin = train(Objective() + Linear("c"), {"c": corr})
    exact = train(Objective() + Prox("a", 0.7, exact=True), {"a": anchor})
    for k in p0:  # one SGD step: the extra gradient is lam (p - a), resp. c; the exact map is (p' + s a)/(1 + s)
        torch.testing.assert_close(prox[k], plain[k] - 0.1 * 0.7 * (p0[k] - anchor[k]))
        torch.testing.assert_close(lin[k], plain[k] - 0.1 * corr[k])
        torch.testing.assert_close(exact[k], (plain[k] + 0.07 * anchor[k]) / 1.07)
    zero = train(Objective() + Prox("a", 0.0, exact=False), {"a": anchor})
    assert all(torch.equal(zero[k], plain[k]) for k in p0)  # lam = 0 changes no bit


@pytest.mark.parametrize("backend", ["vectorized", "loop"])
def test_hypergradient_through_local_steps_matches_finite_differences(backend):
    """d(validation loss after 3 local steps)/d(per-client class weights), in both backends."""
    model, data, val = _model(), _data(), _data(seed=7)
    p0 = _params(model, 4)
    spec = LocalSpec(lr=0.3, batch_size=4, local_steps=3, optimizer="adam")
    trainer = LocalTrainer(model, backend=backend)
    objective = Objective(loss=TaskLoss("cw"))

    def outer(cw):
        out = trainer.train(p0, data, torch.arange(4), spec, generator=torch.Generator().manual_seed(0),
                            objective=objective, extras={"cw": cw})
        losses = [F.cross_entropy(functional_call(model, {k: v[i] for k, v in out.items()}, (val.x[i],)), val.y[i])
                  for i in range(4)]
        return torch.stack(losses).sum()

    cw = torch.rand(4, 5, dtype=DT, generator=torch.Generator().manual_seed(4)) + 0.5
    leaf = cw.clone().requires_grad_()
    hyper = torch.autograd.grad(outer(leaf), leaf)[0]
    fd = torch.zeros_like(cw)
    eps = 1e-6
    for i in range(4):
        for c in range(5):
            e = torch.zeros_like(cw)
            e[i, c] = eps
            fd[i, c] = (outer(cw + e) - outer(cw - e)) / (2 * eps)
    torch.testing.assert_close(hyper, fd, rtol=1e-5, atol=1e-8)
    assert hyper.abs().max() > 1e-4
    # the same gradient from torch.func (the path hypergradient estimators use)
    torch.testing.assert_close(torch.func.grad(outer)(cw.detach()), hyper, rtol=1e-9, atol=1e-12)


def test_hypergradient_is_the_same_in_both_backends():
    model, data = _model(), _data()
    p0 = _params(model, 4)
    spec = LocalSpec(lr=0.2, batch_size=3, local_epochs=1)  # unequal sizes: unequal step counts
    grads = []
    for backend in ("vectorized", "loop"):
        cw = torch.ones(4, 5, dtype=DT, requires_grad=True)
        out = LocalTrainer(model, backend=backend).train(p0, data, torch.arange(4), spec,
                                                          generator=torch.Generator().manual_seed(1),
                                                          objective=Objective(loss=TaskLoss("cw")), extras={"cw": cw})
        grads.append(torch.autograd.grad(sum((v ** 2).sum() for v in out.values()), cw)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("as_matrix", [False, True])
def test_peer_scores_equal_a_double_loop(as_matrix):
    model, data = _model(), _data(K=5)
    params = _params(model, 3)  # M = 3 models scored on K = 5 clients
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(5, 3, generator=g) < 0.6
    pairs = mask if as_matrix else mask.nonzero()
    got = scores(model, params, data, pairs, max_rows=30, max_params=200)  # tiny chunks
    for r, (i, j) in enumerate(mask.nonzero().tolist()):
        n = int(data.n[i])
        out = functional_call(model, {k: v[j] for k, v in params.items()}, (data.x[i, :n],))
        loss = F.cross_entropy(out, data.y[i, :n]).item()
        acc = (out.argmax(-1) == data.y[i, :n]).double().mean().item()
        at = (i, j) if as_matrix else r
        assert got["loss"][at].item() == pytest.approx(loss, rel=1e-10)
        assert got["acc"][at].item() == pytest.approx(acc)
    if as_matrix:
        assert torch.isnan(got["loss"][~mask]).all()


def test_peer_scores_reject_bad_pairs():
    model, data = _model(), _data(K=5)
    params = _params(model, 3)
    with pytest.raises(ValueError, match="pair mask"):
        scores(model, params, data, torch.ones(4, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[P, 2\]"):
        scores(model, params, data, torch.zeros(4, 3, dtype=torch.long))
