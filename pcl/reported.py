"""The papers' reported numbers beside ours.

An experiment config may declare, under ``reported``, the numbers its paper reports for the rows the experiment
reproduces, with their source (table, README, notebook and its version)::

    reported:
      source: "Pillutla et al. 2022, authors' notebook plotting/results1.ipynb, EMNIST"
      unit: percent                 # the paper's unit; ours (fractions) are scaled to it
      rows:
      - label: FedAlt, input layer  # the paper's row, as the paper names it
        run: fedalt/input           # our run standing for it; absent: a row not run here, listed for reference
        values: {wmean: 93.52, wbottom10: 86.50}
        spread: {wmean: 0.04}       # the paper's own ± where it gives one (its convention, not a 95% CI)

:func:`compare` lays ours (mean ± 95% CI over seeds, from ``summary.csv``) beside each value, with the difference.
Every report reads it from the config, so the paper's numbers live once, in the experiment they belong to.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # validation (``errors``) runs at every workflow start: no pandas there
    import pandas as pd

SCALE = {"percent": 100.0, "fraction": 1.0}
COLUMNS = ["paper row", "run", "stat", "paper", "ours", "ours − paper", "seeds"]


def errors(config: Mapping, origin: str = "config") -> list[str]:
    """One line per ``reported`` row whose ``run`` is not a setting of the experiment, or whose ``spread`` names a
    statistic it gives no value for (the schema checks the shape)."""
    rows = (config.get("reported") or {}).get("rows", [])
    runs = {f"{alg}/{s}" for alg, settings in config.get("algorithms", {}).items() for s in settings}
    lines = []
    for i, row in enumerate(rows):
        where = f"{origin}: reported.rows.{i} ({row.get('label', '?')!r})"
        if "run" in row and row["run"] not in runs:
            lines.append(f"{where}: run {row['run']!r} is not a run of this experiment; it has {sorted(runs)}")
        extra = sorted(set(row.get("spread", {})) - set(row.get("values", {})))
        if extra:
            lines.append(f"{where}: spread for {extra} without a value")
    return lines


def value(config: Mapping, run: str, stat: str) -> float:
    """The paper's value of ``stat`` for our ``run`` (in the paper's unit); NaN when the paper gives none."""
    for row in (config.get("reported") or {}).get("rows", []):
        if row.get("run") == run and stat in row["values"]:
            return float(row["values"][stat])
    return math.nan


def _cell(mean: float, ci: float, signed: bool = False) -> str:
    if math.isnan(mean):
        return ""
    sign = "+" if signed else ""
    return f"{mean:{sign}.2f}" if math.isnan(ci) else f"{mean:{sign}.2f} ± {ci:.2f}"


def compare(config: Mapping, summary: pd.DataFrame, selection: str = "best_val",
            runs: Sequence[str] = ()) -> pd.DataFrame:
    """One row per (paper row, statistic) of ``config['reported']``: the paper's value (± its own spread), ours at
    ``selection`` (mean ± 95% CI over seeds, scaled to the paper's unit) and ours − paper (the same CI: the paper's
    value is a constant); then, for each of ``runs`` no paper row stands for, ours alone ("not in the paper").
    Ours is empty for a row not run here or not (yet) in ``summary``."""
    import pandas as pd

    reported = config.get("reported") or {}
    scale = SCALE[reported.get("unit", "percent")]
    ours = summary[summary["selection"] == selection].set_index(["algorithm", "setting", "stat"])
    rows = list(reported.get("rows", []))
    stats = list(dict.fromkeys(stat for row in rows for stat in row["values"]))
    declared = {row.get("run") for row in rows}
    rows += [{"label": "(not in the paper)", "run": run, "values": dict.fromkeys(stats, math.nan)}
             for run in runs if run not in declared]
    records = []
    for row in rows:
        run = row.get("run", "")
        for stat, paper in row["values"].items():
            key = (*run.split("/", 1), stat) if run else None
            mean, ci, n = math.nan, math.nan, 0
            if key in ours.index:
                hit = ours.loc[key]
                mean, ci, n = scale * hit["mean"], scale * hit["ci95"], int(hit["n_seeds"])
            spread = row.get("spread", {}).get(stat, math.nan)
            records.append({"paper row": row["label"], "run": run or "(not run here)", "stat": stat,
                            "paper": _cell(float(paper), float(spread)), "ours": _cell(mean, ci),
                            "ours − paper": _cell(mean - float(paper), ci, signed=True), "seeds": n})
    return pd.DataFrame(records, columns=COLUMNS)


def heading(config: Mapping, scale: str) -> str:
    """What the comparison means: the source, the unit, and whether this scale is the paper's setting."""
    reported = config["reported"]
    unit = "%" if reported.get("unit", "percent") == "percent" else "as fractions"
    where = ("this is the paper's setting (`scale=paper`): the difference is a reproduction error"
             if scale == "paper" else
             f"this run is at scale `{scale}`, not the paper's setting: compare orderings, not the numbers "
             "(`--config scale=paper` runs the paper's)")
    return (f"Paper: {reported['source']}. Values in {unit}; ours: mean ± 95% CI over seeds at the best-validation "
            f"round; the paper's ± is its own spread where it gives one. Here {where}.")
