"""The engine: vectorized local training equals the reference loop; plans, mixing and evaluation are exact."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from pcl.data.transforms import rotate
from pcl.data.types import ClientData
from pcl.engine import LocalSpec, LocalTrainer, Objective, Prox, broadcast, evaluate, mix, weighted_mean
from pcl.engine.batches import make_plan
from pcl.models import build_model, param_names
from pcl.topology import metropolis_hastings, ring


def _data(K=6, n_max=30, shape=(1, 8, 8), dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(4, n_max + 1, (K,), generator=g)
    return ClientData(torch.rand(K, n_max, *shape, generator=g, dtype=dtype), torch.randint(0, 10, (K, n_max), generator=g), n)


def _params(model, K, dtype=torch.float32):
    return broadcast({k: v.detach().to(dtype) for k, v in model.named_parameters()}, K)


@pytest.mark.parametrize("name", ["linear", "mlp", "cnn"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_vectorized_equals_reference_loop(name, optimizer):
    dtype = torch.float64  # Adam divides by sqrt(v): float64 keeps round-off from being amplified
    data = _data(dtype=dtype)  # unequal client sizes: clients stop at different steps
    model = build_model({"name": name}, (1, 8, 8), 10).to(dtype)
    p0 = _params(model, data.num_clients, dtype)
    anchor = {k: v + 0.1 for k, v in p0.items()}
    objective = Objective() + Prox("anchor", 0.5, exact=True)
    spec = LocalSpec(lr=0.1, batch_size=5, local_epochs=2, optimizer=optimizer, weight_decay=1e-3)
    clients = torch.arange(data.num_clients)
    out = {}
    for backend, memory in [("vectorized", 512.0), ("vectorized", 1e-6), ("loop", 512.0)]:  # 1e-6 MB: chunks of 1
        out[backend, memory] = LocalTrainer(model, backend=backend, memory_mb=memory).train(
            p0, data, clients, spec, generator=torch.Generator().manual_seed(3), objective=objective,
            extras={"anchor": anchor})
    ref = out["loop", 512.0]
    for k in p0:
        for key, got in out.items():
            torch.testing.assert_close(got[k], ref[k], rtol=1e-9, atol=1e-10, msg=f"{key} {k}")
        assert not torch.equal(ref[k], p0[k]), f"{k} did not train"


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_engine_step_equals_torch_optim_on_a_module(optimizer):
    """The engine's functional optimizers and differentiated terms against PyTorch's own, on one client."""
    data = _data(K=3, dtype=torch.float64)
    model = build_model({"name": "mlp", "hidden": [8]}, (1, 8, 8), 10).to(torch.float64)
    p0 = _params(model, 3, torch.float64)
    anchor = {k: torch.zeros_like(v) for k, v in p0.items()}
    spec = LocalSpec(lr=0.05, batch_size=4, local_steps=6, optimizer=optimizer, weight_decay=1e-2)
    out = LocalTrainer(model, backend="vectorized").train(
        p0, data, torch.arange(3), spec, generator=torch.Generator().manual_seed(5),
        objective=Objective() + Prox("anchor", 0.3, exact=False), extras={"anchor": anchor})
    plan = spec.plan(data.n, torch.Generator().manual_seed(5))
    for j in range(3):
        net = copy.deepcopy(model)
        net.load_state_dict({k: v[j] for k, v in p0.items()})
        cls = torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam
        opt = cls(net.parameters(), lr=0.05, weight_decay=1e-2)
        for s in range(6):
            idx = plan.index[s, j]
            opt.zero_grad()
            prox = 0.15 * sum((p ** 2).sum() for p in net.parameters())
            (F.cross_entropy(net(data.x[j, idx]), data.y[j, idx]) + prox).backward()
            opt.step()
        for k, v in net.named_parameters():
            torch.testing.assert_close(out[k][j], v.detach(), rtol=1e-9, atol=1e-11)


def test_trainable_group_leaves_the_rest_untouched():
    data = _data()
    model = build_model({"name": "mlp", "hidden": [16]}, (1, 8, 8), 10)
    p0 = _params(model, data.num_clients)
    head = param_names(model, "head")
    out = LocalTrainer(model).train(p0, data, torch.arange(data.num_clients), LocalSpec(lr=0.1, batch_size=4),
                                    generator=torch.Generator().manual_seed(0), trainable=head)
    for k in p0:
        assert torch.equal(out[k], p0[k]) != (k in head), k


def test_per_parameter_step_sizes():
    data = _data()
    model = build_model({"name": "mlp", "hidden": [16]}, (1, 8, 8), 10)
    p0 = _params(model, data.num_clients)
    spec = LocalSpec(lr=0.1, batch_size=4, local_steps=1)
    run = lambda lrs: LocalTrainer(model).train(p0, data, torch.arange(data.num_clients), spec,  # noqa: E731
                                                generator=torch.Generator().manual_seed(0), lrs=lrs)
    base, scaled = run(None), run({"head.weight": 0.3})
    torch.testing.assert_close(scaled["head.weight"] - p0["head.weight"], 3 * (base["head.weight"] - p0["head.weight"]))
    torch.testing.assert_close(scaled["layers.0.weight"], base["layers.0.weight"], rtol=0, atol=0)


def test_drop_last_counts_only_full_batches():
    n = torch.tensor([25, 9, 40])
    assert make_plan(n, 10, epochs=1, drop_last=True).active.sum(0).tolist() == [2, 1, 4]
    assert make_plan(n, 10, epochs=1).active.sum(0).tolist() == [3, 1, 4]


def test_plan_covers_each_epoch_exactly_once():
    n = torch.tensor([7, 12, 3])
    plan = make_plan(n, batch_size=4, epochs=3, generator=torch.Generator().manual_seed(0))
    steps = plan.active.sum(0)
    assert steps.tolist() == [int(np.ceil(3 * k / 4)) for k in n.tolist()]
    for j, k in enumerate(n.tolist()):
        stream = plan.index[: steps[j], j].reshape(-1)
        assert int(stream.max()) < k
        for e in range(len(stream) // k):  # every full epoch is a permutation of the client's samples
            assert sorted(stream[e * k:(e + 1) * k].tolist()) == list(range(k))


def test_plan_rejects_bad_input():
    with pytest.raises(ValueError, match="batch_size"):
        make_plan(torch.tensor([3]), batch_size=0, epochs=1)
    with pytest.raises(ValueError, match="exactly one"):
        make_plan(torch.tensor([3]), batch_size=2, epochs=1, steps=2)
    with pytest.raises(ValueError, match="at least one sample"):
        make_plan(torch.tensor([3, 0]), batch_size=2, epochs=1)


def test_mixing_preserves_average_and_weighted_mean():
    g = torch.Generator().manual_seed(0)
    p = {"w": torch.randn(8, 3, 2, generator=g, dtype=torch.float64), "b": torch.randn(8, 5, generator=g, dtype=torch.float64)}
    W = torch.from_numpy(metropolis_hastings(ring(8)))
    mixed = p
    for _ in range(400):
        mixed = mix(W, mixed)
    for k in p:
        torch.testing.assert_close(mixed[k].mean(0), p[k].mean(0))
        torch.testing.assert_close(mixed[k], p[k].mean(0).expand_as(p[k]), atol=1e-8, rtol=0)
    w = torch.tensor([1.0, 3.0, 0, 0, 0, 0, 0, 0])
    torch.testing.assert_close(weighted_mean(p, w)["b"], 0.25 * p["b"][0] + 0.75 * p["b"][1])


def test_evaluate_matches_per_client_computation():
    data = _data(K=4)
    model = build_model({"name": "mlp", "hidden": [8]}, (1, 8, 8), 10)
    g = torch.Generator().manual_seed(1)
    p = {k: torch.randn(4, *v.shape, generator=g) for k, v in model.named_parameters()}
    got = evaluate(model, p, data, max_rows=50)  # small chunks exercise the chunking
    for k in range(4):
        n = int(data.n[k])
        out = torch.func.functional_call(model, {n_: v[k] for n_, v in p.items()}, (data.x[k, :n],))
        assert got["loss"][k].item() == pytest.approx(F.cross_entropy(out, data.y[k, :n]).item(), rel=1e-5)
        assert got["acc"][k].item() == pytest.approx((out.argmax(1) == data.y[k, :n]).float().mean().item())
        assert got["n"][k].item() == n


def test_rotation_direction_is_consistent():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 2, 4:7] = 1.0  # an asymmetric stroke
    smooth = F.avg_pool2d(F.pad(x, (1, 1, 1, 1)), 3, stride=1)
    interp = rotate(smooth, 89.9999)  # interpolation path, a hair short of 90 degrees
    torch.testing.assert_close(interp, torch.rot90(smooth, 1, dims=(-2, -1)), atol=1e-3, rtol=0)
    torch.testing.assert_close(rotate(smooth, 180), torch.flip(smooth, dims=(-2, -1)))
