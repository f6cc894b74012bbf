"""The DAC reproduction's experiments and report: the paper-scale settings are the spec's (dac.md 1.2/1.4),
the small-scale federations plant the spec's clusters, and the report notebook takes the generic report's parameters."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from pcl.config import apply_scale
from pcl.data.partition import partition
from pcl.data.sources import digits

ROOT = Path(__file__).parents[1]
EXPERIMENTS = ROOT / "workflow/config/experiments"
GOSSIP = ("dac", "dac_var", "random_gossip", "oracle_gossip", "pens")


def load(name: str, scale: str = "small") -> dict:
    return apply_scale(yaml.safe_load((EXPERIMENTS / f"{name}.yaml").read_text()), scale)


def parameters(notebook: str) -> list[str]:
    nb = json.loads((ROOT / notebook).read_text())
    (cell,) = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    return [line.split("=")[0].strip() for line in "".join(cell["source"]).splitlines() if "=" in line]


def test_report_notebook_takes_the_generic_reports_parameters():
    assert parameters("notebooks/dac.ipynb") == parameters("notebooks/report.ipynb")
    for name in ("dac_covariate", "dac_label", "dac_fmnist"):
        assert load(name)["report"]["notebook"] == "notebooks/dac.ipynb"


@pytest.mark.parametrize("name, source", [("dac_covariate", "cifar10"), ("dac_label", "cifar10"),
                                          ("dac_fmnist", "fashion_mnist")])
def test_paper_scale_is_the_official_setting(name, source):
    cfg = load(name, "paper")
    part = cfg["data"]["partition"]
    assert cfg["data"]["source"]["name"] == source
    assert part["num_clients"] == 100 and part["per_client"] == {"train": 400, "val": 100, "test": 100}
    assert cfg["train"]["rounds"] == 100 and len(cfg["seeds"]) >= 3
    assert set(cfg["algorithms"]) == {*GOSSIP, "local", "fedavg"}
    for alg, settings in cfg["algorithms"].items():
        (hp,) = settings.values()
        assert hp.get("local_epochs") == 3                       # E = 3 for everyone
        assert alg not in GOSSIP or hp["order"] == "sequential"  # the official update order
        assert alg in GOSSIP or (hp["optimizer"], hp["lr"], hp["batch_size"]) == ("adam", 0.01, 8)
    assert cfg["algorithms"]["dac"]["default"]["tau"] == 30
    # the spec's LeNets: CIFAR conv(3->6,5)-pool-conv(6->16,5)-pool-fc400-120-84-10; FMNIST conv 16/32 (3x3), fc 800-64-10
    expected = ({"name": "cnn", "channels": [6, 16], "hidden": [120, 84], "kernel": 5, "padding": 0}
                if source == "cifar10" else
                {"name": "cnn", "channels": [16, 32], "hidden": [64], "kernel": 3, "padding": 0})
    assert cfg["model"] == expected
    # the official pools hold exactly enough samples: 60k CIFAR-10 images = 100 clients x 600
    pool = {"cifar10": 60_000, "fashion_mnist": 70_000}[source]
    assert part["num_clients"] * sum(part["per_client"].values()) <= pool


def test_small_federations_plant_the_spec_clusters():
    pool = digits()
    cov = partition(pool, load("dac_covariate")["data"]["partition"])
    assert np.bincount(cov.cluster).tolist() == [28, 8, 2, 2]          # 70/20/5/5% of 40, in index order
    assert cov.rotation.tolist() == [0] * 28 + [180] * 8 + [10] * 2 + [350] * 2
    lab = partition(pool, load("dac_label")["data"]["partition"])
    assert lab.cluster.tolist() == [0] * 16 + [1] * 24                 # 40% vehicles, 60% animals
    for k in range(40):
        held = set(pool.y[np.concatenate([lab.train[k], lab.val[k], lab.test[k]])].tolist())
        assert held <= ({0, 1, 8, 9} if k < 16 else {2, 3, 4, 5, 6, 7})
