"""pcl.claims: verdicts on the paired difference across seeds and its 95% CI, seeds needed, untestable claims.

Expected values are computed here with scipy.stats directly (t quantiles, ttest intervals), not with pcl.results.
"""
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pcl import claims, results

PER_RUN_COLUMNS = ["experiment", "algorithm", "setting", "seed", "selection", "round", "metric", "stat", "value"]


def per_run_table(runs, stat="mean", selections=("best_val", "final")):
    """A runs.csv-like table. ``runs``: {"alg/setting": {seed: value}}, the same value at every selection."""
    rows = [("exp", *name.split("/"), seed, selection, 5, "acc", stat, value)
            for name, seeds in runs.items() for seed, value in seeds.items() for selection in selections]
    return pd.DataFrame(rows, columns=PER_RUN_COLUMNS)


def claim(lhs="a/default", op=">", rhs="b/default", **extra):
    return {"claim": f"{lhs} {op} {rhs}", "source": "test", "lhs": lhs, "op": op, "rhs": rhs, **extra}


def t_interval(d):
    """Mean and 95% half-width of the one-sample t interval, from scipy directly."""
    d = np.asarray(d, dtype=float)
    lo, hi = stats.t.interval(0.95, d.size - 1, loc=d.mean(), scale=stats.sem(d))
    return d.mean(), (hi - lo) / 2


def diffs_with(mean, ci95, n=3):
    """n per-seed differences whose mean and 95% t half-width are exactly ``mean`` and ``ci95``."""
    z = np.linspace(-1.0, 1.0, n)
    z = z / z.std(ddof=1)  # sample sd 1
    return mean + z * ci95 * math.sqrt(n) / stats.t.ppf(0.975, n - 1)


def decide_pair(op, lhs_minus_rhs, tol=None, base=(0.6, 0.7, 0.8)):
    """Evaluate one run-vs-run claim whose per-seed differences are ``lhs_minus_rhs``."""
    table = per_run_table({"a/default": dict(enumerate(np.add(base, lhs_minus_rhs))),
                           "b/default": dict(enumerate(base))})
    extra = {} if tol is None else {"tol": tol}
    return claims.evaluate([claim(op=op, **extra)], table).iloc[0]


# ------------------------------------------------------------------------------------------ verdicts


def test_ci_straddling_the_margin_is_inconclusive_above_holds_below_fails():
    for mean, expected in ((0.01, "inconclusive"), (0.2, "holds"), (-0.2, "fails")):
        row = decide_pair(">", diffs_with(mean, 0.05))
        assert row["verdict"] == expected, mean
    # the margin is tol, not 0: a CI entirely above 0 but straddling tol = 0.1 is inconclusive
    assert decide_pair(">", diffs_with(0.12, 0.05))["verdict"] == "holds"
    assert decide_pair(">", diffs_with(0.12, 0.05), tol=0.1)["verdict"] == "inconclusive"
    assert decide_pair(">", diffs_with(0.12, 0.05), tol=0.2)["verdict"] == "fails"


def test_issue_examples_are_inconclusive():
    # Ditto (lam=1) vs Local: 0.0420 ± 0.0611; model averaging bottom-10% >= Local: -0.0105 ± 0.1539 (3 seeds)
    for op, mean, ci in ((">", 0.0420, 0.0611), (">=", -0.0105, 0.1539)):
        d = diffs_with(mean, ci)
        got_mean, got_ci = t_interval(d)
        assert (round(got_mean, 4), round(got_ci, 4)) == (mean, ci)  # the issue's numbers, from scipy
        row = decide_pair(op, d)
        assert row["verdict"] == "inconclusive"
        assert row["diff_mean"] == pytest.approx(got_mean) and row["diff_ci95"] == pytest.approx(got_ci)
        assert row["n_seeds"] == 3


