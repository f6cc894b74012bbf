"""Command-line entry points; the Snakemake rules call these (``pcl --help``)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

# Plain (click) help: typer's Rich help prints a type for every option, flags too (`--help <bool>`), as if they
# took a value.
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="pcl: personalized collaborative learning, reproduced.")

DataRoot = typer.Option("data/raw", "--data-root", help="Cache folder of downloaded data sets.")
Scale = typer.Option("small", "--scale", help="Experiment scale: 'small' (the file as written) or one of its scales.")


_DEBUG = {"on": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error (or PCL_DEBUG=1).")
          ) -> None:
    """pcl: personalized collaborative learning, reproduced."""
    _DEBUG["on"] = debug


def _debug() -> bool:
    return _DEBUG["on"] or os.environ.get("PCL_DEBUG", "") not in ("", "0")


def _fail(err: Exception) -> None:
    """A user-facing failure: one ``error: ...`` line and exit code 2; ``--debug``/PCL_DEBUG=1 re-raises it instead,
    with its traceback. Call from inside the ``except`` block."""
    if _debug():
        raise err
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(code=2)


@app.command()
def partition(config: Path, out: Path, data_root: Path = DataRoot, scale: str = Scale) -> None:
    """Build the federation of CONFIG's data section into OUT (federation.npz, stats.json, counts.png)."""
    from pcl.config import load_experiment
    from pcl.data.federation import Federation
    from pcl.plots import client_counts

    try:
        cfg = load_experiment(config, scale)
        if "data" not in cfg:
            raise ValueError(f"{config}: has no 'data' section to partition")
        fed = Federation.build(cfg["data"], data_root)
        sha = fed.save(out)
    except (ValueError, OSError) as err:
        _fail(err)
    client_counts(json.loads((out / "stats.json").read_text()), out / "counts.png")
    typer.echo(f"{out}/federation.npz: {fed.num_clients} clients, sha256 {sha}")


@app.command()
def download(config: Path, data_root: Path = DataRoot, scale: str = Scale) -> None:
    """Fetch (and checksum) the data set CONFIG's data source needs into the cache; offline sources do nothing."""
    from pcl.config import load_experiment
    from pcl.data.sources import load_source

    try:
        pool = load_source(load_experiment(config, scale)["data"]["source"], data_root)
    except (ValueError, OSError, KeyError) as err:
        _fail(err)
    typer.echo(f"{pool.name}: {len(pool.y)} samples ready")


@app.command()
def fetch(dataset: str, file: str, data_root: Path = DataRoot) -> None:
    """Fetch one pinned FILE of DATASET into the cache and check its SHA-256 (the Snakemake download rule's job)."""
    from pcl.data.download import fetch as fetch_file

    try:
        path = fetch_file(dataset, file, data_root)
    except (ValueError, OSError) as err:  # unknown file; HTTP errors and refused connections (requests' are OSError)
        _fail(err)
    typer.echo(str(path))


@app.command()
def train(config: Path, federation: Path, out: Path,
          algorithm: Optional[str] = typer.Option(None, help="Algorithm name (a key of the config's algorithms)."),
          setting: Optional[str] = typer.Option(None, help="Hyperparameter setting name of that algorithm."),
          seed: int = typer.Option(0, help="Training seed (init, batches, client sampling)."),
          all_seeds: bool = typer.Option(False, "--all-seeds", help="Train every seed of the config's `seeds` in "
                                         "this process, into OUT/seed=<s> (--seed is then ignored)."),
          checkpoint_dir: Optional[Path] = typer.Option(None, help="Where checkpoint.pt goes (default OUT); with "
                                                         "--all-seeds, CHECKPOINT_DIR/seed=<s>."),
          threads: int = typer.Option(1, help="torch intra-op threads (1: let Snakemake run jobs in parallel)."),
          engine: Optional[str] = typer.Option(None, help="Override train.engine: auto, vectorized or loop."),
          data_root: Path = DataRoot, scale: str = Scale,
          progress: bool = typer.Option(True, help="Show a progress bar.")) -> None:
    """Train one algorithm/setting/seed of CONFIG on FEDERATION; write metrics.csv and run.json to OUT."""
    from pcl.config import load_experiment
    from pcl.engine.local import BACKENDS
    from pcl.run import train as run_train, train_seeds

    try:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        if seed < 0:
            raise ValueError(f"--seed must be >= 0 (the schema's seeds are non-negative), got {seed}")
        cfg = load_experiment(config, scale)
        if engine is not None:
            if engine not in BACKENDS:
                raise ValueError(f"--engine must be one of {', '.join(BACKENDS)}, got {engine!r}")
            cfg["train"] = {**cfg["train"], "engine": engine}
        common = dict(algorithm=algorithm, setting=setting, data_root=data_root, threads=threads,
                      progress=progress and sys.stderr.isatty(), checkpoint_dir=checkpoint_dir)
        records = (train_seeds(cfg, federation, out, **common) if all_seeds
                   else [run_train(cfg, federation, out, seed=seed, **common)])
    except (ValueError, OSError) as err:  # config, hyperparameters, divergence; missing files, output folder, lock
        _fail(err)
    for rec in records:
        typer.echo(f"{out}: {rec['algorithm']}/{rec['setting']} seed={rec['seed']} in {rec['wall_time_s']:.1f} s")


