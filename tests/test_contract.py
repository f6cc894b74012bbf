"""The engine contract, checked for every registered algorithm: a new algorithm is covered by registering it.

On a tiny federation with planted clusters (so cluster-aware baselines such as an oracle run too), for a few
rounds: the loop and vectorized backends agree, the same seed gives the same bytes,
a killed and resumed run gives the same bytes, and how often a run evaluates never changes what it computes.
"""
from __future__ import annotations

import copy

import pandas as pd
import pytest

from pcl.algorithms import ALGORITHMS
from pcl.data.federation import Federation
from pcl.run import train
from conftest import kill_in_round

ROUNDS = 3
CONFIG = {
    "name": "contract", "kind": "federated",
    "data": {"source": {"name": "digits"},
             "partition": {"scheme": "clusters", "num_clients": 6, "num_clusters": 2, "alpha": 0.5, "seed": 0}},
    "model": {"name": "mlp", "hidden": [8]},
    "train": {"rounds": ROUNDS, "eval_every": 1, "engine": "vectorized", "checkpoint_every": 0},
    "seeds": [0],
}
# small but real settings: partial participation where an algorithm has it, so client sampling is exercised
SETTINGS = {name: ({"client_fraction": 0.5} if "client_fraction" in cls.Hparams.__dataclass_fields__ else {})
            for name, cls in ALGORITHMS.items()}
# the bilevel algorithms' paper defaults (600 SGP steps and depth 200 per round) would take minutes here
SETTINGS.get("pdbo", {}).update({"sgp_steps": 20, "depth": 5})
SETTINGS.get("sgp", {}).update({"steps_per_round": 5})
SETTINGS.get("apfl", {}).update({"adaptive": True})  # the adaptive-alpha path has the most state


@pytest.fixture(scope="module")
def fed_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    Federation.build(CONFIG["data"]).save(root)
    return root


MODELS = {"fedbn": {"name": "mlp", "hidden": [8], "norm": "layer"}}  # algorithms that need a particular model


def _run(fed_dir, out, name, seed=0, **train_cfg):
    cfg = copy.deepcopy(CONFIG)
    cfg["model"] = MODELS.get(name, cfg["model"])
    cfg["algorithms"] = {name: {"default": SETTINGS[name]}}
    cfg["train"].update(train_cfg)
    train(cfg, fed_dir, out, algorithm=name, seed=seed, progress=False)
    return out


def _metrics(d):
    return pd.read_csv(d / "metrics.csv")


@pytest.fixture(scope="module")
def reference(fed_dir, tmp_path_factory):
    """One plain run per algorithm (vectorized, evaluated every round)."""
    root = tmp_path_factory.mktemp("reference")
    return {name: _run(fed_dir, root / name, name) for name in ALGORITHMS}


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_same_seed_same_bytes_other_seed_other_bytes(name, fed_dir, reference, tmp_path):
    again = _run(fed_dir, tmp_path / "again", name)
    for f in ("metrics.csv", "diagnostics.csv"):
        assert (again / f).read_bytes() == (reference[name] / f).read_bytes(), f
    other = _run(fed_dir, tmp_path / "other", name, seed=1)
    assert (other / "metrics.csv").read_bytes() != (reference[name] / "metrics.csv").read_bytes()


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_loop_equals_vectorized(name, fed_dir, reference, tmp_path):
    loop, vec = _metrics(_run(fed_dir, tmp_path / "loop", name, engine="loop")), _metrics(reference[name])
    assert loop[["round", "client", "split", "metric"]].equals(vec[["round", "client", "split", "metric"]])
    assert (loop["value"] - vec["value"]).abs().max() < 1e-4


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_evaluating_less_often_changes_nothing(name, fed_dir, reference, tmp_path):
    sparse = _metrics(_run(fed_dir, tmp_path / "sparse", name, eval_every=ROUNDS))
    dense = _metrics(reference[name])
    last = dense[dense["round"] == ROUNDS].reset_index(drop=True)
    assert set(sparse["round"]) == {ROUNDS}
    pd.testing.assert_frame_equal(sparse.reset_index(drop=True), last, check_exact=True)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_killed_and_resumed_run_gives_the_same_bytes(name, fed_dir, reference, tmp_path, monkeypatch):
    cls = ALGORITHMS[name]
    original = kill_in_round(monkeypatch, cls, 2)
    with pytest.raises(KeyboardInterrupt):
        _run(fed_dir, tmp_path, name, checkpoint_every=1)
    assert (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "metrics.csv").exists()
    monkeypatch.setattr(cls, "round", original)
    _run(fed_dir, tmp_path, name, checkpoint_every=1)
    for f in ("metrics.csv", "diagnostics.csv"):
        assert (tmp_path / f).read_bytes() == (reference[name] / f).read_bytes(), f