def test_inequality_margins_and_boundaries():
    v = claims.verdict
    # '>' needs a clearance of tol, '>=' allows a shortfall of tol (non-inferiority)
    assert v(">=", 0.05, -0.02, 0.01) == "holds"     # [-0.03, -0.01] ⊂ [-0.05, ∞)
    assert v(">", 0.05, -0.02, 0.01) == "fails"      # [-0.03, -0.01] ≤ 0.05
    assert v(">=", 0.0, -0.02, 0.01) == "fails"
    assert v("<=", 0.05, 0.02, 0.01) == "holds"      # mirrored
    assert v("<", 0.05, 0.02, 0.01) == "fails"
    assert v("<", 0.0, -0.2, 0.1) == "holds" and v("<", 0.0, 0.2, 0.1) == "fails"
    assert v("<", 0.0, 0.05, 0.1) == "inconclusive" and v("<=", 0.0, -0.05, 0.1) == "inconclusive"
    # boundaries: a CI touching the margin holds a non-strict claim but not a strict one
    assert v(">=", 0.0, 0.5, 0.5) == "holds" and v(">", 0.0, 0.5, 0.5) == "inconclusive"
    assert v(">", 0.0, -0.5, 0.5) == "fails" and v(">=", 0.0, -0.5, 0.5) == "inconclusive"
    assert v("<=", 0.0, -0.5, 0.5) == "holds" and v("<", 0.0, -0.5, 0.5) == "inconclusive"
    assert v("<", 0.0, 0.5, 0.5) == "fails" and v("<=", 0.0, 0.5, 0.5) == "inconclusive"


def test_approx_equal_within_tol():
    v = claims.verdict
    assert v("~=", 0.05, 0.01, 0.03) == "holds"         # [-0.02, 0.04] ⊂ [-0.05, 0.05]
    assert v("~=", 0.05, 0.03, 0.03) == "inconclusive"  # [0, 0.06] crosses 0.05
    assert v("~=", 0.05, 0.10, 0.03) == "fails"         # [0.07, 0.13] above 0.05
    assert v("~=", 0.05, -0.10, 0.03) == "fails"        # below -0.05
    assert v("~=", 0.05, 0.0, 0.06) == "inconclusive"   # wider than the band
    assert decide_pair("~=", diffs_with(-0.01, 0.02), tol=0.05)["verdict"] == "holds"
    assert decide_pair("~=", diffs_with(0.2, 0.02), tol=0.05)["verdict"] == "fails"


def test_one_seed_is_inconclusive_whatever_the_difference():
    table = per_run_table({"a/default": {0: 0.9}, "b/default": {0: 0.1}})
    row = claims.evaluate([claim()], table).iloc[0]
    assert row["verdict"] == "inconclusive" and row["n_seeds"] == 1
    assert row["diff_mean"] == pytest.approx(0.8) and math.isnan(row["diff_ci95"])
    assert row["seeds_needed"] is None and "1 seed" in row["note"]


def test_run_versus_number_uses_each_seed_minus_the_number():
    lhs = [0.81, 0.86, 0.84]
    table = per_run_table({"a/default": dict(enumerate(lhs)), "b/default": {0: 0.0, 1: 0.0, 2: 0.0}})
    mean, ci = t_interval(np.subtract(lhs, 0.8))
    row = claims.evaluate([claim(rhs=0.8)], table).iloc[0]
    assert (row["rhs"], row["rhs_mean"]) == ("0.8", 0.8) and math.isnan(row["rhs_ci95"])
    assert row["diff_mean"] == pytest.approx(mean) and row["diff_ci95"] == pytest.approx(ci)
    assert row["verdict"] == ("holds" if mean - ci > 0 else "inconclusive")
    assert claims.evaluate([claim(rhs=0.7)], table).iloc[0]["verdict"] == "holds"
    assert claims.evaluate([claim(rhs=0.9)], table).iloc[0]["verdict"] == "fails"


# ---------------------------------------------------------------------------------------------- pairing


