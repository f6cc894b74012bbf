"""DVC on top of the workflow: in a temporary git repository, repro, no-op repro, metrics diff, experiments, push to
the default local remote and pull into a fresh clone (slow); and, fast, the views DVC prints (`dvc metrics show`
fits a terminal) and the experiment files in the form `dvc exp run -S` writes them (setting one value changes one
line; workflow/scripts/dvc_param_form.py puts a file in that form)."""
from __future__ import annotations

import difflib
import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pcl import results
from test_pipeline import BIN, REPO, TINY, make_workflow, run

sys.path.insert(0, str(REPO / "workflow/scripts"))
import dvc_param_form  # noqa: E402

EXPERIMENTS = sorted((REPO / "workflow/config/experiments").glob("*.yaml"))
TERMINAL = 200  # columns


def dvc(root, *args, **kwargs):
    return run([BIN / "dvc", *args], root, **kwargs)


def git(root, *args):
    return subprocess.run(["git", "-c", "user.name=pcl-test", "-c", "user.email=pcl@test", *args], cwd=root,
                          check=True, capture_output=True, text=True)


def dvc_for(root, experiments: list[str]) -> None:
    """Point the repository's dvc.yaml at other experiments: its foreach list, metrics and plots."""
    spec = yaml.safe_load((root / "dvc.yaml").read_text())
    spec["stages"]["experiment"]["foreach"] = experiments
    spec["metrics"] = [f"results/${{scale}}/{e}/metrics.json" for e in experiments]
    spec["plots"] = [f"reports/${{scale}}/{e}/figures/clients_by_run.png" for e in experiments]
    (root / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


@pytest.mark.slow
def test_repro_metrics_experiments_and_remote(tmp_path):
    root = make_workflow(tmp_path / "repo", TINY, package=True)
    dvc_for(root, ["tiny"])
    git(root, "init", "-q")
    (root / ".gitignore").write_text("/data\n/results\n/reports\n/logs\n/.snakemake\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "workflow")

    dvc(root, "repro")
    assert (root / "reports/small/tiny/report.html").exists()
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert {"federations", "experiment@tiny"} <= set(lock["stages"])
    first = (root / "results/small/tiny/summary.csv").read_bytes()
    # a second repro has nothing to do, and the workspace matches dvc.lock
    again = dvc(root, "repro").stdout
    assert "Stage 'experiment@tiny' didn't change, skipping" in again and "Running stage" not in again
    assert "Data and pipelines are up to date." in dvc(root, "status").stdout
    shown = json.loads(dvc(root, "metrics", "show", "--json").stdout)
    assert set(shown[""]["data"]["results/small/tiny/metrics.json"]["data"]) == {"best", "local", "claims"}
    git(root, "add", "-A")
    git(root, "commit", "-qm", "results")

    # a parameter change reruns what it changes: dropping seed 1 retrains each setting (one job trains all its
    # seeds) on seed 0 alone, with seed 0's results unchanged byte for byte, and redoes the summary and report
    trained = {p: p.read_bytes() for p in (root / "results/small/tiny").glob("*/*/seed=0/metrics.csv")}
    assert trained
    dvc(root, "exp", "run", "-S", "workflow/config/experiments/tiny.yaml:seeds=[0]")
    assert {p: p.read_bytes() for p in trained} == trained
    assert not list((root / "results/small/tiny").glob("*/*/seed=1"))
    diff = json.loads(dvc(root, "metrics", "diff", "--json").stdout)["results/small/tiny/metrics.json"]
    summary = pd.read_csv(root / "results/small/tiny/summary.csv").query(
        "algorithm == 'local' and selection == 'best_val' and stat == 'mean'")
    assert diff["local.acc"]["new"] == pytest.approx(summary["mean"].item())  # now the mean of seed 0 alone
    table = pd.read_csv(io.StringIO(dvc(root, "exp", "show", "--no-pager", "--csv").stdout))
    committed = table[(table["typ"] == "baseline") & (table["rev"] != "workspace")]
    assert list(committed["seeds"]) == ["[0, 1]"] and list(table[table["typ"] == "branch_base"]["seeds"]) == ["[0]"]

    # back to the committed state: DVC restores the committed tables, byte for byte, with nothing to redo
    git(root, "checkout", "--", ".")
    dvc(root, "checkout", "--force")
    assert (root / "results/small/tiny/summary.csv").read_bytes() == first
    assert "Data and pipelines are up to date." in dvc(root, "status").stdout

    # the default remote is a folder next to the repository: push, then pull into a fresh clone
    dvc(root, "push")
    assert any((tmp_path / "pcl-dvc-remote").rglob("*"))
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(root), str(clone))
    dvc(clone, "pull")
    assert (clone / "reports/small/tiny/report.html").read_bytes() == \
        (root / "reports/small/tiny/report.html").read_bytes()
    assert "Data and pipelines are up to date." in dvc(clone, "status").stdout


# ------------------------------------------------------------------------------------- what DVC prints


def summary_table(means: dict[tuple[str, str], dict[str, float]], metric: str = "acc") -> pd.DataFrame:
    """A summary.csv-shaped table: {(algorithm, setting): {stat: mean}} at both selections (final = mean - 0.1)."""
    rows = [("e", alg, setting, selection, metric, stat, 2, value - (0.1 if selection == "final" else 0), 0.01)
            for (alg, setting), stats in means.items() for selection in results.SELECTIONS
            for stat, value in stats.items()]
    return pd.DataFrame(rows, columns=["experiment", "algorithm", "setting", "selection", "metric", "stat",
                                       "n_seeds", "mean", "ci95"])


def test_metrics_json_holds_the_headline_of_the_best_method_and_local():
    table = summary_table({
        ("local", "default"): {"mean": 0.70, "bottom10": 0.50, "gain_mean": 0.0},
        ("ditto", "lam1"): {"mean": 0.80, "bottom10": 0.55, "gain_mean": 0.10},
        ("ditto", "lam0.1"): {"mean": 0.75, "bottom10": 0.65, "gain_mean": 0.05},
        ("fedavg", "default"): {"mean": 0.60, "bottom10": 0.20, "gain_mean": -0.10}})
    assert results.metrics_dict(table) == {  # read at best_val; Local's own gain (0) is not repeated
        "best": {"method": "ditto/lam1", "acc": 0.80, "p10": 0.55, "gain": 0.10},
        "local": {"acc": 0.70, "p10": 0.50}}
    # mse: lower is better, so the best method has the smallest error
    mse = summary_table({("local", "default"): {"mean": 2.0, "bottom10": 4.0},
                         ("a", "x"): {"mean": 1.0, "bottom10": 3.0}, ("b", "x"): {"mean": 3.0, "bottom10": 5.0}},
                        metric="mse")
    assert results.metrics_dict(mse)["best"] == {"method": "a/x", "mse": 1.0, "p10": 3.0}
    # without validation data every run has only `final`: the headline is read there
    final = table[table["selection"] == "final"]
    assert results.metrics_dict(final)["local"] == {"acc": pytest.approx(0.60), "p10": pytest.approx(0.40)}


def test_claim_counts_drop_only_a_zero_untestable():
    assert results.claims_dict({"holds": 0, "fails": 1, "inconclusive": 0, "untestable": 0}) == \
        {"holds": 0, "fails": 1, "inconclusive": 0}
    assert results.claims_dict({"holds": 1, "fails": 0, "inconclusive": 0, "untestable": 2})["untestable"] == 2


def test_metrics_show_of_the_default_set_fits_a_terminal():
    """`dvc metrics show` prints one column per key over every file: with the default set's real method names,
    DVC's own table (dvc.compare.metrics_table) stays within TERMINAL columns."""
    from dvc.compare import metrics_table

    config = yaml.safe_load((REPO / "workflow/config/config.yaml").read_text())
    files = {}
    for name in config["experiments"]:
        exp = yaml.safe_load((REPO / f"workflow/config/experiments/{name}.yaml").read_text())
        claims = {"holds": 10, "fails": 10, "inconclusive": 10}  # two digits: the widest a count gets here
        if exp["kind"] == "federated":
            # the longest method name, so the `best.method` column is as wide as it can get
            methods = {(alg, setting): {"mean": 0.123456789, "bottom10": 0.123456789, "gain_mean": -0.123456789}
                       for alg, settings in exp["algorithms"].items() for setting in settings}
            longest = max((m for m in methods if m[0] != results.LOCAL), key=lambda m: len("/".join(m)))
            local = [m for m in methods if m[0] == results.LOCAL]
            metrics = results.metrics_dict(summary_table({m: methods[m] for m in [longest, *local]}))
            files[f"results/small/{name}/metrics.json"] = {"data": {**metrics, "claims": claims}}
        else:
            files[f"results/small/{name}/metrics.json"] = {"data": {"claims": claims}}
    table = metrics_table({"workspace": {"data": files}}, precision=5, round_digits=True)
    widths = [max(len(str(v)) for v in [key, *table.column(key)]) for key in table.keys()]
    assert sum(widths) + 4 * (len(widths) - 1) <= TERMINAL, dict(zip(table.keys(), widths))


# --------------------------------------------------------------------------- `dvc exp run -S` edits one line


FLOWY = """\
name: demo
description: >
  A long description that somebody wrapped by hand at a width well past the eighty columns DVC keeps,
  in two lines.
data: {source: {name: digits}, partition: {scheme: dirichlet, num_clients: 20, alpha: 0.3, seed: 0}}
base: &base {lr: 0.1, batch_size: 8}
algorithms:
  ditto: {default: {<<: *base, lam: 0.1, client_fraction: 0.2, local_epochs: 1, momentum: 0.9}}
train: {rounds: 30, eval_every: 5}  # a comment DVC keeps
seeds: [0, 1, 2]
claims:
  - {claim: "Ditto beats Local", lhs: ditto, op: ">", rhs: local, source: "a source that is far too long to fit on one line"}
"""


def int_leaf(doc: dict) -> str:
    """The dotted key of an integer parameter: train.rounds where there is one, else the first integer found."""
    if isinstance(doc.get("train"), dict) and isinstance(doc["train"].get("rounds"), int):
        return "train.rounds"
    stack = [("", doc)]
    while stack:
        prefix, node = stack.pop(0)
        for key, value in node.items():
            if isinstance(value, int) and not isinstance(value, bool):
                return f"{prefix}{key}"
            if isinstance(value, dict):
                stack.append((f"{prefix}{key}.", value))
    raise AssertionError("no integer parameter")


def one_line_changed(text: str, override_key: str) -> list[str]:
    value = yaml.safe_load(text)
    for part in override_key.split("."):
        value = value[part]
    new = dvc_param_form.dvc_write(text, [f"{override_key}={value + 1}"])
    return [line for line in difflib.unified_diff(text.splitlines(), new.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def test_dvc_form_is_dvc_s_fixed_point_and_one_value_is_one_line():
    assert len(one_line_changed(FLOWY, "train.rounds")) > 2  # as written, DVC rewrites much more than the value
    form = dvc_param_form.dvc_form(FLOWY)
    assert yaml.safe_load(form) == yaml.safe_load(FLOWY)  # the same experiment
    assert dvc_param_form.dvc_write(form) == form
    assert "a comment DVC keeps" in form and not any(line.endswith(" ") for line in form.splitlines())
    assert max(len(line) for line in form.splitlines() if "#" not in line) <= 90  # ruamel folds at ~80
    for key in ("train.rounds", "data.partition.num_clients", "algorithms.ditto.default.local_epochs"):
        assert one_line_changed(form, key) == [f"-{old}" for old in [_line(form, key)]] + \
            [f"+{_line(form, key).replace(str(_value(form, key)), str(_value(form, key) + 1))}"]


def _value(text: str, key: str):
    value = yaml.safe_load(text)
    for part in key.split("."):
        value = value[part]
    return value


def _line(text: str, key: str) -> str:
    """The one line of ``text`` that holds ``key``'s value (its last part followed by the value)."""
    last = key.split(".")[-1]
    (line,) = [line for line in text.splitlines() if f"{last}: {_value(text, key)}" in line]
    return line


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_file_is_in_the_form_dvc_writes(path):
    """`dvc exp run -S` would leave the file as it is: run `python workflow/scripts/dvc_param_form.py
    workflow/config/experiments/*.yaml` after editing one by hand."""
    text = path.read_text()
    assert dvc_param_form.dvc_write(text) == text
    assert len(one_line_changed(text, int_leaf(yaml.safe_load(text)))) == 2  # one line out, one line in
