"""The papers' reported numbers (pcl.reported): declared in a config, checked by validation, laid beside ours."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pcl import reported, results
from pcl.config import ConfigError, load_experiment, validate_experiment

ROOT = Path(__file__).resolve().parents[1]
PARTIAL = ROOT / "workflow/config/experiments/partial.yaml"


def summary(rows: list[tuple[str, str, str, float, float]]) -> pd.DataFrame:
    """A summary.csv's rows: (algorithm, setting, stat, mean, ci95) at best_val, 3 seeds."""
    return pd.DataFrame([{"experiment": "x", "algorithm": a, "setting": s, "selection": "best_val", "metric": "acc",
                          "stat": st, "n_seeds": 3, "mean": m, "ci95": c} for a, s, st, m, c in rows])


CONFIG = {"algorithms": {"fedalt": {"input": {}}, "local": {"default": {}}, "fedavg": {"default": {}}},
          "reported": {"source": "a table", "unit": "percent", "rows": [
              {"label": "FedAlt", "run": "fedalt/input", "values": {"wmean": 93.52, "wbottom10": 86.5},
               "spread": {"wmean": 0.04}},
              {"label": "Centralized", "values": {"wmean": 95.0}},
              {"label": "Local", "run": "local/default", "values": {"wmean": 80.0}}]}}


def test_ours_is_scaled_to_the_papers_unit_and_the_difference_keeps_our_ci():
    table = reported.compare(CONFIG, summary([("fedalt", "input", "wmean", 0.9, 0.011),
                                              ("fedalt", "input", "wbottom10", 0.8, 0.05)]))
    first = table.iloc[0]
    assert (first["paper row"], first["run"], first["stat"]) == ("FedAlt", "fedalt/input", "wmean")
    assert first["paper"] == "93.52 ± 0.04"
    assert first["ours"] == "90.00 ± 1.10"            # 100 × 0.9 ± 100 × 0.011
    assert first["ours − paper"] == "-3.52 ± 1.10"    # 90 − 93.52, the paper's value being a constant
    assert table.iloc[1]["ours − paper"] == f"{80 - 86.5:+.2f} ± 5.00"
    assert table.iloc[1]["paper"] == "86.50"          # no spread given: the bare value


def test_a_fraction_unit_is_not_scaled():
    config = copy.deepcopy(CONFIG)
    config["reported"]["unit"] = "fraction"
    config["reported"]["rows"][0]["values"] = {"wmean": 0.95}
    config["reported"]["rows"][0].pop("spread")
    row = reported.compare(config, summary([("fedalt", "input", "wmean", 0.9, 0.01)])).iloc[0]
    assert (row["ours"], row["ours − paper"]) == ("0.90 ± 0.01", "-0.05 ± 0.01")


def test_rows_not_run_here_or_not_yet_run_are_listed_empty_and_undeclared_runs_last():
    table = reported.compare(CONFIG, summary([("fedalt", "input", "wmean", 0.9, 0.01)]),
                             runs=["fedalt/input", "fedavg/default", "local/default"])
    by_label = table.set_index(["paper row", "stat"])
    assert by_label.loc[("Centralized", "wmean"), "run"] == "(not run here)"
    assert by_label.loc[("Centralized", "wmean"), "ours"] == "" and by_label.loc[("Local", "wmean"), "seeds"] == 0
    assert list(table["run"].iloc[-2:]) == ["fedavg/default"] * 2  # one row per statistic the paper reports
    assert list(table["paper row"].iloc[-2:]) == ["(not in the paper)"] * 2 and set(table["paper"].iloc[-2:]) == {""}


def test_only_the_asked_selection_is_read():
    rows = summary([("local", "default", "wmean", 0.5, 0.01)])
    rows = pd.concat([rows, rows.assign(selection="final", mean=0.7)])
    (local,) = [r for r in reported.compare(CONFIG, rows, "final").itertuples() if r.run == "local/default"]
    assert local.ours == "70.00 ± 1.00"


def test_value_reads_the_papers_number_of_a_run():
    assert reported.value(CONFIG, "fedalt/input", "wbottom10") == 86.5
    assert math.isnan(reported.value(CONFIG, "fedalt/input", "mean"))
    assert math.isnan(reported.value({}, "fedalt/input", "wmean"))


def test_the_heading_says_whether_the_numbers_are_comparable():
    assert "not the paper's setting" in reported.heading(CONFIG, "small")
    assert "reproduction error" in reported.heading(CONFIG, "paper")
    assert "a table" in reported.heading(CONFIG, "small")


def test_the_schemas_statistics_are_the_results_statistics():
    schema = yaml.safe_load((ROOT / "pcl/schemas/experiment.schema.yaml").read_text())
    assert tuple(schema["$defs"]["reported_stats"]["propertyNames"]["enum"]) == results.STATS


@pytest.fixture
def partial() -> dict:
    return yaml.safe_load(PARTIAL.read_text())


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["rows"][0].update(run="fedalt/nonexistent"), "reported.rows.0 ('FedAvg (no personalization"),
    (lambda r: r["rows"][0].update(run="fedalt/nonexistent"), "'fedalt/nonexistent' is not a run of this experiment"),
    (lambda r: r["rows"][1]["values"].update(accuracy=93.0), "reported.rows.1.values"),
    (lambda r: r["rows"][1].update(spread={"bottom10": 0.1}), "spread for ['bottom10'] without a value"),
    (lambda r: r["rows"][1]["values"].update(wmean="93.2"), "'93.2' is not of type 'number'"),
    (lambda r: r.pop("source"), "'source' is a required property"),
    (lambda r: r.update(unit="percentage"), "reported.unit"),
])
def test_a_bad_declaration_is_refused_and_named(partial, edit, message):
    edit(partial["reported"])
    with pytest.raises(ConfigError, match="invalid experiment config") as err:
        validate_experiment(partial, "partial.yaml")
    assert message in str(err.value)


def test_the_declared_experiments_validate_and_every_declared_run_exists():
    declaring = [p for p in sorted((ROOT / "workflow/config/experiments").glob("*.yaml"))
                 if "reported" in yaml.safe_load(p.read_text())]
    assert {p.stem for p in declaring} >= {"partial", "pdbo_static", "pdbo_stochastic_directed",
                                           "pdbo_stochastic_undirected"}
    for path in declaring:
        for scale in ("small", "paper"):
            exp = load_experiment(path, scale)
            runs = {f"{a}/{s}" for a, settings in exp["algorithms"].items() for s in settings}
            assert {r["run"] for r in exp["reported"]["rows"] if "run" in r} <= runs
