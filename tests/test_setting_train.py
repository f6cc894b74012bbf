"""What a setting may set beyond hyperparameters: its own round count (a pre-training longer than the runs that
start from it), and FedAvg's frozen parameter group (pre-training without the identity adapters)."""
from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import torch

from pcl.config import ConfigError, validate_experiment
from pcl.data.federation import Federation
from pcl.models import build_model
from pcl.results import summarize
from pcl.run import train

CONFIG = {
    "name": "settings", "kind": "federated",
    "data": {"source": {"name": "digits"},
             "partition": {"scheme": "dirichlet", "num_clients": 4, "alpha": 0.5, "seed": 0}},
    "model": {"name": "mlp", "hidden": [8], "adapter_dim": 4},
    "train": {"rounds": 4, "eval_every": 2, "engine": "vectorized", "checkpoint_every": 0},
    "algorithms": {"fedavg": {"short": {"rounds": 3}, "frozen": {"frozen": "adapter", "lr": 0.3}},
                   "local": {"default": {}}},
    "seeds": [0],
}


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    root = tmp_path_factory.mktemp("settings-fed")
    Federation.build(CONFIG["data"]).save(root)
    return root / "federation.npz"


def _train(fed, out, setting, alg="fedavg"):
    return train(copy.deepcopy(validate_experiment(CONFIG)), fed, out, algorithm=alg, setting=setting, seed=0,
                 progress=False)


def test_a_setting_trains_its_own_number_of_rounds(fed, tmp_path):
    record = _train(fed, tmp_path / "fedavg/short/seed=0", "short")
    metrics = pd.read_csv(tmp_path / "fedavg/short/seed=0/metrics.csv")
    assert sorted(set(metrics["round"])) == [2, 3]  # eval_every 2, and the setting's last round 3
    assert record["config"]["train"]["rounds"] == 3 and "rounds" not in record["hparams"]
    _train(fed, tmp_path / "local/default/seed=0", "default", alg="local")
    table = summarize([tmp_path / "fedavg/short/seed=0", tmp_path / "local/default/seed=0"], tmp_path / "out")
    assert set(table["algorithm"]) == {"fedavg", "local"}  # the shorter run counts as finished


@pytest.mark.parametrize("value", [0, 2.5, True, "10"])
def test_a_bad_setting_round_count_is_named(value):
    bad = copy.deepcopy(CONFIG)
    bad["algorithms"]["fedavg"]["short"]["rounds"] = value
    with pytest.raises(ConfigError, match=r"algorithms\.fedavg\.short: rounds="):
        validate_experiment(bad)


def test_fedavg_keeps_a_frozen_group_at_its_initial_value(fed, tmp_path):
    out = tmp_path / "fedavg/frozen/seed=0"
    _train(fed, out, "frozen")
    saved = torch.load(out / "model.pt", weights_only=True)
    model = build_model(CONFIG["model"], (64,), 10)
    adapters = model.param_groups()["adapter"]
    assert adapters
    init = {n: p.detach() for n, p in model.named_parameters()}
    record = json.loads((out / "run.json").read_text())
    assert record["hparams"]["frozen"] == "adapter"
    # the adapters' up-projections start at zero (identity adapters) and stay there; everything else moved
    for name in adapters:
        if name.endswith("up.weight") or name.endswith("up.bias"):
            assert torch.count_nonzero(saved[name]) == 0, name
    assert any(not torch.equal(saved[n], init[n]) for n in init if n not in adapters)


def test_fedavg_frozen_must_name_a_group_of_the_model(fed, tmp_path):
    cfg = copy.deepcopy(CONFIG)
    cfg["algorithms"]["fedavg"]["frozen"]["frozen"] = "adaptor"
    with pytest.raises(ValueError, match="unknown parameter group"):
        train(validate_experiment(cfg), fed, tmp_path / "x", algorithm="fedavg", setting="frozen", seed=0,
              progress=False)
