"""pcl.results on hand-built runs: selection by validation, client statistics, seed CIs, gain, diff, files."""
import json
import math
import os

import numpy as np
import pandas as pd
import pytest

from pcl import results

T_975_DF2 = 4.302652729911275  # Student t 97.5% quantile, 2 degrees of freedom (statistical tables)


def write_run(root, algorithm, seed, test, val=None, *, setting="default", experiment="exp", metric="acc",
              n=None, federation="f" * 64):
    """One run folder. ``test``/``val``: {round: per-client values}; ``n``: per-client test counts."""
    run_dir = root / experiment / algorithm / setting / f"seed={seed}"
    run_dir.mkdir(parents=True)
    val = val if val is not None else test
    rows = []
    for split, table in (("val", val), ("test", test)):
        for rnd, values in table.items():
            counts = n if n is not None and split == "test" else [10] * len(values)
            for client, (value, count) in enumerate(zip(values, counts)):
                rows += [(rnd, client, split, metric, value), (rnd, client, split, "loss", 1.0 - value),
                         (rnd, client, split, "n", count)]
    pd.DataFrame(rows, columns=results.METRIC_COLUMNS).to_csv(run_dir / "metrics.csv", index=False)
    info = {"experiment": experiment, "algorithm": algorithm, "setting": setting, "seed": seed,
            "config": {"train": {"rounds": max(max(test), max(val))}}, "federation_sha256": federation}
    (run_dir / "run.json").write_text(json.dumps(info))
    return run_dir


def stats_of(run_dirs, selection="final"):
    table = results.run_stats(results.client_metrics(results.load_runs(run_dirs)))
    table = table[table["selection"] == selection]
    return {(r.algorithm, r.seed, r.stat): r.value for r in table.itertuples()}


# ------------------------------------------------------------------------------------ client statistics


def test_weighted_and_unweighted_mean_std_worst(tmp_path):
    run = write_run(tmp_path, "fedavg", 0, {1: [0.5, 0.9, 0.7, 0.3]}, n=[10, 30, 20, 40])
    s = stats_of([run])
    assert s["fedavg", 0, "mean"] == pytest.approx(0.6)
    assert s["fedavg", 0, "wmean"] == pytest.approx((0.5 * 10 + 0.9 * 30 + 0.7 * 20 + 0.3 * 40) / 100)  # 0.58
    assert s["fedavg", 0, "std"] == pytest.approx(math.sqrt(0.05))  # population std over 4 clients
    assert s["fedavg", 0, "worst"] == 0.3
    assert not any(stat.startswith("gain") or stat == "hurt_frac" for (_, _, stat) in s)  # no local run


def test_bottom10_is_the_ceil_k_over_10_th_lowest_client_and_weighted_variant():
    acc = 0.05 * np.arange(1, 21)  # 20 clients: the 2nd lowest is 0.10 (linear interpolation would say 0.145)
    n = np.array([30] + [10] * 19)  # the worst client holds 30/220 > 10% of the samples
    out = results.client_distribution(acc, n)
    assert out["bottom10"] == pytest.approx(0.10)
    assert out["wbottom10"] == pytest.approx(0.05)
    assert results.client_distribution(acc, np.ones(20))["wbottom10"] == pytest.approx(0.10)


def test_error_metric_statistics_read_the_bad_tail():
    mse = np.arange(1.0, 21.0)
    out = results.client_distribution(mse, np.ones(20), higher_is_better=False)
    assert out["worst"] == 20.0 and out["bottom10"] == 19.0  # largest and 2nd largest error
    assert out["mean"] == pytest.approx(10.5)


# ------------------------------------------------------------------------------------------- selection


def test_best_val_selects_on_validation_not_test(tmp_path):
    val = {1: [0.5, 0.5], 2: [0.8, 0.8], 3: [0.6, 0.6]}
    test = {1: [0.4, 0.4], 2: [0.5, 0.7], 3: [0.9, 0.9]}  # best-on-test would pick round 3
    run = write_run(tmp_path, "fedavg", 0, test, val)
    clients = results.client_metrics(results.load_runs([run]))
    rounds = clients.groupby("selection")["round"].first()
    assert rounds["best_val"] == 2 and rounds["final"] == 3
    assert stats_of([run], "best_val")["fedavg", 0, "mean"] == pytest.approx(0.6)
    assert stats_of([run], "final")["fedavg", 0, "mean"] == pytest.approx(0.9)


