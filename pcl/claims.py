"""Claims of a federated experiment decided with their uncertainty: *holds*, *fails*, *inconclusive*, *untestable*.

An experiment's ``claims:`` compare the test statistic ``stat`` (default ``mean`` over clients) at selection
``selection`` (default ``best_val``) of run ``lhs`` with run (or number) ``rhs`` by ``op`` and margin ``tol`` (default
0). Each claim is decided on the **paired difference** d = lhs − rhs per seed (both runs of one seed share the
federation and the seed's randomness, so pairing removes the between-seed spread they share; a number on the right
is subtracted from every seed's lhs value), by its 95% Student-t confidence interval [lo, hi] = mean(d) ± h
(:func:`pcl.results.mean_ci95`), against the margin m:

* ``>``:  claimed d > tol (beats by tol), margin m = +tol; *holds* when lo > m, *fails* when hi <= m.
* ``>=``: claimed d >= -tol (not worse by more than tol), m = -tol; *holds* when lo >= m, *fails* when hi < m.
* ``<``:  claimed d < -tol, m = -tol; *holds* when hi < m, *fails* when lo >= m.
* ``<=``: claimed d <= +tol, m = +tol; *holds* when hi <= m, *fails* when lo > m.
* ``~=``: claimed |d| <= tol; *holds* when -tol <= lo and hi <= tol, *fails* when hi < -tol or lo > tol.

So a strict claim asks for a clearance ``tol`` beyond equality and a non-strict one grants a slack ``tol``
(non-inferiority); with ``tol`` = 0 they differ only on the boundary. *holds* means the whole CI lies on the claimed
side, *fails* that it lies wholly on the other side, *inconclusive* anything else, and also one seed (no CI: the
spread is unknown, so neither side is established). *untestable*: the claim reads ``best_val`` and a run it names
has no validation data to select on (``pcl.results`` then writes no ``best_val`` rows for it).

``seeds_needed`` (inconclusive claims with ≥ 2 seeds): the smallest total number of seeds n whose half-width
t_{0.975, n−1}·s/√n, at the observed mean and standard deviation s of d, is below the distance from the mean to
the margin (|mean − m|; for ``~=`` the nearer of ±tol), i.e. that would decide the claim if the spread stayed as
observed; ``"never"`` when the mean sits on the margin (up to a relative 1e-12, the rounding of the mean).
"""
from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from pcl import results

VERDICTS = ("holds", "fails", "inconclusive", "untestable")
# One colour per verdict, the same in every report (text colour; the word itself is always printed too).
VERDICT_COLOURS = {"holds": "#1a7f37", "fails": "#c62828", "inconclusive": "#b26a00", "untestable": "#6e6e6e"}
OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "~=": None}
NEVER = "never"
ROUNDING = 1e-12  # relative: a mean this close to the margin sits on it (e.g. 0.9, 0.8, 0.85 minus 0.85)
COLUMNS = ["claim", "source", "lhs", "op", "rhs", "tol", "stat", "selection", "lhs_mean", "lhs_ci95", "rhs_mean",
           "rhs_ci95", "diff_mean", "diff_ci95", "n_seeds", "verdict", "seeds_needed", "note"]


def margin(op: str, tol: float) -> float:
    """The signed margin an inequality claim compares the difference with (module docstring)."""
    return tol if op in (">", "<=") else -tol


def verdict(op: str, tol: float, diff_mean: float, diff_ci95: float) -> str:
    """holds / fails / inconclusive for a difference ``diff_mean ± diff_ci95`` (NaN half-width: inconclusive)."""
    if math.isnan(diff_ci95):
        return "inconclusive"
    lo, hi = diff_mean - diff_ci95, diff_mean + diff_ci95
    if op == "~=":
        if -tol <= lo and hi <= tol:
            return "holds"
        return "fails" if hi < -tol or lo > tol else "inconclusive"
    claimed, m = OPS[op], margin(op, tol)
    # The claim must hold at the CI's least favourable end; it fails when even the most favourable end misses.
    worst, best = (lo, hi) if op in (">", ">=") else (hi, lo)
    if claimed(worst, m):
        return "holds"
    return "fails" if not claimed(best, m) else "inconclusive"


def distance_to_margin(op: str, tol: float, diff_mean: float) -> float:
    """How far the mean difference is from the margin that decides the claim (the nearer of ±tol for ``~=``)."""
    if op == "~=":
        return abs(abs(diff_mean) - tol)
    return abs(diff_mean - margin(op, tol))


