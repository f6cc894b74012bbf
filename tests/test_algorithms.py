"""Algorithm semantics: Ditto's and FedProx's limits, collaboration beating Local on digits (determinism, resume and
backend equality are checked for every algorithm in tests/test_contract.py)."""
from __future__ import annotations

import pytest
import torch

from pcl.algorithms import ALGORITHMS, Context, make_hparams
from pcl.engine import LocalTrainer
from pcl.models import build_model
from pcl.results import summarize
from pcl.run import train

EXPERIMENT = {
    "name": "digits_short", "kind": "federated",
    "data": {"source": {"name": "digits"},
             "partition": {"scheme": "dirichlet", "num_clients": 20, "alpha": 0.3, "seed": 0}},
    "model": {"name": "mlp", "hidden": [64]},
    "train": {"rounds": 30, "eval_every": 10, "engine": "vectorized", "checkpoint_every": 0},
    "algorithms": {"local": {"default": {"lr": 0.1}}, "fedavg": {"default": {"lr": 0.1}},
                   "fedavg_ft": {"default": {"lr": 0.1, "ft_lr": 0.1}},
                   "ditto": {"default": {"lr": 0.1, "lam": 1.0}}},
    "seeds": [0, 1],
}


def _algorithm(name, fed, seed=0, **hp):
    model = build_model({"name": "mlp", "hidden": [32]}, fed.input_shape, fed.num_classes)
    ctx = Context(model, fed, LocalTrainer(model), seed=seed)
    cls = ALGORITHMS[name]
    return cls(make_hparams(cls.Hparams, hp), ctx)


def test_ditto_lambda_zero_is_local(digits_fed):
    ditto, local = _algorithm("ditto", digits_fed, lam=0.0), _algorithm("local", digits_fed)
    d = ditto.round(ditto.init(), 0)
    loc = local.round(local.init(), 0)
    for k in loc["params"]:
        torch.testing.assert_close(d["personal"][k], loc["params"][k], rtol=0, atol=0)


def test_ditto_lambda_infinite_is_fedavg_model(digits_fed):
    ditto = _algorithm("ditto", digits_fed, lam=1e12)
    state = ditto.init()
    for t in range(3):
        before = state["global"]
        state = ditto.round(state, t)
        for k, v in state["personal"].items():  # every personal model sits on the global model it was pulled to
            torch.testing.assert_close(v, before[k].expand_as(v), rtol=0, atol=1e-7)
    moderate = _algorithm("ditto", digits_fed, lam=1.0)
    s = moderate.round(moderate.init(), 0)
    gap = max((s["personal"][k] - s["global"][k]).abs().max().item() for k in s["global"])
    assert gap > 1e-3  # a finite lambda really personalizes


def test_fedavg_samples_only_the_chosen_clients(digits_fed):
    alg = _algorithm("fedavg", digits_fed, client_fraction=0.25)
    chosen = alg.ctx.sample_clients(0.25)
    assert len(chosen) == 5 and len(set(chosen.tolist())) == 5


def test_unknown_hyperparameter_is_named():
    with pytest.raises(ValueError, match="lamda"):
        make_hparams(ALGORITHMS["ditto"].Hparams, {"lamda": 1.0})


@pytest.fixture(scope="module")
def short_runs(tmp_path_factory):
    from pcl.data.federation import Federation

    root = tmp_path_factory.mktemp("runs")
    Federation.build(EXPERIMENT["data"]).save(root / "fed")
    dirs = []
    for alg in EXPERIMENT["algorithms"]:
        for seed in EXPERIMENT["seeds"]:
            d = root / alg / f"seed={seed}"
            train(EXPERIMENT, root / "fed", d, algorithm=alg, seed=seed, progress=False)
            dirs.append(d)
    return root, dirs


def test_fedavg_ft_and_ditto_beat_local_on_digits(short_runs):
    root, dirs = short_runs
    table = summarize(dirs, root / "summary")
    mean = table.query("selection == 'final' and metric == 'acc' and stat == 'mean'").set_index("algorithm")["mean"]
    assert mean["fedavg_ft"] > mean["local"] + 0.02, mean
    assert mean["ditto"] > mean["local"] + 0.02, mean


def test_fedprox_mu_zero_is_fedavg_bit_for_bit(digits_fed):
    prox, avg = _algorithm("fedprox", digits_fed, mu=0.0, client_fraction=0.5), \
        _algorithm("fedavg", digits_fed, client_fraction=0.5)
    s, a = prox.init(), avg.init()
    for t in range(2):
        s, a = prox.round(s, t), avg.round(a, t)
    assert all(torch.equal(s["global"][k], a["global"][k]) for k in a["global"])


def test_fedprox_pulls_local_models_to_the_global_one(digits_fed):
    """Local drift from the round's start shrinks as mu grows (the proximal term's purpose)."""
    def drift(mu):
        alg = _algorithm("fedprox", digits_fed, mu=mu, local_epochs=3.0, lr=0.1)
        state = alg.init()
        after = alg.round(state, 0)
        return sum(float((after["global"][k] - state["global"][k]).norm()) for k in state["global"])
    d0, d1, d10 = drift(0.0), drift(1.0), drift(10.0)
    assert d0 > d1 > d10 > 0


def test_trainable_specs_and_group_step_sizes(digits_fed):
    ctx = _algorithm("local", digits_fed).ctx
    names = [n for n, _ in ctx.model.named_parameters()]
    head = ["head.weight", "head.bias"]
    assert ctx.trainable(None) is None and ctx.trainable("all") is None
    assert ctx.trainable("head") == head
    assert ctx.trainable("-head") == [n for n in names if n not in head]
    assert ctx.trainable(["input", "head.bias"]) == ["layers.0.weight", "layers.0.bias", "head.bias"]
    with pytest.raises(ValueError, match="unknown parameter group"):
        ctx.trainable("heads")
    with pytest.raises(ValueError, match="selects no parameter"):
        ctx.trainable(["head", "-head"])
    hp = make_hparams(ALGORITHMS["local"].Hparams, {"lr": 0.1, "local_steps": 1, "local_epochs": None})
    p0 = ctx.broadcast(ctx.init_params())
    everyone = torch.arange(ctx.num_clients)
    frozen_head = ctx.local_train(p0, everyone, hp, group_lr={"head": 0.0})
    assert torch.equal(frozen_head["head.weight"], p0["head.weight"])
    assert not torch.equal(frozen_head["layers.0.weight"], p0["layers.0.weight"])
    only_head = ctx.local_train(p0, everyone, hp, trainable="-input")
    assert torch.equal(only_head["layers.0.weight"], p0["layers.0.weight"])
    assert not torch.equal(only_head["head.weight"], p0["head.weight"])
