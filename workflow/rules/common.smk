"""Shared by all rules: load and check experiment configs, and name every file a job reads or writes.

An experiment is one YAML file, ``<experiments_dir>/<name>.yaml``, checked against pcl's own JSON Schema (the
one the CLI uses, so the workflow and ``pcl`` never disagree on what a valid config is). The Snakefile owns
only what the CLI does not see: which experiments to run and at which ``scale``.
"""
import errno
import re
from importlib.resources import files
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from pcl.config import ConfigError, apply_scale, init_reference, validate_experiment
from pcl.data import download
from pcl.io import spec_hash

DATA = config["data_dir"]
# Each scale has its own results/<scale>, reports/<scale> and logs/<scale>, so `--config scale=paper` never
# overwrites the small run; federations (data/federations/<spec hash>) are keyed by their data and stay shared.
RESULTS, REPORTS, LOGS = (f"{config[key]}/{config['scale']}" for key in ("results_dir", "reports_dir", "logs_dir"))
RAW = f"{DATA}/raw"
EXPERIMENT_SCHEMA = str(files("pcl") / "schemas" / "experiment.schema.yaml")

# Every job runs with `threads: 1` by default, so that `--cores 8` runs 8 jobs side by side instead of 8 jobs
# that each spawn 8 threads. torch/OpenMP/MKL/OpenBLAS are told the same by Snakemake itself, which sets
# OMP_NUM_THREADS, MKL_NUM_THREADS, OPENBLAS_NUM_THREADS (and GOTO_, VECLIB_MAXIMUM_, NUMEXPR_NUM_THREADS) to
# the job's `threads` for every shell job (snakemake/shell.py), locally and on a cluster node alike.

# Every rule's software, for `--software-deployment-method conda` (plain runs use the environment that runs
# Snakemake); the path is relative to workflow/rules/, where the rules are.
CONDA_ENV = "../envs/pcl.yaml"

wildcard_constraints:
    exp=r"[A-Za-z0-9_.-]+",
    alg=r"[a-z][a-z0-9_]*",
    setting=r"[A-Za-z0-9_.-]+",
    seed=r"\d+",
    fed=r"[0-9a-f]{12}",
    dataset=r"[a-z0-9_]+",


_EXPERIMENTS: dict[str, dict] = {}


def _kind(path: Path):
    doc = yaml.safe_load(path.read_text())
    return doc.get("kind") if isinstance(doc, dict) else None


KINDS = {path.stem: _kind(path) for path in sorted(Path(config["experiments_dir"]).glob("*.yaml"))}


def experiments_of_kind(kind: str) -> str:
    """A wildcard pattern matching the experiments of one ``kind`` (read from each file's `kind:` up front).

    Federated experiments are aggregated from train jobs, simulations written by `pcl simulate`; both end in
    results/<scale>/<exp>/metrics.json, so each of those rules only accepts experiments of its own kind.
    """
    return "|".join(re.escape(name) for name, k in KINDS.items() if k == kind) or "(?!)"


def experiment(name: str) -> dict:
    """The resolved config of experiment ``name``: its file, with ``scales.<scale>`` merged in, validated.

    Resolved once per workflow run; a wrong key or value stops the run with a message naming the file and
    the key (snakemake.utils.validate against the schema, then pcl's own checks, e.g. unknown algorithms).
    The scale is applied by pcl.config.apply_scale, as `pcl --scale` does.
    """
    if name in _EXPERIMENTS:
        return _EXPERIMENTS[name]
    path = Path(config["experiments_dir"]) / f"{name}.yaml"
    if not path.is_file():
        raise WorkflowError(f"experiment {name!r}: no file {path}; known experiments: {sorted(KINDS)}")
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise WorkflowError(f"experiment file {path}: expected a mapping at the top level")
    try:
        validate(raw, EXPERIMENT_SCHEMA)  # the file as written, `scales` included
        exp = validate_experiment(apply_scale(raw, config["scale"]), origin=f"{path} (scale {config['scale']})")
    except (WorkflowError, ConfigError) as err:
        raise WorkflowError(f"experiment file {path} is invalid:\n{err}") from None
    if exp["name"] != name:
        raise WorkflowError(f"experiment file {path}: name {exp['name']!r} must match the file name {name!r}")
    _EXPERIMENTS[name] = exp
    return exp


def runs(name: str) -> list[tuple[str, str, int]]:
    """Every (algorithm, setting, seed) of a federated experiment."""
    exp = experiment(name)
    return [(alg, setting, seed) for alg, settings in exp["algorithms"].items() for setting in settings
            for seed in exp["seeds"]]


def settings(name: str) -> list[tuple[str, str]]:
    """Every (algorithm, setting) of a federated experiment: one train job each, which trains all its seeds."""
    return [(alg, setting) for alg, settings in experiment(name)["algorithms"].items() for setting in settings]


def setting_dir(name: str, alg: str, setting: str) -> str:
    """The train job's output folder: one ``seed=<s>`` run folder per seed."""
    return f"{RESULTS}/{name}/{alg}/{setting}"


def run_dir(name: str, alg: str, setting: str, seed) -> str:
    return f"{setting_dir(name, alg, setting)}/seed={seed}"


