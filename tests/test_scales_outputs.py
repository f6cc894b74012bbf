"""Each scale writes its own files: results/<scale>, reports/<scale>, logs/<scale> (the Snakefile and dvc.yaml
alike); only federations, keyed by the hash of their data spec, are shared. Read from dry runs: cheap."""
from __future__ import annotations

import copy
import re

import pytest
import yaml

from test_pipeline import TINY, make_workflow, snakemake


def written(root, scale: str) -> set[str]:
    """Every output and log file a dry run at ``scale`` would write."""
    proc = snakemake(root, "-n", "--config", f"scale={scale}")
    found = re.findall(r"^\s+(?:output|log): (.+)$", proc.stdout + proc.stderr, re.M)
    return {path for line in found for path in line.split(", ")}


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    exp = {**copy.deepcopy(TINY), "scales": {"paper": {"seeds": [0, 1, 2], "train": {"rounds": 7}}}}
    return make_workflow(tmp_path_factory.mktemp("scales"), exp, "wga_bc")


def test_two_scales_never_write_the_same_file(workflow):
    small, paper = written(workflow, "small"), written(workflow, "paper")
    for scale, paths in (("small", small), ("paper", paper)):
        assert {p.split("/")[0] for p in paths} == {"data", "results", "reports", "logs"}
        assert all(p.startswith(("data/federations/", f"results/{scale}/", f"reports/{scale}/", f"logs/{scale}/"))
                   for p in paths), sorted(paths)
    shared = small & paper
    assert shared and all(p.startswith("data/federations/") for p in shared)  # same data spec: one federation


def test_dvc_stages_follow_the_scale(workflow):
    """dvc.yaml's experiment stage asks Snakemake for the report of its scale, and tracks that scale's folders."""
    from dvc.repo import Repo

    config = workflow / "workflow/config/config.yaml"
    for scale in ("small", "paper"):
        config.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), "scale": scale}, sort_keys=False))
        with Repo(str(workflow), uninitialized=True) as repo:
            stage = next(s for s in repo.index.stages if s.name == "experiment@tiny")
            metrics = [m for ms in repo.index._metrics.values() for m in ms]
        assert stage.cmd.endswith(f"reports/{scale}/tiny/report.html")
        assert sorted(str(o) for o in stage.outs) == [f"reports/{scale}/tiny", f"results/{scale}/tiny"]
        assert metrics and all(m.startswith(f"results/{scale}/") for m in metrics)
