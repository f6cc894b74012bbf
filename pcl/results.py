"""Result tables: load training runs, select rounds on validation, summarize clients and seeds, diff experiments.

The protocol is the one ARCHITECTURE.md calls *honest evaluation* (peers.md §6.2 items 5-7):

* **Model selection uses the validation split only.** Each run is read at two rounds: ``final`` (the last round
  with a test evaluation) and ``best_val`` (the round with the best *unweighted* mean validation metric over
  clients that have validation data, earliest round on ties; absent when no client has any), as the
  decentralized-bilevel code reports "test at the hyper-step with best mean VALIDATION accuracy". Test metrics
  are then read at those rounds; a best-on-test round is never computed.
* **The distribution over clients** of the test metric, per run: unweighted ``mean``, sample-weighted ``wmean``
  (weights = the client's test ``n``, as FedAlt's code), ``std`` (population, ddof=0, as FedAlt's code), ``worst``
  client, ``bottom10`` and ``wbottom10`` (see below), and, where a ``local`` run of the same experiment and seed
  exists, per-client ``gain`` over it: ``gain_mean``, ``gain_worst`` and ``hurt_frac`` (fraction of clients with
  gain < 0; FedAlt paper §2.4 reports that some clients lose accuracy).
* **Statistics across seeds**: mean and 95% Student-t confidence half-width of every per-run statistic.

Direction: ``acc`` is better high, ``mse`` better low. ``worst``, ``bottom10`` and ``gain`` follow the direction,
so for ``mse`` ``worst`` is the largest error, ``bottom10`` the ⌈K/10⌉-th largest, and gain = local − run.

Quantile convention. ``bottom10`` is the ⌈K/10⌉-th worst of K clients, the decentralized-bilevel paper's
"bottom 10%" (numpy ``method="inverted_cdf"``). ``wbottom10`` is the sample-weighted inverted-CDF quantile
(numpy with ``weights=n``), the FedAlt paper's weighted 10th percentile; FedAlt's code (statsmodels
``DescrStatsW.quantile``) additionally averages two neighbouring clients when 0.1·Σn equals a cumulative weight
exactly, which we do not (we keep the lower, as ``bottom10`` does).

Files written by :func:`summarize` (atomically, byte-deterministic): ``clients.csv`` (per client at the selected
rounds, with gain), ``runs.csv`` (per run statistics, the input of :func:`diff`), ``summary.csv`` (across seeds) and
``metrics.json`` (headline numbers for DVC, :func:`metrics_dict`).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from pcl import diagnostics

RUN_KEYS = ["experiment", "algorithm", "setting", "seed"]
METRIC_COLUMNS = ["round", "client", "split", "metric", "value"]
RUN_JSON_KEYS = ("experiment", "algorithm", "setting", "seed", "federation_sha256")
HIGHER_IS_BETTER = {"acc": True, "mse": False}
SELECTIONS = ("final", "best_val")
STATS = ("mean", "wmean", "std", "worst", "bottom10", "wbottom10", "gain_mean", "gain_worst", "hurt_frac")
LOCAL = "local"
LOCAL_DEFAULT_SETTING = "default"
RUNS_FILE = "runs.csv"
FLOAT_FORMAT = "%.12g"
_ORDER = {"selection": {s: i for i, s in enumerate(SELECTIONS)}, "stat": {s: i for i, s in enumerate(STATS)}}


# ---------------------------------------------------------------------------------------------------- loading


def load_runs(run_dirs: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Read each run's ``metrics.csv`` + ``run.json`` into one long table.

    Columns: experiment, algorithm, setting, seed, federation_sha256, round, client, split, metric, value.
    Raises FileNotFoundError / ValueError naming the missing or corrupt file, or two directories holding the
    same (experiment, algorithm, setting, seed).
    """
    frames, seen = [], {}
    for run_dir in map(Path, run_dirs):
        info, rounds = _read_run_json(run_dir / "run.json")
        key = tuple(info[k] for k in RUN_KEYS)
        if key in seen:
            raise ValueError(f"{run_dir} and {seen[key]} are both run {_run_name(key)}")
        seen[key] = run_dir
        metrics = _read_metrics(run_dir / "metrics.csv")
        _check_finished(run_dir / "metrics.csv", metrics, rounds)
        frames.append(metrics.assign(**info))
    if not frames:
        raise ValueError("no run directories given")
    table = pd.concat(frames, ignore_index=True)[[*RUN_JSON_KEYS, *METRIC_COLUMNS]]
    return table.sort_values([*RUN_KEYS, "split", "round", "client", "metric"], ignore_index=True)