def test_pairing_by_seed_decides_where_the_unpaired_interval_cannot():
    base = np.array([0.55, 0.70, 0.85])  # seeds differ a lot; the gain of a over b is steady
    gain = np.array([0.05, 0.06, 0.04])
    lhs, rhs = base + gain, base
    welch = stats.ttest_ind(lhs, rhs, equal_var=False).confidence_interval(0.95)
    assert welch.low < 0 < welch.high  # unpaired, the CI straddles 0
    paired = stats.ttest_rel(lhs, rhs).confidence_interval(0.95)
    assert paired.low > 0
    # the two runs' rows in opposite seed orders: values must be matched by seed label, not by position
    table = per_run_table({"a/default": {10: lhs[0], 20: lhs[1], 30: lhs[2]},
                           "b/default": {30: rhs[2], 20: rhs[1], 10: rhs[0]}})
    row = claims.evaluate([claim()], table).iloc[0]
    assert row["verdict"] == "holds"
    assert row["diff_mean"] - row["diff_ci95"] == pytest.approx(paired.low)
    assert row["diff_mean"] + row["diff_ci95"] == pytest.approx(paired.high)
    assert row["lhs_mean"] == pytest.approx(lhs.mean()) and row["rhs_mean"] == pytest.approx(rhs.mean())
    assert row["lhs_ci95"] == pytest.approx(t_interval(lhs)[1]) and row["rhs_ci95"] == pytest.approx(t_interval(rhs)[1])


def test_different_seeds_on_the_two_sides_are_refused():
    table = per_run_table({"a/default": {0: 0.5, 1: 0.6, 2: 0.7}, "b/default": {0: 0.5, 1: 0.6}})
    with pytest.raises(ValueError, match="same seeds"):
        claims.evaluate([claim()], table)


# ------------------------------------------------------------------------------------------ seeds needed


def brute_force_seeds(distance, sd):
    n = 2
    while stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) >= distance:
        n += 1
    return n


@pytest.mark.parametrize("distance, sd", [(0.04, 0.05), (0.0420, 0.0246), (0.0105, 0.062), (0.3, 0.01),
                                          (0.001, 0.01), (0.1, 0.1)])
def test_seeds_needed_matches_a_brute_force_search(distance, sd):
    assert claims.seeds_needed(distance, sd) == brute_force_seeds(distance, sd)


def test_seeds_needed_would_decide_the_claim_and_one_fewer_would_not():
    d = diffs_with(0.0420, 0.0611)  # the issue's inconclusive Ditto claim
    row = decide_pair(">", d)
    n = row["seeds_needed"]
    assert n == brute_force_seeds(0.0420, np.std(d, ddof=1)) and n > 3
    assert type(n) is int  # a count of seeds, not 7.0
    assert claims.decide(">", 0.0, diffs_with(0.0420, t_half(n, d), n))["verdict"] == "holds"
    assert claims.decide(">", 0.0, diffs_with(0.0420, t_half(n - 1, d), n - 1))["verdict"] == "inconclusive"


def t_half(n, d):
    """95% half-width of n seeds with the standard deviation of ``d``."""
    return stats.t.ppf(0.975, n - 1) * np.std(d, ddof=1) / math.sqrt(n)


def test_seeds_needed_distance_is_to_the_deciding_margin():
    d = diffs_with(0.02, 0.05)  # CI [-0.03, 0.07]
    s = np.std(d, ddof=1)
    for op, tol, sign, distance in ((">", 0.01, 1, 0.01),     # |0.02 − 0.01|
                                    (">=", 0.01, 1, 0.03),    # |0.02 − (−0.01)|
                                    ("~=", 0.03, 1, 0.01),    # inside the band: to the nearer edge 0.03
                                    ("~=", 0.01, -1, 0.01)):  # outside: |−0.02| − 0.01
        out = claims.decide(op, tol, sign * d)
        assert out["verdict"] == "inconclusive", op
        assert out["seeds_needed"] == brute_force_seeds(distance, s), op


def test_mean_on_the_margin_never_resolves_and_decided_claims_need_none():
    row = decide_pair(">", [-0.1, 0.0, 0.1])
    assert (row["verdict"], row["seeds_needed"]) == ("inconclusive", "never")
    row = decide_pair("~=", [0.25, 0.5, 0.75], tol=0.5)
    assert (row["verdict"], row["seeds_needed"]) == ("inconclusive", "never")
    assert decide_pair(">", diffs_with(0.2, 0.05))["seeds_needed"] is None