def test_best_val_minimizes_mse(tmp_path):
    val = {1: [3.0], 2: [1.0], 3: [2.0]}
    run = write_run(tmp_path, "fedavg", 0, {1: [9.0], 2: [7.0], 3: [5.0]}, val, metric="mse")
    clients = results.client_metrics(results.load_runs([run]))
    assert clients.set_index("selection").loc["best_val", "value"] == 7.0


def test_best_val_round_without_test_evaluation_is_an_error(tmp_path):
    run = write_run(tmp_path, "fedavg", 0, {2: [0.5]}, {1: [0.9], 2: [0.1]})
    with pytest.raises(ValueError, match="best_val round 1 has no test evaluation"):
        results.client_metrics(results.load_runs([run]))


# ------------------------------------------------------------------------------------------ gain over local


def test_gain_over_local_same_seed(tmp_path):
    local = write_run(tmp_path, "local", 0, {1: [0.5, 0.6, 0.7, 0.8]})
    fedavg = write_run(tmp_path, "fedavg", 0, {1: [0.6, 0.5, 0.9, 0.8]})
    other_seed = write_run(tmp_path, "fedavg", 1, {1: [0.6, 0.5, 0.9, 0.8]})
    s = stats_of([local, fedavg, other_seed])
    assert s["fedavg", 0, "gain_mean"] == pytest.approx((0.1 - 0.1 + 0.2 + 0.0) / 4)
    assert s["fedavg", 0, "gain_worst"] == pytest.approx(-0.1)
    assert s["fedavg", 0, "hurt_frac"] == 0.25  # a tie (0.8 vs 0.8) is not hurt
    assert s["local", 0, "gain_mean"] == 0.0
    assert ("fedavg", 1, "gain_mean") not in s  # seed 1 has no local run


def test_gain_for_mse_is_local_minus_run(tmp_path):
    local = write_run(tmp_path, "local", 0, {1: [2.0, 1.0]}, metric="mse")
    fedavg = write_run(tmp_path, "fedavg", 0, {1: [1.0, 3.0]}, metric="mse")
    s = stats_of([local, fedavg])
    assert s["fedavg", 0, "gain_mean"] == pytest.approx(-0.5)  # gains +1 and -2
    assert s["fedavg", 0, "hurt_frac"] == 0.5


def test_gain_needs_same_federation(tmp_path):
    local = write_run(tmp_path, "local", 0, {1: [0.5]}, federation="a" * 64)
    fedavg = write_run(tmp_path, "fedavg", 0, {1: [0.6]}, federation="b" * 64)
    with pytest.raises(ValueError, match="federation"):
        results.client_metrics(results.load_runs([local, fedavg]))


def test_several_local_settings_use_default_or_fail(tmp_path):
    runs = [write_run(tmp_path, "local", 0, {1: [0.5]}, setting="default"),
            write_run(tmp_path, "local", 0, {1: [0.7]}, setting="lr1"),
            write_run(tmp_path, "fedavg", 0, {1: [0.6]})]
    assert stats_of(runs)["fedavg", 0, "gain_mean"] == pytest.approx(0.1)
    runs = [write_run(tmp_path / "b", "local", 0, {1: [0.5]}, setting="lr2"), runs[1]]
    with pytest.raises(ValueError, match=r"local settings \['lr1', 'lr2'\]"):
        results.client_metrics(results.load_runs(runs))


# ------------------------------------------------------------------------------------------- across seeds


def test_ci_over_seeds_uses_student_t(tmp_path):
    runs = [write_run(tmp_path, "fedavg", seed, {1: [acc, acc]}) for seed, acc in enumerate([0.6, 0.7, 0.8])]
    summary = results.seed_summary(results.run_stats(results.client_metrics(results.load_runs(runs))))
    row = summary.set_index(["selection", "stat"]).loc[("final", "mean")]
    assert row["n_seeds"] == 3 and row["mean"] == pytest.approx(0.7)
    assert row["ci95"] == pytest.approx(T_975_DF2 * 0.1 / math.sqrt(3))  # sd over seeds = 0.1


def test_ci_of_one_seed_is_nan():
    assert math.isnan(results.mean_ci95([0.5])[1])
    assert results.mean_ci95([0.5])[0] == 0.5


# ------------------------------------------------------------------------------------------------- diff


def per_run(root, experiment, accs):
    runs = [write_run(root, "fedavg", seed, {1: [acc]}, experiment=experiment) for seed, acc in accs.items()]
    return results.run_stats(results.client_metrics(results.load_runs(runs)))