def _check_finished(path: Path, metrics: pd.DataFrame, rounds: int) -> None:
    """A run whose metrics stop before its configured last round (truncated or unfinished) must not be summarized:
    its "final" would silently be an earlier round."""
    last = int(metrics["round"].max()) if len(metrics) else None
    if last != rounds:
        raise ValueError(f"{path} ends at round {last} but the run is configured for {rounds} "
                         "rounds: truncated or unfinished; rerun it")


def _read_run_json(path: Path) -> tuple[dict, int]:
    """The run's identifying keys, and its configured last round (``config.train.rounds``)."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"missing run file {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"corrupt run file {path}: {err}") from None
    if not isinstance(info, dict):
        raise ValueError(f"corrupt run file {path}: expected a JSON object")
    missing = [k for k in RUN_JSON_KEYS if k not in info]
    if missing:
        raise ValueError(f"run file {path} lacks key(s) {missing}")
    if isinstance(info["seed"], bool) or not isinstance(info["seed"], int):
        raise ValueError(f"run file {path}: 'seed' must be an integer, got {info['seed']!r}")
    config = info.get("config") if isinstance(info.get("config"), dict) else {}
    rounds = (config.get("train") if isinstance(config.get("train"), dict) else {}).get("rounds")
    if not isinstance(rounds, int) or isinstance(rounds, bool):
        raise ValueError(f"run file {path} lacks config.train.rounds (the configured last round)")
    return {k: info[k] if k == "seed" else str(info[k]) for k in RUN_JSON_KEYS}, rounds


def _read_metrics(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype={"split": str, "metric": str})
    except FileNotFoundError:
        raise FileNotFoundError(f"missing metrics file {path}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"corrupt metrics file {path}: {err}") from None
    missing = sorted(set(METRIC_COLUMNS) - set(table.columns))
    if missing:
        raise ValueError(f"metrics file {path} lacks column(s) {missing}")
    try:
        table = table[METRIC_COLUMNS].astype({"round": "int64", "client": "int64", "value": "float64"})
    except (ValueError, TypeError) as err:
        raise ValueError(f"corrupt metrics file {path}: {err}") from None
    repeated = table.duplicated(["round", "client", "split", "metric"])
    if repeated.any():
        row = table[repeated].iloc[0]
        raise ValueError(f"metrics file {path} repeats round {row['round']} client {row['client']} "
                         f"split {row['split']!r} metric {row['metric']!r}")
    primary = sorted(set(table["metric"].unique()) & HIGHER_IS_BETTER.keys())
    if len(primary) != 1:
        raise ValueError(f"metrics file {path} must hold exactly one of {sorted(HIGHER_IS_BETTER)}, got {primary}")
    if "n" not in set(table["metric"].unique()):
        raise ValueError(f"metrics file {path} lacks metric 'n' (the client's sample count)")
    return table


def _run_name(key: tuple) -> str:
    experiment, algorithm, setting, seed = key
    return f"{experiment}:{algorithm}/{setting} seed {seed}"


# ------------------------------------------------------------------------------------- per client, per run


def client_metrics(runs: pd.DataFrame) -> pd.DataFrame:
    """Each client's test metric at each run's ``final`` and ``best_val`` rounds, with its gain over Local.

    Clients without samples (``n`` = 0, no metric row) are skipped: a client with no test data has no row here,
    and ``best_val`` averages the validation metric over the clients that have validation data; a run where no
    client has any has no ``best_val`` rows (nothing to select on), only ``final``.

    Columns: experiment, algorithm, setting, seed, federation_sha256, selection, round, client, metric, value, n,
    gain (NaN where the experiment has no ``local`` run for that seed). Local is read at its *own* selected
    round of the same selection rule.
    """
    frames = [_selected_clients(run, key) for key, run in runs.groupby(RUN_KEYS, sort=True)]
    table = pd.concat(frames, ignore_index=True)
    return _sort(_add_gain_over_local(table), [*RUN_KEYS, "selection", "client"])


def _selected_clients(run: pd.DataFrame, key: tuple) -> pd.DataFrame:
    name = _run_name(key)
    metric = (set(run["metric"].unique()) & HIGHER_IS_BETTER.keys()).pop()
    splits = set(run["split"].unique())
    for split in ("val", "test"):
        if split not in splits:
            raise ValueError(f"run {name} has no {split!r} evaluation; model selection needs 'val' and 'test'")
    wide = run.pivot(index=["split", "round", "client"], columns="metric", values="value")
    test = wide.loc["test"]
    val = wide.loc["val"]
    val_mean = val.loc[val["n"] > 0, metric].groupby(level="round").mean()  # clients with validation data only
    rounds = {"final": int(test.index.get_level_values("round").max())}
    if len(val_mean):  # no client has validation data: there is nothing to select on, so no best_val
        rounds["best_val"] = int(val_mean.idxmax() if HIGHER_IS_BETTER[metric] else val_mean.idxmin())
    frames = []
    for selection, rnd in rounds.items():
        if rnd not in test.index.get_level_values("round"):
            raise ValueError(f"run {name}: {selection} round {rnd} has no test evaluation")
        at = test.xs(rnd, level="round")[[metric, "n"]]
        at = at[~(at["n"] == 0)]  # a client without test samples has no test metric: left out, not counted as 0
        if at.empty:
            raise ValueError(f"run {name}: no client has test samples")
        if at.isna().any().any() or (at["n"] < 0).any():
            client = at.index[at.isna().any(axis=1) | (at["n"] < 0)][0]
            raise ValueError(f"run {name}: client {client} lacks test {metric!r} or 'n' at round {rnd}")
        frames.append(pd.DataFrame({
            **dict(zip(RUN_KEYS, key)), "federation_sha256": run["federation_sha256"].iloc[0],
            "selection": selection, "round": rnd, "client": at.index.to_numpy(), "metric": metric,
            "value": at[metric].to_numpy(), "n": at["n"].to_numpy()}))
    return pd.concat(frames, ignore_index=True)


def _add_gain_over_local(table: pd.DataFrame) -> pd.DataFrame:
    """gain = (run − local) for acc, (local − run) for mse, per client, same experiment/seed/selection."""
    reference = _local_reference(table)
    if reference is None:
        return table.assign(gain=np.nan)
    merged = table.merge(reference, on=["experiment", "seed", "selection", "client"], how="left",
                         validate="many_to_one")
    has_local = merged["local_value"].notna()
    for key, run in merged.groupby(RUN_KEYS, sort=True):
        local = run["local_value"].notna()
        if not local.any():
            continue
        if not local.all():
            raise ValueError(f"run {_run_name(key)}: client {run.loc[~local, 'client'].iloc[0]} "
                             f"is missing from its local run")
        if (run["federation_sha256"] != run["local_federation"]).any():
            raise ValueError(f"run {_run_name(key)} uses federation {run['federation_sha256'].iloc[0]} but its "
                             f"local run uses {run['local_federation'].iloc[0]}: gain needs the same clients")
    sign = np.where(merged["metric"].map(HIGHER_IS_BETTER), 1.0, -1.0)
    merged["gain"] = np.where(has_local, sign * (merged["value"] - merged["local_value"]), np.nan)
    return merged.drop(columns=["local_value", "local_federation"])


def _local_reference(table: pd.DataFrame) -> pd.DataFrame | None:
    """One local run per (experiment, seed): the only one, else the ``default`` setting."""
    chosen = []
    for (experiment, seed), local in table[table["algorithm"] == LOCAL].groupby(["experiment", "seed"]):
        settings = sorted(set(local["setting"].unique()))
        if len(settings) > 1:
            if LOCAL_DEFAULT_SETTING not in settings:
                raise ValueError(f"experiment {experiment} seed {seed} has local settings {settings}; gain over "
                                 f"local needs one of them, or one named {LOCAL_DEFAULT_SETTING!r}")
            local = local[local["setting"] == LOCAL_DEFAULT_SETTING]
        chosen.append(local)
    if not chosen:
        return None
    return (pd.concat(chosen)[["experiment", "seed", "selection", "client", "value", "federation_sha256"]]
            .rename(columns={"value": "local_value", "federation_sha256": "local_federation"}))


def run_stats(clients: pd.DataFrame) -> pd.DataFrame:
    """Per run and selection, the statistics of the client distribution (module docstring), long format.

    Columns: experiment, algorithm, setting, seed, selection, round, metric, stat, value.
    Gain statistics are present only for runs with a local reference.
    """
    records = []
    for key, group in clients.groupby([*RUN_KEYS, "selection", "round", "metric"], sort=True):
        summary = client_distribution(group["value"].to_numpy(), group["n"].to_numpy(),
                                      group["gain"].to_numpy(), HIGHER_IS_BETTER[key[-1]])
        records += [(*key, stat, value) for stat, value in summary.items()]
    table = pd.DataFrame(records, columns=[*RUN_KEYS, "selection", "round", "metric", "stat", "value"])
    return _sort(table, [*RUN_KEYS, "selection", "metric", "stat"])


def client_distribution(value: np.ndarray, n: np.ndarray, gain: np.ndarray | None = None,
                        higher_is_better: bool = True) -> dict[str, float]:
    """Summary statistics of one metric over clients; ``n`` weights ``wmean`` and ``wbottom10``.

    ``gain`` statistics are added when ``gain`` is given and has no NaN.
    """
    value, n = np.asarray(value, dtype=float), np.asarray(n, dtype=float)
    sign = 1.0 if higher_is_better else -1.0
    oriented = sign * value  # low = bad, so the tail quantiles read the same for acc and mse
    out = {
        "mean": value.mean(),
        "wmean": np.average(value, weights=n),
        "std": value.std(),
        "worst": sign * oriented.min(),
        "bottom10": sign * np.quantile(oriented, 0.1, method="inverted_cdf"),
        "wbottom10": sign * np.quantile(oriented, 0.1, method="inverted_cdf", weights=n),
    }
    if gain is not None and not np.isnan(gain).any():
        gain = np.asarray(gain, dtype=float)
        out |= {"gain_mean": gain.mean(), "gain_worst": gain.min(), "hurt_frac": np.mean(gain < 0)}
    return {stat: float(v) for stat, v in out.items()}


# ------------------------------------------------------------------------------------------- across seeds


def mean_ci95(values: Iterable[float]) -> tuple[float, float]:
    """Mean and 95% half-width ``t_{0.975, s-1} · sd / sqrt(s)`` over s seeds; half-width NaN when s < 2."""
    values = np.asarray(list(values), dtype=float)
    mean = float(values.mean()) if values.size else math.nan
    if values.size < 2:
        return mean, math.nan
    return mean, float(stats.t.ppf(0.975, values.size - 1) * stats.sem(values))


def seed_summary(per_run: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% CI half-width (Student t over seeds) of each per-run statistic.

    Columns: experiment, algorithm, setting, selection, metric, stat, n_seeds, mean, ci95.
    """
    keys = ["experiment", "algorithm", "setting", "selection", "metric", "stat"]
    records = []
    for key, group in per_run.groupby(keys, sort=True):
        records.append((*key, len(group), *mean_ci95(group.sort_values("seed")["value"])))
    return _sort(pd.DataFrame(records, columns=[*keys, "n_seeds", "mean", "ci95"]), keys)


