"""pcl.benchmark: configurations chosen on validation only, test statistics against the tuned Local, ranks.

Runs are written as the train jobs write them (metrics.csv + run.json), summarized by pcl.results.summarize, then
read back by pcl.benchmark.load, so the tests follow the real files; every expected number is computed by hand.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from pcl import benchmark, results

ROUNDS = 2


def write_run(root: Path, exp: str, alg: str, setting: str, seed: int, val, test, n=None) -> Path:
    """One run with per-client accuracies ``val[r]`` / ``test[r]`` at rounds r = 1..ROUNDS (a scalar list is
    used at every round); ``n``: per-client validation sample counts (test counts are 10)."""
    folder = root / exp / alg / setting / f"seed={seed}"
    folder.mkdir(parents=True)
    rows = []
    for r in range(1, ROUNDS + 1):
        for split, values, counts in (("val", val, n), ("test", test, None)):
            values = values[r] if isinstance(values, dict) else values
            for client, v in enumerate(values):
                count = 10 if counts is None else counts[client]
                rows += [(r, client, split, "n", count)] + [(r, client, split, "acc", v)] * (count > 0)
    pd.DataFrame(rows, columns=results.METRIC_COLUMNS).to_csv(folder / "metrics.csv", index=False)
    (folder / "run.json").write_text(json.dumps({"experiment": exp, "algorithm": alg, "setting": setting,
                                                 "seed": seed, "federation_sha256": "f" * 64,
                                                 "config": {"train": {"rounds": ROUNDS}}}))
    return folder


def experiment(root: Path, name: str, runs: dict[tuple[str, str], dict[int, tuple]], **kw) -> None:
    """Write an experiment: runs[(alg, setting)][seed] = (val, test[, n]) in declared order, config.yaml, then
    pcl summarize's tables."""
    dirs = [write_run(root, name, alg, setting, seed, *spec) for (alg, setting), seeds in runs.items()
            for seed, spec in seeds.items()]
    algorithms: dict = {}
    for alg, setting in runs:
        algorithms.setdefault(alg, {})[setting] = {"lr": 0.1}
    seeds = sorted({s for spec in runs.values() for s in spec})
    (root / name / "config.yaml").write_text(yaml.safe_dump({"name": name, "algorithms": algorithms,
                                                             "seeds": seeds}, sort_keys=False))
    results.summarize(dirs, root / name)


def row(bench: pd.DataFrame, alg: str, exp: str = "e") -> pd.Series:
    return bench[(bench["experiment"] == exp) & (bench["algorithm"] == alg)].iloc[0]


def test_selection_uses_validation_not_test(tmp_path):
    # fedavg/a: best on validation, worst on test; fedavg/b the reverse. Choosing on test would pick b.
    local = ([0.5, 0.5], [0.5, 0.5])
    experiment(tmp_path, "e", {
        ("local", "default"): {0: local, 1: local},
        ("fedavg", "a"): {0: ([0.9, 0.9], [0.4, 0.6]), 1: ([0.8, 0.9], [0.6, 0.6])},
        ("fedavg", "b"): {0: ([0.6, 0.6], [0.9, 1.0]), 1: ([0.7, 0.7], [1.0, 1.0])},
    })
    out = benchmark.load(tmp_path, ["e"])
    fedavg = row(out["table"], "fedavg")
    assert fedavg["setting"] == "a"
    assert fedavg["val"] == pytest.approx(np.mean([0.9, 0.85]))          # seed means of validation
    assert fedavg["mean"] == pytest.approx(np.mean([0.5, 0.6]))          # its test mean, per seed 0.5 and 0.6
    half = stats.t.ppf(0.975, 1) * np.std([0.5, 0.6], ddof=1) / math.sqrt(2)
    assert fedavg["mean_ci95"] == pytest.approx(half)
    assert (fedavg["n_configs"], fedavg["n_tried"], fedavg["n_seeds"]) == (2, 2, 2)


def test_validation_is_read_at_the_best_val_round(tmp_path):
    # a peaks at round 1 (0.9) and ends at 0.5; b is 0.7 throughout: a's score is its best_val round's 0.9, and
    # its test is read at round 1 (0.3), not at the final round (0.8).
    experiment(tmp_path, "e", {
        ("local", "default"): {0: ([0.5] * 2, [0.5] * 2)},
        ("fedavg", "a"): {0: ({1: [0.9] * 2, 2: [0.5] * 2}, {1: [0.3] * 2, 2: [0.8] * 2})},
        ("fedavg", "b"): {0: ([0.7] * 2, [0.6] * 2)},
    })
    fedavg = row(benchmark.load(tmp_path, ["e"])["table"], "fedavg")
    assert (fedavg["setting"], fedavg["val"], fedavg["mean"]) == ("a", pytest.approx(0.9), pytest.approx(0.3))