def test_paired_diff_across_seeds(tmp_path):
    a = per_run(tmp_path, "exp_a", {0: 0.6, 1: 0.7, 2: 0.8})
    b = per_run(tmp_path, "exp_b", {0: 0.65, 1: 0.76, 2: 0.87, 3: 0.9})  # seed 3 has no partner
    table = results.diff(a, b)
    row = table.set_index(["selection", "stat"]).loc[("final", "mean")]
    d = np.array([0.05, 0.06, 0.07])
    assert (row["n_a"], row["n_b"], row["n_pairs"]) == (3, 4, 3)
    assert row["mean_a"] == pytest.approx(0.7)
    assert row["mean_b"] == pytest.approx(np.mean([0.65, 0.76, 0.87, 0.9]))
    assert row["diff"] == pytest.approx(d.mean())
    assert row["diff_ci95"] == pytest.approx(T_975_DF2 * d.std(ddof=1) / math.sqrt(3))
    assert row["diff_ci95"] < row["ci95_a"]  # pairing removes the between-seed spread
    text = results.format_diff(table, "exp_a", "exp_b")
    assert "fedavg/default" in text and "+0.060 ± 0.025 (n=3) *" in text  # CI excludes 0; 2 significant digits
    assert "* = its CI excludes 0" in text  # the marker is explained
    std_lines = [line for line in text.splitlines() if " std " in line]
    assert std_lines and not any(line.endswith("*") for line in std_lines)  # one client: std 0 on both sides


def test_cli_diff_refuses_other_federations_and_filters(tmp_path):
    from typer.testing import CliRunner

    from pcl.cli import app

    def experiment(name, federation, accs):
        runs = [write_run(tmp_path / "runs", "fedavg", seed, {1: [acc, acc]}, experiment=name, federation=federation)
                for seed, acc in accs.items()]
        results.summarize(runs, tmp_path / name)
        return str(tmp_path / name)

    a = experiment("a", "a" * 64, {0: 0.6, 1: 0.7})
    b = experiment("b", "a" * 64, {0: 0.62, 1: 0.75})
    c = experiment("c", "c" * 64, {0: 0.62, 1: 0.75})
    runner = CliRunner()
    refused = runner.invoke(app, ["diff", a, c])
    assert refused.exit_code == 2 and "different federations" in refused.output and "--force" in refused.output
    forced = runner.invoke(app, ["diff", a, c, "--force"])
    assert forced.exit_code == 0 and "fedavg/default" in forced.output
    only = runner.invoke(app, ["diff", a, b, "--stat", "mean", "--selection", "final"])
    lines = [line for line in only.output.splitlines() if "fedavg/default" in line]
    assert only.exit_code == 0 and len(lines) == 1  # the mean at the final round only
    assert all(" final " in line and " mean " in line for line in lines)


def test_diff_rejects_mixed_experiments(tmp_path):
    a = pd.concat([per_run(tmp_path, "x", {0: 0.5}), per_run(tmp_path, "y", {0: 0.6})])
    with pytest.raises(ValueError, match=r"results_a must hold exactly one experiment, got \['x', 'y'\]"):
        results.diff(a, a)


# ------------------------------------------------------------------------------------------------ files


def test_summarize_is_byte_deterministic_and_order_free(tmp_path):
    runs = [write_run(tmp_path, alg, seed, {1: [0.5 + 0.1 * seed, 0.3], 2: [0.6, 0.4 + 0.05 * seed]})
            for alg in ("local", "fedavg") for seed in (0, 1)]
    results.summarize(runs, tmp_path / "one")
    results.summarize(runs[::-1], tmp_path / "two")
    names = ["clients.csv", "runs.csv", "summary.csv", "metrics.json", "diagnostics.csv"]
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert sorted(os.listdir(tmp_path / "one")) == sorted(names)  # no temp files left
    metrics = json.loads((tmp_path / "one" / "metrics.json").read_text())
    summary = pd.read_csv(tmp_path / "one" / "summary.csv")
    at = summary[summary["selection"] == "best_val"].set_index(["algorithm", "stat"])["mean"]
    assert metrics == {"best": {"method": "fedavg/default", "acc": at["fedavg", "mean"],
                                "p10": at["fedavg", "bottom10"], "gain": at["fedavg", "gain_mean"]},
                       "local": {"acc": at["local", "mean"], "p10": at["local", "bottom10"]}}
    assert list(summary.columns) == ["experiment", "algorithm", "setting", "selection", "metric", "stat",
                                     "n_seeds", "mean", "ci95"]
    assert list(summary["stat"][:len(results.STATS)]) == list(results.STATS)
    back = results.read_run_stats(tmp_path / "one")
    assert results.diff(back, back)["diff"].eq(0).all()