def setting_config(name: str, alg: str, setting: str) -> dict:
    """The config one train job reads: its experiment narrowed to this algorithm and setting (all seeds).

    Being exactly what the job depends on, it is rewritten (and the job redone) only when that changes: adding a
    setting, a claim or a paper row (`reported`) to the experiment leaves every other job alone (adding a seed
    redoes every setting's job).
    """
    exp = experiment(name)
    if alg not in exp["algorithms"] or setting not in exp["algorithms"][alg]:
        raise WorkflowError(f"experiment {name!r} has no setting {alg}/{setting}")
    chosen, ref = {}, (alg, setting)
    while ref is not None:  # with the settings its `init_from` chain names, so the config stays valid on its own
        values = exp["algorithms"][ref[0]][ref[1]]
        chosen.setdefault(ref[0], {})[ref[1]] = values
        ref = init_reference((values or {}).get("init_from"))
    return {**{k: v for k, v in exp.items() if k not in ("claims", "description", "reported")}, "algorithms": chosen}


def init_inputs(w) -> list[str]:
    """The train job of the setting a setting's `init_from: <algorithm>/<setting>` names (its seeds' model.pt), so
    the pre-training is computed once per seed, before every job that starts from it; none for other settings."""
    ref = init_reference((experiment(w.exp)["algorithms"][w.alg][w.setting] or {}).get("init_from"))
    return [setting_dir(w.exp, *ref)] if ref else []


def train_gpus(name: str) -> int:
    """GPUs one train job of experiment ``name`` asks for: 1 where `train.device` is cuda or auto, else 0.

    A resource like any other (`--set-resources train:gpu=0` overrides it); snakemake-executor-plugin-slurm
    submits a job with gpu=N as `sbatch --gpus=N` (add `gpu_model` for `--gpus=<model>:N`).
    """
    return 1 if experiment(name)["train"].get("device", "cpu") in ("cuda", "auto") else 0


def train_mem_mb(wildcards, input) -> int:
    """mem_mb of one train job: pcl.resources' estimate from the run's config and its federation's sizes.

    Until the federation is built the estimate cannot be made; the FileNotFoundError naming that input makes
    Snakemake hold the resource as to-be-determined and evaluate it once the file exists, before the job runs.
    `--set-resources train:mem_mb=N` overrides it.
    """
    from pcl.resources import train_mem_mb as estimate  # imports torch: only when a train job is scheduled

    federation = str(input.federation)
    if not Path(federation).is_file():
        raise FileNotFoundError(errno.ENOENT, "federation not built yet", federation)
    cfg = setting_config(wildcards.exp, wildcards.alg, wildcards.setting)
    return estimate(cfg, wildcards.alg, wildcards.setting, federation, RAW)


def federation_dir(name: str) -> str:
    """data/federations/<hash>: experiments with the same data spec share one federation."""
    return f"{DATA}/federations/{spec_hash(experiment(name)['data'])}"


def data_spec(fed: str) -> dict:
    """The data spec whose hash is ``fed``, from the experiments loaded so far (the default set first)."""
    for exp in _EXPERIMENTS.values():
        if exp["kind"] == "federated" and spec_hash(exp["data"]) == fed:
            return exp["data"]
    raise WorkflowError(f"no loaded experiment has data spec hash {fed!r}; "
                        f"loaded: {sorted(_EXPERIMENTS)} (request a report or result of the experiment instead)")


def partition_config(fed: str) -> dict:
    """A minimal valid experiment holding data spec ``fed``: `pcl partition` takes an experiment config."""
    return {"name": f"federation-{fed}", "kind": "federated", "data": data_spec(fed), "model": {"name": "linear"},
            "train": {}, "algorithms": {"local": {"default": {}}}, "seeds": [0]}


def raw_files(spec: dict) -> list[str]:
    """The pinned files a source downloads (see pcl.data.download); none for offline sources."""
    dataset = spec["source"]["name"]
    return [f"{RAW}/{dataset}/{file}" for file in download.SHA256.get(dataset, {})]


def _benchmark_experiments() -> list[str]:
    """The benchmark experiments (benchmark.smk) named in `experiments`, else every benchmark_*.yaml."""
    found = sorted(name for name in KINDS if name.startswith("benchmark_"))
    named = [name for name in config["experiments"] if name in found]
    return named or found


def report_inputs(w) -> dict:
    """What the notebook reads: results tables and federation stats, or a simulation's tables."""
    exp = experiment(w.exp)
    results = f"{RESULTS}/{w.exp}"
    common = {"notebook": exp.get("report", {}).get("notebook", config["report_notebook"]),
              "config": f"{results}/config.yaml"}
    if exp["kind"] == "simulation":
        return {**common, "run": f"{results}/run.json", "claims": f"{results}/claims.csv"}
    also = [f"{RESULTS}/{other}/{f}" for other in exp.get("report", {}).get("also", [])
            for f in ("config.yaml", "summary.csv", "runs.csv")]  # e.g. the same method on other networks
    return {**common, "summary": f"{results}/summary.csv", "runs": f"{results}/runs.csv",
            "clients": f"{results}/clients.csv", "stats": f"{federation_dir(w.exp)}/stats.json", "also": also}


# Load (and so validate) the default experiment set up front: a bad config stops even `snakemake -n`.
for _name in config["experiments"]:
    experiment(_name)
