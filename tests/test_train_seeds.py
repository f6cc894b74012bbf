"""All seeds of a setting in one process (`pcl train --all-seeds`, the train rule's job): each seed's outputs equal
those of its own process byte for byte, checkpoints go to their own folder, and a killed job resumes there."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pcl.algorithms import ALGORITHMS
from pcl.cli import app
from pcl.data.federation import Federation
from pcl.run import train, train_seeds
from conftest import kill_in_round

CONFIG = {
    "name": "seeds", "kind": "federated",
    "data": {"source": {"name": "digits"},
             "partition": {"scheme": "dirichlet", "num_clients": 4, "alpha": 0.5, "seed": 0}},
    "model": {"name": "mlp", "hidden": [8]},
    "train": {"rounds": 3, "eval_every": 1, "engine": "vectorized", "checkpoint_every": 1},
    "algorithms": {"ditto": {"default": {"client_fraction": 0.5}}},
    "seeds": [0, 1, 2],
}
OUTPUTS = ("metrics.csv", "diagnostics.csv", "model.pt")


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds-fed")
    Federation.build(CONFIG["data"]).save(root)
    return root / "federation.npz"


def test_each_seed_equals_its_own_process(fed, tmp_path):
    records = train_seeds(copy.deepcopy(CONFIG), fed, tmp_path / "together", progress=False)
    assert [r["seed"] for r in records] == [0, 1, 2]
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    for seed in (1, 2):  # the seeds that run after another one in the shared process
        alone = tmp_path / f"alone{seed}"
        subprocess.run([Path(sys.executable).parent / "pcl", "train", str(config), str(fed), str(alone), "--seed",
                        str(seed), "--no-progress"], check=True, capture_output=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
        for name in OUTPUTS:
            assert (tmp_path / "together" / f"seed={seed}" / name).read_bytes() == (alone / name).read_bytes(), name
    # and the seeds really differ (a loop that reused one seed would pass the comparison above only by luck)
    assert (tmp_path / "together/seed=0/model.pt").read_bytes() != (tmp_path / "together/seed=1/model.pt").read_bytes()


def test_killed_job_resumes_from_its_checkpoint_folder(fed, tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    train_seeds(copy.deepcopy(CONFIG), fed, reference, progress=False)
    out, ckpts = tmp_path / "out", tmp_path / "checkpoints"
    cls = ALGORITHMS["ditto"]
    original = kill_in_round(monkeypatch, cls, t=2)
    with pytest.raises(KeyboardInterrupt):  # seed 0 is killed at round 2, after checkpointing rounds 1 and 2
        train_seeds(copy.deepcopy(CONFIG), fed, out, progress=False, checkpoint_dir=ckpts)
    assert (ckpts / "seed=0/checkpoint.pt").is_file() and not list(out.rglob("checkpoint.pt"))
    monkeypatch.setattr(cls, "round", original)
    train_seeds(copy.deepcopy(CONFIG), fed, out, progress=False, checkpoint_dir=ckpts)
    for seed in CONFIG["seeds"]:
        for name in OUTPUTS:
            assert (out / f"seed={seed}" / name).read_bytes() == (reference / f"seed={seed}" / name).read_bytes()
    assert not ckpts.exists()  # every checkpoint removed with its finished run, then the empty folder


def test_cli_all_seeds_trains_every_seed_of_the_config(fed, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "seeds": [4, 7], "train": {**CONFIG["train"], "rounds": 1}}))
    result = CliRunner().invoke(app, ["train", str(config), str(fed), str(tmp_path / "runs"), "--all-seeds",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["seed=4", "seed=7"]
    assert result.output.count("ditto/default seed=") == 2


def test_single_run_checkpoint_dir_is_used(fed, tmp_path, monkeypatch):
    kill_in_round(monkeypatch, ALGORITHMS["ditto"], t=2)
    with pytest.raises(KeyboardInterrupt):
        train(copy.deepcopy(CONFIG), fed, tmp_path / "run", seed=0, progress=False, checkpoint_dir=tmp_path / "ck")
    assert (tmp_path / "ck/checkpoint.pt").is_file() and not (tmp_path / "run/checkpoint.pt").exists()