def test_metrics_json_without_local_has_no_gain(tmp_path):
    run = write_run(tmp_path, "fedavg", 0, {1: [0.5]})
    results.summarize([run], tmp_path / "out")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics) == {"best"} and set(metrics["best"]) == {"method", "acc", "p10"}
    assert "NaN" not in (tmp_path / "out" / "metrics.json").read_text()


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "summary.csv"
    target.write_text("old\n")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        results.write_csv(pd.DataFrame({"a": [1.0]}), target)
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["summary.csv"]


def test_summarize_error_leaves_out_dir_untouched(tmp_path):
    runs = [write_run(tmp_path, "fedavg", 0, {1: [0.5]}, experiment="x"),
            write_run(tmp_path, "fedavg", 0, {1: [0.5]}, experiment="y")]
    with pytest.raises(ValueError, match="one experiment"):
        results.summarize(runs, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------- errors


def test_missing_files_are_named(tmp_path):
    run = write_run(tmp_path, "fedavg", 0, {1: [0.5]})
    (run / "metrics.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"metrics\.csv"):
        results.load_runs([run])
    with pytest.raises(FileNotFoundError, match=r"run\.json"):
        results.load_runs([tmp_path / "nowhere"])
    with pytest.raises(FileNotFoundError, match=r"runs\.csv"):
        results.read_run_stats(tmp_path)


@pytest.mark.parametrize("edit, message", [
    (lambda d: (d / "run.json").write_text("{not json"), r"corrupt run file .*run\.json"),
    (lambda d: (d / "run.json").write_text('{"experiment": "e"}'), r"lacks key\(s\) \['algorithm'"),
    (lambda d: (d / "run.json").write_text(json.dumps(
        {"experiment": "e", "algorithm": "a", "setting": "s", "seed": "0", "federation_sha256": "f"})),
     "'seed' must be an integer"),
    (lambda d: (d / "metrics.csv").write_text("round,client,split,metric,value\n1,0,test,acc,high\n"),
     r"corrupt metrics file .*metrics\.csv"),
    (lambda d: (d / "metrics.csv").write_text("round,client,split,value\n"), r"lacks column\(s\) \['metric'\]"),
    (lambda d: (d / "metrics.csv").write_text("round,client,split,metric,value\n1,0,test,f1,0.5\n1,0,test,n,3\n"),
     r"exactly one of \['acc', 'mse'\], got \[\]"),
    (lambda d: (d / "metrics.csv").write_text("round,client,split,metric,value\n1,0,test,acc,0.5\n"),
     "lacks metric 'n'"),
    (lambda d: (d / "metrics.csv").write_text(
        "round,client,split,metric,value\n1,0,test,acc,0.5\n1,0,test,acc,0.6\n1,0,test,n,3\n"),
     "repeats round 1 client 0 split 'test' metric 'acc'"),
])
def test_corrupt_inputs_are_named(tmp_path, edit, message):
    run = write_run(tmp_path, "fedavg", 0, {1: [0.5]})
    edit(run)
    with pytest.raises(ValueError, match=message):
        results.load_runs([run])


def test_duplicate_runs_and_missing_split_are_rejected(tmp_path):
    run = write_run(tmp_path, "fedavg", 0, {1: [0.5]})
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("metrics.csv", "run.json"):
        (copy / name).write_bytes((run / name).read_bytes())
    with pytest.raises(ValueError, match="are both run exp:fedavg/default seed 0"):
        results.load_runs([run, copy])
    table = pd.read_csv(run / "metrics.csv")
    table[table["split"] != "val"].to_csv(run / "metrics.csv", index=False)
    with pytest.raises(ValueError, match="run exp:fedavg/default seed 0 has no 'val' evaluation"):
        results.client_metrics(results.load_runs([run]))


def test_summarize_refuses_a_truncated_or_unfinished_run(tmp_path):
    run = write_run(tmp_path, "local", 0, {1: [0.5, 0.3], 2: [0.6, 0.4]})
    metrics = pd.read_csv(run / "metrics.csv")
    metrics[metrics["round"] == 1].to_csv(run / "metrics.csv", index=False)  # the last round's rows are lost
    with pytest.raises(ValueError, match="ends at round 1 but the run is configured for 2 rounds"):
        results.load_runs([run])
    info = json.loads((run / "run.json").read_text())
    info["config"] = {}
    (run / "run.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="lacks config.train.rounds"):
        results.load_runs([run])