def metrics_dict(summary: pd.DataFrame) -> dict[str, dict[str, float | str]]:
    """The headline numbers of one experiment for DVC: ``{"best": {...}, "local": {...}}``.

    ``local``: Local's mean test metric over clients (``acc`` or ``mse``) and its 10th-percentile client (``p10``,
    the ``bottom10`` statistic); ``best``: the same for the method with the best mean (``method``:
    algorithm/setting, Local excluded), and its mean gain over Local (``gain``). All are means over seeds at the
    best-validation round (``final`` where no client has validation data). Only a few keys, the same in every
    experiment: `dvc metrics show` prints one column per key over all experiments, so per-algorithm numbers
    (and confidence intervals) stay in summary.csv. Floats are rounded to 12 significant digits.
    """
    experiments = sorted(set(summary["experiment"].unique()))
    if len(experiments) > 1:
        raise ValueError(f"metrics.json describes one experiment; got {experiments}")
    selection = "best_val" if (summary["selection"] == "best_val").any() else "final"
    at = summary[summary["selection"] == selection].set_index(["algorithm", "setting", "stat"])["mean"]
    metric = summary["metric"].iloc[0]
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0

    def headline(alg: str, setting: str) -> dict[str, float | str]:
        out = {metric: _json_float(at[alg, setting, "mean"]), "p10": _json_float(at[alg, setting, "bottom10"])}
        gain = at.get((alg, setting, "gain_mean"), math.nan) if alg != LOCAL else math.nan  # Local's is 0
        return out if math.isnan(gain) else {**out, "gain": _json_float(gain)}

    methods = sorted({(alg, setting) for alg, setting, _ in at.index})
    out: dict[str, dict[str, float | str]] = {}
    others = [m for m in methods if m[0] != LOCAL]
    if others:
        best = max(others, key=lambda m: (sign * at[(*m, "mean")], m))
        out["best"] = {"method": "/".join(best), **headline(*best)}
    local = [m for m in methods if m[0] == LOCAL]
    if local:
        out["local"] = headline(*(local[0] if len(local) == 1 else (LOCAL, LOCAL_DEFAULT_SETTING)))
    return out


