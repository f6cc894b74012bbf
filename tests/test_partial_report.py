"""The partial-personalization experiment and its report notebook agree with each other and the spec."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from pcl.config import load_experiment

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "workflow/config/experiments/partial.yaml"
NOTEBOOK = ROOT / "notebooks/partial.ipynb"
SPEC = ROOT / "docs/papers/partial-personalization.md"


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def parameters(path: Path) -> list[str]:
    """Names assigned in the notebook's papermill ``parameters`` cell."""
    (cell,) = [c for c in cells(path) if "parameters" in c.get("metadata", {}).get("tags", [])]
    return [t.id for node in ast.parse("".join(cell["source"])).body for t in node.targets]


def paper_dict() -> dict:
    """The config's ``reported`` rows as (personal part, method) -> (mean, ± or None, 10th percentile)."""
    methods = {"fedavg_ft": "FedAvg+FT", "fedalt": "FedAlt", "fedsim": "FedSim"}
    out = {}
    for row in load_experiment(CONFIG)["reported"]["rows"]:
        alg, part = row["run"].split("/")
        key = ("none", "FedAvg") if row["run"] == "fedavg/pretrain" else (part, methods[alg])
        out[key] = (row["values"]["wmean"], row.get("spread", {}).get("wmean"), row["values"]["wbottom10"])
    return out


@pytest.fixture(scope="module")
def config() -> dict:
    return load_experiment(CONFIG)


def test_parameters_cell_matches_the_generic_report():
    assert parameters(NOTEBOOK) == parameters(ROOT / "notebooks/report.ipynb")


def test_config_declares_the_notebook_and_the_papers_setting(config):
    assert config["report"]["notebook"] == "notebooks/partial.ipynb"
    assert len(config["seeds"]) >= 3
    assert 50 <= config["data"]["partition"]["num_clients"] <= 100
    for alg in ("fedalt", "fedsim"):
        for setting, hp in config["algorithms"][alg].items():
            assert hp["clients_per_round"] == 10 and hp["finetune_epochs"] == 5, f"{alg}/{setting}"
    for setting, hp in config["algorithms"]["fedavg_ft"].items():
        assert hp["ft_epochs"] == 5 and hp["ft_group"] == setting
        assert hp["client_fraction"] * config["data"]["partition"]["num_clients"] == 10


def test_every_init_from_names_a_run_of_the_experiment(config):
    runs = {f"{a}/{s}" for a, settings in config["algorithms"].items() for s in settings}
    chained = [hp["init_from"] for settings in config["algorithms"].values() for hp in settings.values()
               if "init_from" in hp]
    assert chained and set(chained) == {"fedavg/pretrain"} <= runs


def test_every_claim_names_runs_of_the_experiment(config):
    runs = {f"{a}/{s}" for a, settings in config["algorithms"].items() for s in settings}
    for claim in config["claims"]:
        assert claim["lhs"] in runs and (not isinstance(claim["rhs"], str) or claim["rhs"] in runs), claim["claim"]


def test_paper_numbers_are_the_specs():
    """Parse the spec's EMNIST table (section 2.5) independently and compare with what the config declares."""
    text = SPEC.read_text()
    table = text[text.index("**[V]** EMNIST:"):text.index("**[V]** StackOverflow")]
    rows = [line for line in table.splitlines() if line.startswith("| ") and re.search(r"\d", line)]
    parts = {"none (FedAvg)": "none", "input layer": "input", "output layer": "head", "adapter": "adapter"}
    expected = {}
    for line in rows:
        name, *values = [c.strip() for c in line.strip("|").split("|")]
        for method, value in zip(("FedAvg+FT", "FedAlt", "FedSim"), values):
            m = re.fullmatch(r"\**([\d.]+)(?:±([\d.]+))?\**\s*\(([\d.]+)\)", value)
            if m:
                key = (parts[name], "FedAvg" if parts[name] == "none" else method)
                expected[key] = (float(m[1]), float(m[2]) if m[2] else None, float(m[3]))
    assert len(expected) == 10
    assert paper_dict() == expected