# -------------------------------------------------------------------------------------------- untestable


def test_no_validation_data_is_untestable_unless_the_claim_reads_final():
    table = pd.concat([per_run_table({"a/default": {0: 0.9, 1: 0.8, 2: 0.85}}, selections=("final",)),
                       per_run_table({"b/default": {0: 0.1, 1: 0.2, 2: 0.15}})])
    out = claims.evaluate([claim(), claim(lhs="b/default", rhs="a/default"), claim(selection="final")], table)
    assert list(out["verdict"]) == ["untestable", "untestable", "holds"]
    assert out["note"].iloc[0] == "a/default has no validation data to select on"
    assert out["note"].iloc[1] == "a/default has no validation data to select on"
    assert out["n_seeds"].iloc[0] == 0 and out[["diff_mean", "diff_ci95"]].iloc[0].isna().all()


def test_a_missing_statistic_is_an_error_not_untestable():
    table = per_run_table({"a/default": {0: 0.9, 1: 0.8}, "b/default": {0: 0.1, 1: 0.2}})
    with pytest.raises(ValueError, match="no result for run 'a/default', stat 'bottom10'"):
        claims.evaluate([claim(stat="bottom10")], table)


# ------------------------------------------------------------------------------------- names, input, output


def test_run_names_resolve_to_the_only_setting_and_refuse_ambiguity():
    table = per_run_table({"a/default": {0: 0.9, 1: 0.8}, "b/x": {0: 0.1, 1: 0.2}, "b/y": {0: 0.1, 1: 0.2}})
    row = claims.evaluate([claim(lhs="a", rhs="b/x")], table).iloc[0]
    assert (row["lhs"], row["rhs"]) == ("a/default", "b/x")
    with pytest.raises(ValueError, match="write b/<setting>"):
        claims.evaluate([claim(lhs="a", rhs="b")], table)
    with pytest.raises(ValueError, match="does not have"):
        claims.evaluate([claim(lhs="a/nope")], table)


@pytest.mark.parametrize("bad, message", [({"op": "=>"}, "op must be"), ({"tol": -0.1}, "tol must be"),
                                          ({"stat": "median"}, "stat must be"), ({"rhs": True}, "rhs must"),
                                          ({"selection": "best_test"}, "selection must be")])
def test_bad_claims_are_refused_with_the_reason(bad, message):
    table = per_run_table({"a/default": {0: 0.9, 1: 0.8}, "b/default": {0: 0.1, 1: 0.2}})
    with pytest.raises(ValueError, match=message):
        claims.evaluate([claim(**bad)], table)


def test_table_columns_counts_and_colours():
    table = per_run_table({"a/default": {0: 0.9, 1: 0.8, 2: 0.85}, "b/default": {0: 0.1, 1: 0.2, 2: 0.15}})
    out = claims.evaluate([claim(), claim(op="<"), claim(op="~=", rhs=0.85, tol=0.5),
                           claim(rhs=0.85), claim(op="<", rhs=1.0)], table)
    assert list(out.columns) == claims.COLUMNS
    assert {"claim", "source", "lhs", "op", "rhs", "stat", "selection", "lhs_mean", "lhs_ci95", "rhs_mean",
            "rhs_ci95", "diff_mean", "diff_ci95", "n_seeds", "verdict", "seeds_needed"} <= set(out.columns)
    assert list(out["verdict"]) == ["holds", "fails", "holds", "inconclusive", "holds"]
    assert out["seeds_needed"].iloc[3] == "never"  # 0.9, 0.8, 0.85 minus 0.85: on the margin up to rounding
    assert claims.counts(out) == {"holds": 3, "fails": 1, "inconclusive": 1, "untestable": 0}
    assert json.loads(json.dumps(claims.counts(out))) == claims.counts(out)  # plain ints for metrics.json
    empty = claims.evaluate([], table)  # an experiment without claims
    assert list(empty.columns) == claims.COLUMNS and claims.counts(empty) == dict.fromkeys(claims.VERDICTS, 0)
    assert set(claims.VERDICT_COLOURS) == set(claims.VERDICTS)
    assert len(set(claims.VERDICT_COLOURS.values())) == len(claims.VERDICTS)
    html = claims.style(out).to_html()
    for verdict in ("holds", "fails", "inconclusive"):
        assert claims.VERDICT_COLOURS[verdict] in html
    assert claims.verdict_css("holds") != "" and claims.verdict_css(0.5) == claims.verdict_css("FAILS") == ""