def claims_dict(counts: dict[str, int]) -> dict[str, int]:
    """The claim verdict counts for metrics.json: holds, fails, inconclusive, and untestable only when some are
    (a column of zeros in every experiment would only widen `dvc metrics show`)."""
    return {verdict: n for verdict, n in counts.items() if n or verdict != "untestable"}


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(f"{value:.12g}")


# ----------------------------------------------------------------------------------------------- diff


def diff(results_a: pd.DataFrame, results_b: pd.DataFrame) -> pd.DataFrame:
    """Compare two experiments' per-run tables (:func:`run_stats` / ``runs.csv``), B relative to A.

    Per (algorithm, setting, selection, metric, stat): each side's mean and 95% CI over all its seeds, and the
    paired difference B − A over the seeds both have (mean and paired-t 95% half-width). Rows found on one side
    only keep NaN for the other. Columns: algorithm, setting, selection, metric, stat, n_a, mean_a, ci95_a,
    n_b, mean_b, ci95_b, n_pairs, diff, diff_ci95.
    """
    keys = ["algorithm", "setting", "selection", "metric", "stat"]
    for name, table in (("results_a", results_a), ("results_b", results_b)):
        experiments = sorted(set(table["experiment"].unique()))
        if len(experiments) != 1:
            raise ValueError(f"{name} must hold exactly one experiment, got {experiments}")
    merged = pd.merge(results_a[[*keys, "seed", "value"]], results_b[[*keys, "seed", "value"]],
                      on=[*keys, "seed"], how="outer", suffixes=("_a", "_b"), validate="one_to_one")
    records = []
    for key, group in merged.groupby(keys, sort=True):
        group = group.sort_values("seed")
        a, b = group["value_a"].dropna(), group["value_b"].dropna()
        paired = (group["value_b"] - group["value_a"]).dropna()
        records.append((*key, len(a), *mean_ci95(a), len(b), *mean_ci95(b), len(paired), *mean_ci95(paired)))
    columns = [*keys, "n_a", "mean_a", "ci95_a", "n_b", "mean_b", "ci95_b", "n_pairs", "diff", "diff_ci95"]
    return _sort(pd.DataFrame(records, columns=columns), keys)


