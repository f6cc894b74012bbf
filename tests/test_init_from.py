"""Runs that start from another run's final model (`init_from: <algorithm>/<setting>`): the pre-training chain of
partial personalization. Checked: references are validated, resolved beside the run, recorded, part of the
checkpoint key, and the dependent run really starts from the referenced model."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from pcl.algorithms import ALGORITHMS
from pcl.config import ConfigError, validate_experiment
from pcl.data.federation import Federation
from pcl.io import sha256_file
from pcl.run import train
from conftest import kill_in_round

CONFIG = {
    "name": "chain", "kind": "federated",
    "data": {"source": {"name": "digits"},
             "partition": {"scheme": "dirichlet", "num_clients": 4, "alpha": 0.5, "seed": 0}},
    "model": {"name": "mlp", "hidden": [8]},
    "train": {"rounds": 3, "eval_every": 3, "engine": "vectorized", "checkpoint_every": 0},
    "algorithms": {"fedavg": {"pretrain": {}},
                   "fedsim": {"head": {"personal": "head", "init_from": "fedavg/pretrain"}}},
    "seeds": [0, 1],
}


@pytest.fixture(scope="module")
def fed_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("chain-fed")
    Federation.build(CONFIG["data"]).save(root)
    return root


def _run(fed_dir, root, alg, setting, seed=0, config=CONFIG):
    out = root / "chain" / alg / setting / f"seed={seed}"
    train(copy.deepcopy(config), fed_dir / "federation.npz", out, algorithm=alg, setting=setting, seed=seed,
          progress=False)
    return out


def test_references_must_name_another_setting_without_cycles():
    bad = copy.deepcopy(CONFIG)
    bad["algorithms"]["fedsim"] = {"a": {"init_from": "fedsim/b"}, "b": {"init_from": "fedsim/a"},
                                   "c": {"init_from": "fedavg/missing"}}
    with pytest.raises(ConfigError) as err:
        validate_experiment(bad)
    text = str(err.value)
    assert "fedsim.a.init_from" in text and "cycle" in text and "fedsim.b.init_from" in text
    assert "'fedavg/missing' is not a setting" in text
    validate_experiment(CONFIG)  # the chain itself is fine


def test_dependent_run_needs_the_referenced_model(fed_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="run fedavg/pretrain with seed 0 first"):
        _run(fed_dir, tmp_path, "fedsim", "head")


def test_dependent_run_starts_from_the_referenced_model_and_records_it(fed_dir, tmp_path, monkeypatch):
    pre = _run(fed_dir, tmp_path, "fedavg", "pretrain")
    saved = torch.load(pre / "model.pt", weights_only=True)
    seen = {}
    cls = ALGORITHMS["fedsim"]
    original = cls.init

    def spy(self):
        state = original(self)
        seen.update({n: v.clone() for n, v in state["global"].items()})
        return state

    monkeypatch.setattr(cls, "init", spy)
    dep = _run(fed_dir, tmp_path, "fedsim", "head")
    assert set(seen) == set(saved) and all(torch.equal(seen[n], saved[n]) for n in saved)
    record = json.loads((dep / "run.json").read_text())
    assert record["init_sha256"] == sha256_file(pre / "model.pt")
    assert record["hparams"]["init_from"] == str((pre / "model.pt").resolve())


def test_a_changed_init_model_invalidates_a_dependent_checkpoint(fed_dir, tmp_path, monkeypatch, capsys):
    cfg = copy.deepcopy(CONFIG)
    cfg["train"]["checkpoint_every"] = 1
    pre = _run(fed_dir, tmp_path, "fedavg", "pretrain", config=cfg)
    cls = ALGORITHMS["fedsim"]
    original = kill_in_round(monkeypatch, cls, 2)
    with pytest.raises(KeyboardInterrupt):
        _run(fed_dir, tmp_path, "fedsim", "head", config=cfg)
    monkeypatch.setattr(cls, "round", original)
    other = _run(fed_dir, tmp_path / "other", "fedavg", "pretrain", seed=1, config=cfg)  # a different model
    (pre / "model.pt").write_bytes((other / "model.pt").read_bytes())
    capsys.readouterr()
    _run(fed_dir, tmp_path, "fedsim", "head", config=cfg)
    assert "resuming" not in capsys.readouterr().err


def test_a_scale_mapping_with_replace_is_not_merged_into_the_base():
    from pcl.config import apply_scale

    base = {"data": {"partition": {"scheme": "dirichlet", "alpha": 0.5, "num_clients": 4}},
            "model": {"name": "cnn", "channels": [8]},
            "scales": {"paper": {"data": {"partition": {"_replace": True, "scheme": "natural"}},
                                 "model": {"name": "resnet18_gn"}}}}
    paper = apply_scale(base, "paper")
    assert paper["data"]["partition"] == {"scheme": "natural"}  # replaced whole, marker dropped
    assert paper["model"] == {"name": "resnet18_gn", "channels": [8]}  # merged key by key


def test_the_workflow_trains_the_pre_training_first_and_chains_each_seed(tmp_path):
    """Through Snakemake: the dependent job's config stays valid on its own (it carries the setting it starts from),
    the pre-training job runs first, and each seed starts from that seed's model.pt."""
    from test_pipeline import make_workflow, snakemake

    exp = {**copy.deepcopy(CONFIG), "train": {**CONFIG["train"], "rounds": 2, "eval_every": 2}}
    root = make_workflow(tmp_path, exp)
    snakemake(root, "--cores", "1", "results/small/chain/summary.csv")
    for seed in exp["seeds"]:
        run = json.loads((root / f"results/small/chain/fedsim/head/seed={seed}/run.json").read_text())
        assert run["init_sha256"] == sha256_file(root / f"results/small/chain/fedavg/pretrain/seed={seed}/model.pt")