# ---------------------------------------------------------------------------- from the files summarize writes


def write_run(root, algorithm, seed, accs, val=True):
    """A one-round run of two clients with test accuracies ``accs`` (validation as test, or none)."""
    run_dir = root / algorithm / "default" / f"seed={seed}"
    run_dir.mkdir(parents=True)
    rows = [(1, c, split, metric, value) for c, acc in enumerate(accs) for split in ("val", "test")
            for metric, value in (("acc", acc), ("n", 10 if val or split == "test" else 0))
            if not (split == "val" and not val and metric == "acc")]
    pd.DataFrame(rows, columns=results.METRIC_COLUMNS).to_csv(run_dir / "metrics.csv", index=False)
    (run_dir / "run.json").write_text(json.dumps({
        "experiment": "exp", "algorithm": algorithm, "setting": "default", "seed": seed,
        "federation_sha256": "f" * 64, "config": {"train": {"rounds": 1}}}))
    return run_dir


def test_claims_from_runs_csv_written_by_summarize(tmp_path):
    ditto = {0: [0.80, 0.90], 1: [0.60, 0.70], 2: [0.95, 0.85]}
    local = {0: [0.70, 0.80], 1: [0.62, 0.66], 2: [0.80, 0.90]}
    dirs = [write_run(tmp_path / "runs", name, seed, accs)
            for name, runs in (("ditto", ditto), ("local", local)) for seed, accs in runs.items()]
    results.summarize(dirs, tmp_path / "out")
    per_run = results.read_run_stats(tmp_path / "out")
    out = claims.evaluate([claim(lhs="ditto", rhs="local"), claim(lhs="ditto", rhs="local", stat="worst")],
                          per_run)
    mean_gain = [np.mean(ditto[s]) - np.mean(local[s]) for s in range(3)]   # 0.1, 0.01, 0.05
    worst_gain = [min(ditto[s]) - min(local[s]) for s in range(3)]          # 0.1, -0.02, 0.05
    for row, d in zip(out.itertuples(), (mean_gain, worst_gain)):
        mean, ci = t_interval(d)
        assert row.diff_mean == pytest.approx(mean) and row.diff_ci95 == pytest.approx(ci)
        assert row.verdict == ("holds" if mean - ci > 0 else "inconclusive")
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    ditto_mean = summary[(summary["algorithm"] == "ditto") & (summary["stat"] == "mean")
                         & (summary["selection"] == "best_val")].iloc[0]
    assert out["lhs_mean"].iloc[0] == pytest.approx(ditto_mean["mean"])
    assert out["lhs_ci95"].iloc[0] == pytest.approx(ditto_mean["ci95"])


def test_a_run_without_validation_data_is_untestable_from_summarize(tmp_path):
    dirs = [write_run(tmp_path / "runs", "ditto", seed, [0.8, 0.9], val=False) for seed in range(2)]
    dirs += [write_run(tmp_path / "runs", "local", seed, [0.5, 0.6]) for seed in range(2)]
    results.summarize(dirs, tmp_path / "out")
    per_run = results.read_run_stats(tmp_path / "out")
    out = claims.evaluate([claim(lhs="ditto", rhs="local"), claim(lhs="ditto", rhs="local", selection="final")],
                          per_run)
    assert list(out["verdict"]) == ["untestable", "holds"]  # final: a difference of 0.3 on both seeds