def _decimals(ci: float) -> int:
    """Decimals that show a 95% half-width to two significant digits (at most 6: below that it is float noise)."""
    if math.isnan(ci) or ci <= 0:
        return 4
    return int(min(6, max(0, 1 - math.floor(math.log10(ci)))))


def format_diff(table: pd.DataFrame, label_a: str = "A", label_b: str = "B") -> str:
    """Terminal rendering of :func:`diff`: ``mean ± ci95 (n)`` per side, each rounded to its CI's precision; ``*``
    where the paired 95% CI of B − A excludes 0 (explained under the table)."""
    def cell(mean: float, ci: float, n: int, signed: bool = False) -> str:
        if n == 0:
            return "-"
        d = _decimals(ci)
        ci_text = "n/a" if math.isnan(ci) else f"{ci:.{d}f}"
        return f"{mean:{'+' if signed else ''}.{d}f} ± {ci_text} (n={n})"

    rows = [{
        "run": f"{r.algorithm}/{r.setting}", "selection": r.selection, "metric": r.metric, "stat": r.stat,
        label_a: cell(r.mean_a, r.ci95_a, r.n_a), label_b: cell(r.mean_b, r.ci95_b, r.n_b),
        f"{label_b} - {label_a}": cell(r.diff, r.diff_ci95, r.n_pairs, signed=True)
        + (" *" if abs(r.diff) > r.diff_ci95 else ""),  # False when the CI is NaN
    } for r in table.itertuples(index=False)]
    if not rows:
        return "(nothing to compare)"
    legend = (f"\nmean ± 95% CI half-width over seeds (n = seeds); {label_b} - {label_a} is the paired difference "
              f"over the seeds both have; * = its CI excludes 0.")
    return pd.DataFrame(rows).to_string(index=False) + legend