def seeds_needed(distance: float, sd: float) -> int | str:
    """Smallest n ≥ 2 with t_{0.975, n−1}·sd/√n < distance; ``"never"`` when distance is 0.

    t_{0.975, n−1}/√n decreases in n, so a bisection finds it; it exceeds z_{0.975}/√n, which gives the start.
    """
    if distance <= 0:
        return NEVER

    def resolves(n: int) -> bool:
        return stats.t.ppf(0.975, float(n - 1)) * sd / math.sqrt(n) < distance

    lo = max(2, math.floor((stats.norm.ppf(0.975) * sd / distance) ** 2))  # below it nothing resolves
    if resolves(lo):
        return lo
    hi = 2 * lo
    while not resolves(hi):
        lo, hi = hi, 2 * hi
    while hi - lo > 1:  # invariant: not resolves(lo), resolves(hi)
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if resolves(mid) else (mid, hi)
    return hi


def decide(op: str, tol: float, diffs: Iterable[float]) -> dict:
    """Verdict of one claim from its per-seed paired differences: diff_mean, diff_ci95, n_seeds, verdict,
    seeds_needed (None unless inconclusive with ≥ 2 seeds) and note (why inconclusive or untestable)."""
    diffs = np.asarray(list(diffs), dtype=float)
    mean, ci = results.mean_ci95(diffs)
    out = {"diff_mean": mean, "diff_ci95": ci, "n_seeds": int(diffs.size),
           "verdict": verdict(op, tol, mean, ci), "seeds_needed": None, "note": ""}
    if diffs.size < 2:
        out["note"] = f"{diffs.size} seed: no confidence interval"
    elif out["verdict"] == "inconclusive":
        sd, distance = float(np.std(diffs, ddof=1)), distance_to_margin(op, tol, mean)
        if distance <= ROUNDING * (abs(mean) + tol + sd):  # on the margin up to the rounding of the mean
            distance = 0.0
        out["seeds_needed"] = seeds_needed(distance, sd)
        out["note"] = "the mean sits on the margin" if out["seeds_needed"] == NEVER else ""
    return out


# --------------------------------------------------------------------------------------- from runs.csv


def resolve_run(name: str, per_run: pd.DataFrame) -> str:
    """'alg/setting' as written, or 'alg' completed with its only setting."""
    if "/" in name:
        alg, setting = name.split("/", 1)
        if not ((per_run["algorithm"] == alg) & (per_run["setting"] == setting)).any():
            raise ValueError(f"claim names run {name!r}, which this experiment does not have")
        return name
    settings = sorted(per_run.loc[per_run["algorithm"] == name, "setting"].unique())
    if len(settings) != 1:
        raise ValueError(f"claim names algorithm {name!r}, which has settings {settings}: write {name}/<setting>")
    return f"{name}/{settings[0]}"


def _per_seed(run: str, stat: str, selection: str, per_run: pd.DataFrame) -> pd.Series | None:
    """The run's per-seed values of ``stat`` at ``selection``; None when it has no ``best_val`` at all."""
    alg, setting = run.split("/", 1)
    of_run = per_run[(per_run["algorithm"] == alg) & (per_run["setting"] == setting)]
    if selection == "best_val" and not (of_run["selection"] == "best_val").any():
        return None  # no client has validation data: nothing to select on
    rows = of_run[(of_run["stat"] == stat) & (of_run["selection"] == selection)]
    if rows.empty:
        raise ValueError(f"no result for run {run!r}, stat {stat!r}, selection {selection!r}")
    if rows["seed"].duplicated().any():
        raise ValueError(f"run {run!r} has several {stat!r}@{selection} values for one seed (more than one "
                         "experiment or metric in the table?)")
    return rows.set_index("seed")["value"].sort_index()


