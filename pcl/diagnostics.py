"""Per-round diagnostics beside metrics.csv: what an algorithm learnt, not how well it predicts.

DAC's who-sampled-whom counts, estimated mixing weights, a hypergradient's error or the averaging weight chosen per
client are recorded by ``ctx.diagnose(name, value)`` (or returned by ``round`` as ``(state, {name: value})``).
``diagnostics.csv`` is one tidy long table, read with ``pandas.read_csv`` in one call:

    round, name, row, col, value

``row``/``col`` are -1 where a dimension does not exist: a scalar is (-1, -1), entry k of a per-client vector is
(k, -1), entry (i, j) of a K x K matrix is (i, j). ``as_array`` turns one diagnostic of one round back into its shape.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ["round", "name", "row", "col", "value"]


def rows(t: int, name: str, value) -> list[tuple]:
    """Long-table rows of one diagnostic (a scalar, vector or matrix) at round ``t``."""
    a = np.asarray(value.detach().cpu().double() if hasattr(value, "detach") else value, dtype=np.float64)
    if a.ndim > 2:
        raise ValueError(f"diagnostic {name!r}: at most 2 dimensions (scalar, vector, matrix), got shape {a.shape}")
    if a.ndim == 0:
        return [(t, name, -1, -1, float(a))]
    if a.ndim == 1:
        return [(t, name, i, -1, float(v)) for i, v in enumerate(a)]
    return [(t, name, i, j, float(a[i, j])) for i in range(a.shape[0]) for j in range(a.shape[1])]


def table(records: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(records, columns=COLUMNS).sort_values(["round", "name", "row", "col"], kind="stable")


def as_array(frame: pd.DataFrame, name: str, t: int | None = None) -> np.ndarray:
    """Diagnostic ``name`` at round ``t`` (default: the last round that has it) as a scalar, vector or matrix."""
    d = frame[frame["name"] == name]
    if d.empty:
        raise KeyError(f"no diagnostic {name!r}; recorded: {sorted(frame['name'].unique())}")
    d = d[d["round"] == (d["round"].max() if t is None else t)]
    if (d["row"] < 0).all():
        return np.float64(d["value"].iloc[0])
    if (d["col"] < 0).all():
        return d.sort_values("row")["value"].to_numpy()
    return d.pivot(index="row", columns="col", values="value").to_numpy()


def collect(run_dirs) -> pd.DataFrame:
    """Every run's diagnostics.csv in one table, with the run's algorithm, setting and seed (for reports)."""
    frames = []
    for d in map(Path, run_dirs):
        info = json.loads((d / "run.json").read_text())
        path = d / "diagnostics.csv"
        if path.exists():
            frames.append(pd.read_csv(path).assign(algorithm=info["algorithm"], setting=info["setting"],
                                                   seed=info["seed"]))
    keys = ["algorithm", "setting", "seed"]
    if not frames:
        return pd.DataFrame(columns=[*keys, *COLUMNS])
    table = pd.concat(frames, ignore_index=True)[[*keys, *COLUMNS]]
    return table.sort_values([*keys, "round", "name", "row", "col"], ignore_index=True, kind="stable")