def federations(path: str | os.PathLike) -> set[str]:
    """The federation hashes of a summarized experiment (``clients.csv`` beside ``runs.csv``)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    return set(pd.read_csv(folder / "clients.csv", usecols=["federation_sha256"])["federation_sha256"].astype(str))


# ------------------------------------------------------------------------------------------ files


def summarize(run_dirs: Iterable[str | os.PathLike], out_dir: str | os.PathLike,
              claims: list[dict] | None = None) -> pd.DataFrame:
    """Compute everything first, then write clients.csv, runs.csv, summary.csv, metrics.json and diagnostics.csv
    (every run's diagnostics, see ``pcl.diagnostics``); return summary. With the experiment's ``claims``,
    metrics.json also counts their verdicts (``pcl.claims``: holds / fails / inconclusive / untestable).

    An error (bad run, mixed experiments) therefore leaves ``out_dir`` untouched.
    """
    run_dirs = list(run_dirs)
    clients = client_metrics(load_runs(run_dirs))
    diag = diagnostics.collect(run_dirs)
    per_run = run_stats(clients)
    summary = seed_summary(per_run)
    metrics = metrics_dict(summary)
    if claims is not None:
        from pcl import claims as claim_checks  # it builds on this module

        metrics["claims"] = claims_dict(claim_checks.counts(claim_checks.evaluate(claims, per_run)))
    out = Path(out_dir)
    write_csv(clients, out / "clients.csv")
    write_csv(per_run, out / RUNS_FILE)
    write_csv(summary, out / "summary.csv")
    write_json(metrics, out / "metrics.json")
    write_csv(diag, out / "diagnostics.csv")
    return summary


def read_run_stats(path: str | os.PathLike) -> pd.DataFrame:
    """Read a ``runs.csv`` written by :func:`summarize` (``path`` is the file or its folder), for :func:`diff`."""
    path = Path(path)
    file = path / RUNS_FILE if path.is_dir() else path
    columns = [*RUN_KEYS, "selection", "round", "metric", "stat", "value"]
    try:
        table = pd.read_csv(file, dtype={"experiment": str, "algorithm": str, "setting": str, "seed": "int64",
                                         "selection": str, "round": "int64", "metric": str, "stat": str,
                                         "value": "float64"})
    except FileNotFoundError:
        raise FileNotFoundError(f"missing per-run results {file}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"corrupt per-run results {file}: {err}") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"per-run results {file} lack column(s) {missing}")
    return table[columns]


def write_csv(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Atomic, byte-deterministic CSV: the caller fixes column and row order; floats as ``%.12g``, NaN empty."""
    _write_atomic(Path(path), table.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n"))


def write_json(obj: object, path: str | os.PathLike) -> None:
    """Atomic, byte-deterministic JSON (sorted keys, strict: no NaN)."""
    _write_atomic(Path(path), json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def _write_atomic(path: Path, text: str) -> None:
    """Write a temp file in the same folder, then ``os.replace``: readers (Snakemake, DVC) never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _sort(table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Sort rows; ``selection`` and ``stat`` in their declared order (SELECTIONS, STATS), the rest as values."""
    def key(column: pd.Series) -> pd.Series:
        order = _ORDER.get(column.name)
        return column.map(order) if order else column

    return table.sort_values(by, key=key, ignore_index=True, kind="stable")