def _parse(claim: Mapping) -> dict:
    """The claim with its defaults, or a ValueError naming what is wrong."""
    name = claim.get("claim", "?")
    spec = {"claim": name, "source": claim.get("source", ""), "lhs": claim.get("lhs"), "op": claim.get("op"),
            "rhs": claim.get("rhs"), "tol": claim.get("tol", 0.0), "stat": claim.get("stat", "mean"),
            "selection": claim.get("selection", "best_val")}
    problems = []
    if not isinstance(spec["lhs"], str):
        problems.append("lhs must name a run")
    if isinstance(spec["rhs"], bool) or not isinstance(spec["rhs"], (str, int, float)):
        problems.append("rhs must name a run or be a number")
    if spec["op"] not in OPS:
        problems.append(f"op must be one of {list(OPS)}")
    if isinstance(spec["tol"], bool) or not isinstance(spec["tol"], (int, float)) or not spec["tol"] >= 0:
        problems.append("tol must be a number >= 0")
    if spec["stat"] not in results.STATS:
        problems.append(f"stat must be one of {list(results.STATS)}")
    if spec["selection"] not in results.SELECTIONS:
        problems.append(f"selection must be one of {list(results.SELECTIONS)}")
    if problems:
        raise ValueError(f"claim {name!r}: " + "; ".join(problems))
    return spec | {"tol": float(spec["tol"])}


def evaluate_claim(claim: Mapping, per_run: pd.DataFrame) -> dict:
    """One row of :func:`evaluate`."""
    spec = _parse(claim)
    stat, selection = spec["stat"], spec["selection"]
    lhs = resolve_run(spec["lhs"], per_run)
    rhs = resolve_run(spec["rhs"], per_run) if isinstance(spec["rhs"], str) else None
    row = spec | {"lhs": lhs, "rhs": rhs or str(spec["rhs"])}
    left = _per_seed(lhs, stat, selection, per_run)
    right = _per_seed(rhs, stat, selection, per_run) if rhs else float(spec["rhs"])
    if left is None or right is None:
        missing = lhs if left is None else rhs
        return row | {"lhs_mean": math.nan, "lhs_ci95": math.nan, "rhs_mean": math.nan, "rhs_ci95": math.nan,
                      "diff_mean": math.nan, "diff_ci95": math.nan, "n_seeds": 0, "verdict": "untestable",
                      "seeds_needed": None, "note": f"{missing} has no validation data to select on"}
    if rhs and not left.index.equals(right.index):
        raise ValueError(f"claim {spec['claim']!r}: {lhs} has seeds {list(left.index)} but {rhs} has "
                         f"{list(right.index)}; the paired difference needs the same seeds")
    rhs_mean, rhs_ci = results.mean_ci95(right) if rhs else (float(spec["rhs"]), math.nan)
    return row | dict(zip(("lhs_mean", "lhs_ci95"), results.mean_ci95(left))) | {
        "rhs_mean": rhs_mean, "rhs_ci95": rhs_ci} | decide(spec["op"], spec["tol"], left - right)


def evaluate(claims: Iterable[Mapping], per_run: pd.DataFrame) -> pd.DataFrame:
    """All claims of one experiment, decided from its per-run table (``runs.csv``, :func:`pcl.results.read_run_stats`;
    ``summary.csv`` holds the same means and CIs, computed from it). Columns: :data:`COLUMNS`, in claim order."""
    experiments = sorted(set(per_run["experiment"].unique()))
    if len(experiments) > 1:
        raise ValueError(f"claims are decided within one experiment; the table holds {experiments}")
    rows = [evaluate_claim(c, per_run) for c in claims]
    table = pd.DataFrame(rows, columns=COLUMNS)
    # ints, "never" and None side by side: kept as objects, else pandas turns the counts into floats (4.0)
    table["seeds_needed"] = pd.Series([r["seeds_needed"] for r in rows], dtype=object)
    return table


def counts(table: pd.DataFrame) -> dict[str, int]:
    """``{verdict: number of claims}`` over :data:`VERDICTS` (zeros included), e.g. for ``metrics.json``."""
    unknown = set(table["verdict"]) - set(VERDICTS)
    if unknown:
        raise ValueError(f"unknown verdict(s) {sorted(unknown)}; expected one of {VERDICTS}")
    return {v: int((table["verdict"] == v).sum()) for v in VERDICTS}


# ------------------------------------------------------------------------------------------ rendering


def verdict_css(value: object) -> str:
    """CSS for one table cell: the verdict's colour, bold; nothing for other values."""
    colour = VERDICT_COLOURS.get(value) if isinstance(value, str) else None
    return f"color: {colour}; font-weight: bold" if colour else ""


def style(table: pd.DataFrame, column: str = "verdict"):
    """A pandas Styler colouring ``column`` by :data:`VERDICT_COLOURS`, without the index, NaN as blank."""
    return table.style.hide(axis="index").map(verdict_css, subset=[column]).format(na_rep="", precision=4)
