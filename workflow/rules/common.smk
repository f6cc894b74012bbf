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

DATA, RESULTS, REPORTS, LOGS = (config[key] for key in ("data_dir", "results_dir", "reports_dir", "logs_dir"))
RAW = f"{DATA}/raw"
EXPERIMENT_SCHEMA = str(files("pcl") / "schemas" / "experiment.schema.yaml")

# Every job runs with `threads: 1` by default, and torch/OpenMP/MKL/OpenBLAS are told the same, so that
# `--cores 8` runs 8 jobs side by side instead of 8 jobs that each spawn 8 threads.
THREADS_ENV = "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} OPENBLAS_NUM_THREADS={threads}"

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
    results/<exp>/metrics.json, so each of those rules only accepts experiments of its own kind.
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
    """Every (algorithm, setting, seed) of a federated experiment: one train job each."""
    exp = experiment(name)
    return [(alg, setting, seed) for alg, settings in exp["algorithms"].items() for setting in settings
            for seed in exp["seeds"]]


def run_dir(name: str, alg: str, setting: str, seed) -> str:
    return f"{RESULTS}/{name}/{alg}/{setting}/seed={seed}"


def run_config(name: str, alg: str, setting: str, seed) -> dict:
    """The config one train job reads: its experiment narrowed to this algorithm, setting and seed.

    Being exactly what the run depends on, it is rewritten (and the run redone) only when that changes:
    adding a setting, a seed or a claim to the experiment leaves every other run alone.
    """
    exp = experiment(name)
    if alg not in exp["algorithms"] or setting not in exp["algorithms"][alg] or int(seed) not in exp["seeds"]:
        raise WorkflowError(f"experiment {name!r} has no run {alg}/{setting} with seed {seed}")
    return {**{k: v for k, v in exp.items() if k not in ("claims", "description")},
            "algorithms": {alg: {setting: exp["algorithms"][alg][setting]}}, "seeds": [int(seed)]}


def init_inputs(w) -> list[str]:
    """The model.pt of the run a setting's `init_from: <algorithm>/<setting>` names (same seed), so the pre-training
    run is computed once per seed, before every run that starts from it; none for other settings."""
    ref = init_reference((experiment(w.exp)["algorithms"][w.alg][w.setting] or {}).get("init_from"))
    return [f"{run_dir(w.exp, *ref, w.seed)}/model.pt"] if ref else []


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
    cfg = run_config(wildcards.exp, wildcards.alg, wildcards.setting, wildcards.seed)
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


# Load (and so validate) the default experiment set up front: a bad config stops even `snakemake -n`.
for _name in config["experiments"]:
    experiment(_name)
