"""The personalization benchmark table: each method tuned on validation, reported on test.

Every benchmark experiment (one partition each, ``workflow/config/experiments/benchmark_*.yaml``) runs every method
with a small declared grid of named configurations (settings) over the same seeds. From what ``pcl summarize`` and
the train jobs wrote (``results/<exp>/{config.yaml,runs.csv,clients.csv}`` and each run's ``metrics.csv``):

1. **Validation score of a run**: the unweighted mean over clients (with validation data) of the validation metric
   at the run's selected round (``best_val``, the round pcl.results picked on validation; never a test round).
2. **Selection**: per experiment and method, the setting with the best validation score averaged over seeds; ties
   go to the setting declared first (the config's order), so the choice never depends on test numbers.
3. **Report on test**, at the selected round of the chosen setting: per seed the client distribution
   (pcl.results.client_distribution: ``mean``, ``bottom10`` = ⌈K/10⌉-th worst client, ...) with each client's gain
   over the *chosen* Local setting of the same seed (pcl.results' own gain uses ``local/default``, which need not be
   Local's best), so ``gain_mean`` and ``hurt_frac`` (share of clients with gain < 0) compare tuned against tuned.
   Then mean and 95% Student-t half-width over seeds (pcl.results.mean_ci95); gain is paired by seed.

Ranks (:func:`ranks`): per experiment, methods ranked by mean test metric (1 = best, ties share the mean rank),
averaged over experiments with a 95% CI, and the Nemenyi critical difference of the Friedman mean ranks
(Demšar, JMLR 2006, eq. 4; two methods whose mean ranks differ by less are not distinguished).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from pcl import results

SELECTION = "best_val"
TABLE_STATS = ("mean", "bottom10", "gain_mean", "hurt_frac")
KEYS = ["experiment", "algorithm"]


def declared_settings(config: dict) -> pd.DataFrame:
    """Every (algorithm, setting) a resolved experiment config declares, with its position (the tie-break order)
    and hyperparameters. Columns: experiment, algorithm, setting, order, hparams (``k=v, ...``)."""
    rows = [(config["name"], alg, setting, i, ", ".join(f"{k}={v}" for k, v in (values or {}).items()))
            for alg, settings in config["algorithms"].items() for i, (setting, values) in enumerate(settings.items())]
    return pd.DataFrame(rows, columns=["experiment", "algorithm", "setting", "order", "hparams"])


def validation_scores(runs: pd.DataFrame, per_run: pd.DataFrame, selection: str = SELECTION) -> pd.DataFrame:
    """Each run's validation score: the mean over clients with validation data (``n`` > 0) of the validation
    metric at the round ``per_run`` (runs.csv) records for ``selection``.

    ``runs``: pcl.results.load_runs' long table. Columns: experiment, algorithm, setting, seed, metric, round, val.
    """
    rounds = (per_run[per_run["selection"] == selection][[*results.RUN_KEYS, "metric", "round"]]
              .drop_duplicates())
    if rounds.empty:
        raise ValueError(f"no run has a {selection!r} round (runs.csv); selection needs validation data")
    val = runs[runs["split"] == "val"].pivot_table(index=[*results.RUN_KEYS, "round", "client"], columns="metric",
                                                   values="value").reset_index()
    table = rounds.merge(val, on=[*results.RUN_KEYS, "round"], how="left", validate="one_to_many")
    table = table[table["n"] > 0]
    table["val"] = table.to_numpy()[np.arange(len(table)), table.columns.get_indexer(table["metric"])].astype(float)
    scores = table.groupby([*results.RUN_KEYS, "metric", "round"], as_index=False)["val"].mean()
    missing = rounds.merge(scores, how="left", on=[*results.RUN_KEYS, "metric", "round"])["val"].isna()
    if missing.any():
        raise ValueError(f"run {tuple(rounds[missing.to_numpy()].iloc[0][results.RUN_KEYS])} has no validation "
                         f"metric at its {selection} round")
    return scores


def select(scores: pd.DataFrame, declared: pd.DataFrame) -> pd.DataFrame:
    """Per experiment and algorithm, the setting with the best seed-mean validation score (:func:`validation_scores`);
    ties to the first declared (``declared`` from :func:`declared_settings`).

    Columns: experiment, algorithm, setting, hparams, val, n_configs (declared), n_tried (with results).
    """
    mean = scores.groupby([*KEYS, "setting", "metric"], as_index=False)["val"].mean()
    mean = mean.merge(declared, on=[*KEYS, "setting"], how="left", validate="one_to_one")
    if mean["order"].isna().any():
        row = mean[mean["order"].isna()].iloc[0]
        raise ValueError(f"run {row.algorithm}/{row.setting} of {row.experiment} is not declared by its config")
    rows = []
    for (exp, alg), group in mean.groupby(KEYS, sort=True):
        higher = results.HIGHER_IS_BETTER[group["metric"].iloc[0]]
        oriented = group["val"] if higher else -group["val"]
        best = group[oriented == oriented.max()].sort_values("order").iloc[0]
        n_configs = int(((declared["experiment"] == exp) & (declared["algorithm"] == alg)).sum())
        rows.append((exp, alg, best["setting"], best["hparams"], best["val"], n_configs, len(group)))
    return pd.DataFrame(rows, columns=[*KEYS, "setting", "hparams", "val", "n_configs", "n_tried"])


def chosen_clients(clients: pd.DataFrame, chosen: pd.DataFrame, selection: str = SELECTION) -> pd.DataFrame:
    """The test metric of every client of every chosen run (clients.csv rows at ``selection``), with ``gain``
    recomputed against the chosen Local setting of the same experiment and seed (NaN without a Local)."""
    rows = clients[clients["selection"] == selection].merge(chosen[[*KEYS, "setting"]], on=[*KEYS, "setting"])
    rows = rows.drop(columns="gain")
    local = rows[rows["algorithm"] == results.LOCAL][["experiment", "seed", "client", "value"]]
    rows = rows.merge(local.rename(columns={"value": "local_value"}), on=["experiment", "seed", "client"],
                      how="left", validate="many_to_one")
    has_local = rows["experiment"].isin(local["experiment"])
    if rows.loc[has_local, "local_value"].isna().any():
        row = rows[has_local & rows["local_value"].isna()].iloc[0]
        raise ValueError(f"{row.experiment}: client {row.client} of seed {row.seed} has no chosen Local run")
    sign = np.where(rows["metric"].map(results.HIGHER_IS_BETTER), 1.0, -1.0)
    rows["gain"] = sign * (rows["value"] - rows["local_value"])
    return rows.drop(columns="local_value")


def table(chosen: pd.DataFrame, clients: pd.DataFrame) -> pd.DataFrame:
    """The benchmark table, one row per experiment and algorithm: the chosen setting, its configuration counts and,
    for each of TABLE_STATS, the mean over seeds and 95% CI half-width (``<stat>``, ``<stat>_ci95``).

    ``chosen``: :func:`select`; ``clients``: :func:`chosen_clients`.
    """
    per_seed = []
    for (exp, alg, seed, metric), group in clients.groupby([*KEYS, "seed", "metric"], sort=True):
        gain = group["gain"].to_numpy()
        per_seed.append({"experiment": exp, "algorithm": alg, "seed": seed, "metric": metric,
                         **results.client_distribution(group["value"].to_numpy(), group["n"].to_numpy(),
                                                       None if np.isnan(gain).any() else gain,
                                                       results.HIGHER_IS_BETTER[metric])})
    per_seed = pd.DataFrame(per_seed)
    rows = []
    for (exp, alg, metric), group in per_seed.groupby([*KEYS, "metric"], sort=True):
        row = {"experiment": exp, "algorithm": alg, "metric": metric, "n_seeds": len(group)}
        for stat in TABLE_STATS:
            values = group[stat] if stat in group else pd.Series([math.nan])
            row[stat], row[f"{stat}_ci95"] = results.mean_ci95(values)
        rows.append(row)
    out = chosen.merge(pd.DataFrame(rows), on=KEYS, how="left", validate="one_to_one")
    return out.sort_values(KEYS, ignore_index=True)


def ranks(bench: pd.DataFrame, stat: str = "mean") -> tuple[pd.DataFrame, float]:
    """Mean rank of each algorithm across experiments (rank 1 = best ``stat``; ties share the mean rank), its 95%
    CI over experiments, and the Nemenyi critical difference at 0.05 (k algorithms, N experiments; Demšar 2006).

    Only algorithms present in every experiment are ranked (the Friedman test needs complete blocks).
    Returns (columns: algorithm, mean_rank, ci95, n_experiments, sorted best first; critical difference).
    """
    wide = bench.pivot(index="experiment", columns="algorithm", values=stat).dropna(axis=1)
    higher = bench.groupby("experiment")["metric"].first().map(results.HIGHER_IS_BETTER).reindex(wide.index)
    oriented = wide.mul(np.where(higher, -1.0, 1.0), axis=0)  # rank 1 = best: rank the negated "better" direction
    rank = oriented.apply(lambda r: pd.Series(stats.rankdata(r.to_numpy()), index=r.index), axis=1)
    rows = [(alg, *results.mean_ci95(rank[alg]), len(rank)) for alg in rank.columns]
    out = pd.DataFrame(rows, columns=["algorithm", "mean_rank", "ci95", "n_experiments"])
    k, n = rank.shape[1], rank.shape[0]
    cd = critical_difference(k, n)
    return out.sort_values(["mean_rank", "algorithm"], ignore_index=True), cd


def critical_difference(k: int, n: int, alpha: float = 0.05) -> float:
    """Nemenyi CD = q_alpha sqrt(k (k + 1) / (6 N)), q_alpha the studentized range quantile / sqrt(2) (Demšar 2006)."""
    if k < 2 or n < 1:
        return math.nan
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(k * (k + 1) / (6 * n)))


def versus_local(bench: pd.DataFrame) -> pd.DataFrame:
    """Per experiment: how many methods beat / lose to the tuned Local (gain CI over seeds excluding 0), the best
    method by mean test metric with its gain, and ``local_hard_to_beat`` (no method's gain CI lies above 0)."""
    rows = []
    for exp, group in bench[bench["algorithm"] != results.LOCAL].groupby("experiment", sort=True):
        low, high = group["gain_mean"] - group["gain_mean_ci95"], group["gain_mean"] + group["gain_mean_ci95"]
        higher = results.HIGHER_IS_BETTER[group["metric"].iloc[0]]
        best = group.loc[group["mean"].idxmax() if higher else group["mean"].idxmin()]
        rows.append({"experiment": exp, "methods": len(group), "beat_local": int((low > 0).sum()),
                     "lose_to_local": int((high < 0).sum()), "best": best["algorithm"],
                     "best_setting": best["setting"],
                     "best_mean": best["mean"], "best_gain": best["gain_mean"],
                     "best_gain_ci95": best["gain_mean_ci95"],
                     "local_hard_to_beat": bool((low > 0).sum() == 0)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------- files


def run_dirs(results_dir: str | os.PathLike, config: dict) -> list[Path]:
    """The run folders of a resolved experiment config: results_dir/<exp>/<alg>/<setting>/seed=<s>."""
    root = Path(results_dir) / config["name"]
    return [root / alg / setting / f"seed={seed}" for alg, settings in config["algorithms"].items()
            for setting in settings for seed in config["seeds"]]


def load(results_dir: str | os.PathLike, experiments: list[str], selection: str = SELECTION) -> dict:
    """Read the summarized results of ``experiments`` and build everything the report shows.

    Returns a dict: ``configs`` (name -> resolved config), ``declared``, ``scores`` (per run), ``chosen``,
    ``clients`` (chosen runs, gain over the chosen Local) and ``table``.
    """
    configs, declared, scores, clients = {}, [], [], []
    for name in experiments:
        folder = Path(results_dir) / name
        config = yaml.safe_load((folder / "config.yaml").read_text())
        configs[name] = config
        declared.append(declared_settings(config))
        per_run = results.read_run_stats(folder)
        scores.append(validation_scores(results.load_runs(run_dirs(results_dir, config)), per_run, selection))
        clients.append(pd.read_csv(folder / "clients.csv", dtype={"setting": str}))
    declared, scores, clients = (pd.concat(f, ignore_index=True) for f in (declared, scores, clients))
    chosen = select(scores, declared)
    picked = chosen_clients(clients, chosen, selection)
    return {"configs": configs, "declared": declared, "scores": scores, "chosen": chosen, "clients": picked,
            "table": table(chosen, picked)}


def write(bench: pd.DataFrame, path: str | os.PathLike) -> None:
    """The table as CSV (pcl.results.write_csv: atomic, byte-deterministic)."""
    results.write_csv(bench, path)