def test_clients_without_validation_data_do_not_count(tmp_path):
    # b's third client has no validation samples: b scores mean(0.8, 0.8) = 0.8 > a's 0.7, not (0.8 + 0.8 + 0) / 3.
    experiment(tmp_path, "e", {
        ("local", "default"): {0: ([0.5] * 3, [0.5] * 3)},
        ("fedavg", "a"): {0: ([0.7] * 3, [0.5] * 3)},
        ("fedavg", "b"): {0: ([0.8, 0.8, 0.0], [0.5] * 3, [10, 10, 0])},
    })
    assert row(benchmark.load(tmp_path, ["e"])["table"], "fedavg")["setting"] == "b"


def test_gain_and_share_hurt_against_the_chosen_local(tmp_path):
    # Local's best validation setting is lr0.1 (not `default`): gains are taken against its test accuracies.
    method = [0.6, 0.5, 0.7, 0.9]
    experiment(tmp_path, "e", {
        ("local", "default"): {0: ([0.1] * 4, [0.0] * 4), 1: ([0.1] * 4, [0.0] * 4)},
        ("local", "lr0.1"): {0: ([0.9] * 4, [0.5, 0.6, 0.7, 0.8]), 1: ([0.9] * 4, [0.5, 0.5, 0.5, 0.5])},
        ("ditto", "lam1"): {0: ([0.5] * 4, method), 1: ([0.5] * 4, [0.4, 0.5, 0.6, 0.7])},
    })
    bench = benchmark.load(tmp_path, ["e"])["table"]
    assert row(bench, "local")["setting"] == "lr0.1"
    # seed 0: gains 0.1, -0.1, 0, 0.1 -> mean 0.025, 1 of 4 hurt (a gain of exactly 0 hurts nobody);
    # seed 1: gains -0.1, 0, 0.1, 0.2 -> mean 0.05, 1 of 4 hurt.
    ditto = row(bench, "ditto")
    assert ditto["gain_mean"] == pytest.approx((0.025 + 0.05) / 2)
    assert ditto["hurt_frac"] == pytest.approx(0.25) and ditto["hurt_frac_ci95"] == pytest.approx(0.0)
    assert ditto["gain_mean_ci95"] == pytest.approx(stats.t.ppf(0.975, 1) * np.std([0.025, 0.05], ddof=1) / 2 ** .5)
    assert ditto["bottom10"] == pytest.approx((0.5 + 0.4) / 2)  # ceil(4/10) = 1st worst client per seed
    local = row(bench, "local")
    assert (local["gain_mean"], local["hurt_frac"]) == (0.0, 0.0)


def test_ties_go_to_the_first_declared_setting(tmp_path):
    # zeta and alpha tie on validation (declared in that order, not alphabetical); alpha is better on test.
    experiment(tmp_path, "e", {
        ("local", "default"): {0: ([0.5] * 2, [0.5] * 2)},
        ("fedavg", "zeta"): {0: ([0.6, 0.8], [0.1] * 2)},
        ("fedavg", "alpha"): {0: ([0.7, 0.7], [0.9] * 2)},
    })
    fedavg = row(benchmark.load(tmp_path, ["e"])["table"], "fedavg")
    assert (fedavg["setting"], fedavg["mean"]) == ("zeta", pytest.approx(0.1))


def test_ranks_ties_and_critical_difference():
    bench = pd.DataFrame({"experiment": ["x"] * 3 + ["y"] * 3, "algorithm": ["a", "b", "c"] * 2, "metric": "acc",
                          "mean": [0.9, 0.8, 0.8, 0.7, 0.9, 0.6]})
    ranked, cd = benchmark.ranks(bench)
    # x: a 1, b and c tie for 2-3 -> 2.5 each; y: b 1, a 2, c 3.
    expected = {"a": (1 + 2) / 2, "b": (2.5 + 1) / 2, "c": (2.5 + 3) / 2}
    assert dict(zip(ranked["algorithm"], ranked["mean_rank"])) == pytest.approx(expected)
    assert list(ranked["algorithm"]) == ["a", "b", "c"]  # best (lowest) mean rank first
    # Demšar (2006) Table 5(a): q_0.05 = 2.343 for k = 3, 2.569 for k = 4.
    assert cd == pytest.approx(2.343 * math.sqrt(3 * 4 / (6 * 2)), abs=1e-3)
    assert benchmark.critical_difference(4, 10) == pytest.approx(2.569 * math.sqrt(4 * 5 / 60), abs=1e-3)


def test_versus_local_flags_where_local_is_hard_to_beat():
    bench = pd.DataFrame({
        "experiment": ["x", "x", "x", "y", "y"], "algorithm": ["local", "a", "b", "local", "a"], "metric": "acc",
        "setting": "s", "mean": [0.5, 0.6, 0.4, 0.5, 0.52],
        "gain_mean": [0.0, 0.1, -0.1, 0.0, 0.02], "gain_mean_ci95": [0.0, 0.05, 0.05, 0.0, 0.05]})
    verdict = benchmark.versus_local(bench).set_index("experiment")
    assert verdict.loc["x", ["beat_local", "lose_to_local", "best"]].tolist() == [1, 1, "a"]
    assert not verdict.loc["x", "local_hard_to_beat"]
    assert verdict.loc["y", "local_hard_to_beat"]  # a's gain CI [-0.03, 0.07] contains 0