@app.command()
def simulate(config: Path, out: Path, scale: str = Scale) -> None:
    """Run a ``kind: simulation`` experiment (closed forms + Monte Carlo) into OUT (CSV tables, claims, run.json)."""
    from pcl.config import load_experiment
    from pcl.sim.experiments import run_simulation

    try:
        cfg = load_experiment(config, scale)
        if cfg["kind"] != "simulation":
            raise ValueError(f"{config}: kind is {cfg['kind']!r}; `pcl simulate` runs kind 'simulation'")
        run_simulation(cfg, out)
    except (ValueError, OSError) as err:
        _fail(err)
    typer.echo(f"{out}: simulation {cfg['name']} done")


@app.command()
def summarize(runs: list[Path], out: Path = typer.Option(..., help="Folder for summary.csv, metrics.json, ..."),
              config: Path | None = typer.Option(None, help="The experiment config whose claims to decide")) -> None:
    """Summarize run folders: per-client gains, per-run distribution stats, mean and 95% CI across seeds."""
    import yaml

    from pcl.results import summarize as run_summarize

    try:
        claims = None if config is None else (yaml.safe_load(config.read_text()) or {}).get("claims") or []
        table = run_summarize(runs, out, claims)
    except (ValueError, OSError) as err:
        _fail(err)
    typer.echo(f"{out}/summary.csv: {len(table)} rows from {len(runs)} runs")


@app.command()
def diff(results_a: Path, results_b: Path,
         stat: Optional[list[str]] = typer.Option(None, help="Only these statistics (e.g. mean, bottom10)."),
         selection: Optional[list[str]] = typer.Option(None, help="Only these selections (best_val, final)."),
         force: bool = typer.Option(False, help="Compare experiments on different federations anyway.")) -> None:
    """Compare two experiments' results (folders with runs.csv): both means with CIs and the paired difference."""
    from pcl.results import diff as run_diff, federations, format_diff, read_run_stats

    try:
        fed_a, fed_b = federations(results_a), federations(results_b)
        if fed_a != fed_b and not force:
            raise ValueError(f"{results_a} and {results_b} use different federations ({sorted(fed_a)} vs "
                             f"{sorted(fed_b)}): a seed's pair would compare unrelated clients; --force to compare")
        table = run_diff(read_run_stats(results_a), read_run_stats(results_b))
    except (ValueError, OSError) as err:
        _fail(err)
    table = table[table["stat"].isin(stat or table["stat"]) & table["selection"].isin(selection or table["selection"])]
    typer.echo(format_diff(table, str(results_a), str(results_b)))


@app.command()
def validate(configs: list[Path], scale: str = Scale) -> None:
    """Check experiment configs against the schema; the error names the bad key or value."""
    from pcl.config import load_experiment

    for c in configs:
        try:
            load_experiment(c, scale)
        except (ValueError, OSError) as err:
            _fail(err)
        typer.echo(f"{c}: ok")


@app.command(name="list")
def list_() -> None:
    """List the registered algorithms, models and data sources."""
    from pcl.algorithms import ALGORITHMS
    from pcl.data.sources import SOURCES
    from pcl.models import MODELS

    typer.echo("algorithms: " + ", ".join(sorted(ALGORITHMS)))
    typer.echo("models: " + ", ".join(sorted(MODELS)))
    typer.echo("sources: " + ", ".join(sorted(SOURCES)))
