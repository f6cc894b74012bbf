"""The Snakemake workflow for real, on tiny experiments, in a temporary copy of the repository's workflow.

test_dvc.py and test_slurm.py reuse the helpers (``make_workflow``, ``TINY``, ``run``, ...) from here.
"""
from __future__ import annotations

import copy
import functools
import gzip
import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORKFLOW_FILES = ("Snakefile", "workflow", "notebooks", "dvc.yaml", ".dvcignore", ".dvc/config", ".dvc/.gitignore")

# A tiny experiment: 4 digits clients, 2 algorithms x 2 seeds, 2 rounds. The numeric claims have known
# verdicts (an accuracy is >= 0 and never > 1.01); the run-vs-run claim is checked against the numbers.
TINY = {
    "name": "tiny",
    "kind": "federated",
    "description": "4 clients, 2 rounds: a smoke test of the whole workflow.",
    "data": {"source": {"name": "digits"},
             "partition": {"scheme": "dirichlet", "num_clients": 4, "alpha": 1.0, "seed": 0,
                           "val_frac": 0.2, "test_frac": 0.3}},
    "model": {"name": "mlp", "hidden": [8]},
    "train": {"rounds": 2, "eval_every": 1, "engine": "loop"},  # loop: no torch.func start-up cost
    "algorithms": {"local": {"default": {}}, "fedavg": {"default": {"lr": 0.1}}},
    "seeds": [0, 1],
    "claims": [
        {"claim": "FedAvg beats Local", "lhs": "fedavg", "op": ">", "rhs": "local"},
        {"claim": "Accuracy is non-negative", "source": "arithmetic", "lhs": "local", "op": ">=", "rhs": 0.0},
        {"claim": "Accuracy exceeds 1.01", "source": "impossible", "lhs": "local/default", "op": ">", "rhs": 1.01},
    ],
}


def make_workflow(root: Path, *experiments: dict | str, package: bool = False) -> Path:
    """Copy the workflow (code, not outputs) into ``root``; ``experiments`` (configs, or names of the
    repository's experiments) become the default set.

    ``package`` also copies pcl/ (a DVC dependency); the jobs import the installed pcl either way.
    """
    root.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES + (("pcl",) if package else ()):
        src, dst = REPO / name, root / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    for exp in experiments:
        if isinstance(exp, dict):
            write_yaml(root / f"workflow/config/experiments/{exp['name']}.yaml", exp)
    names = [e if isinstance(e, str) else e["name"] for e in experiments]
    cfg = yaml.safe_load((root / "workflow/config/config.yaml").read_text())
    write_yaml(root / "workflow/config/config.yaml", {**cfg, "experiments": names})
    return root


def write_yaml(path: Path, obj) -> None:
    path.write_text(yaml.safe_dump(obj, sort_keys=False))


def run(cmd: list, cwd: Path, env: dict | None = None, check: bool = True, timeout: float = 600):
    """Run a tool of this venv (snakemake, dvc) in ``cwd``; on failure show its output."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def snakemake(root: Path, *args, **kwargs):
    return run([BIN / "snakemake", *args], root, **kwargs)


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table that Snakemake prints for a (dry) run: rule -> number of jobs."""
    table = output.split("Job stats:")[1].split("\n\n")[0]
    return {row.split()[0]: int(row.split()[1]) for row in table.splitlines()[3:] if len(row.split()) == 2}


def run_dirs(root: Path, exp: dict) -> list[Path]:
    return [root / f"results/small/{exp['name']}/{alg}/{setting}/seed={seed}"
            for alg, settings in exp["algorithms"].items() for setting in settings for seed in exp["seeds"]]


# ---------------------------------------------------------------------------------------------- schema


@pytest.mark.parametrize("edit, named", [
    (lambda e: e.update(trian={"rounds": 2}), ["trian"]),                               # a misspelt key
    (lambda e: e["data"]["partition"].update(alpha=-1), ["alpha", "-1"]),             # a value out of range
    (lambda e: e["algorithms"].update(fedsgd={"default": {}}), ["fedsgd"]),           # an unknown algorithm
])
def test_bad_experiment_config_stops_the_run_naming_it(tmp_path, edit, named):
    exp = copy.deepcopy(TINY)
    edit(exp)
    root = make_workflow(tmp_path, exp)
    proc = snakemake(root, "-n", check=False)
    assert proc.returncode != 0
    message = proc.stdout + proc.stderr
    assert "workflow/config/experiments/tiny.yaml" in message
    for word in named:
        assert word in message


def test_bad_top_level_config_is_rejected(tmp_path):
    root = make_workflow(tmp_path, TINY)
    proc = snakemake(root, "-n", "--config", "scale=huge", check=False)
    assert proc.returncode != 0 and "huge" in proc.stdout + proc.stderr
    proc = snakemake(root, "-n", "--config", "experiments=[nonexistent]", check=False)
    assert proc.returncode != 0 and "nonexistent" in proc.stdout + proc.stderr


def test_dry_run_dag_and_scale(tmp_path):
    """`-n` and `--dag` show every job; `scale=paper` merges the experiment's `scales.paper` overrides."""
    exp = {**copy.deepcopy(TINY), "scales": {"paper": {"seeds": [0, 1, 2], "train": {"rounds": 7}}}}
    root = make_workflow(tmp_path, exp, "wga_bc")
    small = snakemake(root, "-n")
    counts = job_counts(small.stdout + small.stderr)
    assert counts["train"] == 2 and counts["partition"] == 1 and counts["aggregate"] == 1  # a job per setting
    assert counts["simulate"] == 1 and counts["report"] == 2 and counts["all"] == 1
    assert "download" not in counts  # digits is offline
    dag = snakemake(root, "--dag").stdout
    assert dag.startswith("digraph") and dag.count('label = "train') == 2

    snakemake(root, "--cores", "1", "--config", "scale=paper", "--until", "experiment_config")
    resolved = yaml.safe_load((root / "results/paper/tiny/config.yaml").read_text())
    assert resolved["train"]["rounds"] == 7 and resolved["seeds"] == [0, 1, 2]
    assert resolved["model"] == TINY["model"] and "scales" not in resolved
    paper = snakemake(root, "-n", "--config", "scale=paper", "-p")
    assert job_counts(paper.stdout + paper.stderr)["train"] == 2  # each trains the paper's 3 seeds
    assert (paper.stdout + paper.stderr).count("--all-seeds") == 2


# ------------------------------------------------------------------------------------------ end to end


def idx_gz(array: np.ndarray) -> bytes:
    """An IDX file (LeCun's format: magic 0x0000080<ndim>, big-endian dims, uint8 data), gzipped."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


@pytest.fixture
def mnist_mirror(tmp_path):
    """Serve tiny MNIST-format files on loopback; re-pin pcl's hashes to them in every child process.

    The pinned SHA-256 values are those of the real MNIST; a ``sitecustomize`` on PYTHONPATH replaces them
    with the tiny files' hashes (as tests/test_download.py does in-process), so the workflow's own download
    and partition jobs verify exactly what was served.
    """
    rng = np.random.default_rng(0)
    serve = tmp_path / "mirror"
    files = {}
    for prefix, n in (("train", 240), ("t10k", 60)):
        files[f"{prefix}-images-idx3-ubyte.gz"] = idx_gz(rng.integers(0, 256, (n, 28, 28)))
        files[f"{prefix}-labels-idx1-ubyte.gz"] = idx_gz(np.arange(n) % 10)
    (serve / "mnist").mkdir(parents=True)
    for name, data in files.items():
        (serve / "mnist" / name).write_bytes(data)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import json, os\nfrom pcl.data import download\n"
        "download.SHA256.update(json.loads(os.environ['PCL_TEST_SHA256']))\n")
    served = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, fmt, *args):
            served.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=serve))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"PCL_DATA_MIRROR": f"http://127.0.0.1:{server.server_address[1]}", "NO_PROXY": "127.0.0.1",
           "PYTHONPATH": str(site),
           "PCL_TEST_SHA256": json.dumps({"mnist": {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}}),
           "served": served, "files": files}
    server.shutdown()


@pytest.mark.slow
def test_download_partition_train_aggregate_report(tmp_path, mnist_mirror):
    exp = copy.deepcopy(TINY)
    exp["data"]["source"] = {"name": "mnist"}
    exp["reported"] = {"source": "a made-up table", "rows": [  # a train job's narrowed config must drop it
        {"label": "Paper's FedAvg", "run": "fedavg/default", "values": {"mean": 50.0}},
        {"label": "Paper's centralized model", "values": {"mean": 99.0}}]}
    root = make_workflow(tmp_path / "repo", exp, "model_averaging")  # with a simulation experiment
    env = {k: v for k, v in mnist_mirror.items() if k.isupper()}
    snakemake(root, "--cores", "2", env=env)

    # download: every pinned file fetched once from the mirror, byte for byte
    assert sorted(mnist_mirror["served"]) == sorted(f"/mnist/{name}" for name in mnist_mirror["files"])
    for name, data in mnist_mirror["files"].items():
        assert (root / "data/raw/mnist" / name).read_bytes() == data
    # partition: one federation named by the data spec's hash, with its stats and figure
    from pcl.io import spec_hash
    fed = root / "data/federations" / spec_hash(exp["data"])
    stats = json.loads((fed / "stats.json").read_text())
    assert stats["num_clients"] == 4 and stats["num_samples"]["dealt"] == 300
    assert (fed / "counts.png").read_bytes().startswith(b"\x89PNG")
    # train: 2 algorithms x 2 seeds, each with its metrics table and provenance
    for run_dir in run_dirs(root, exp):
        record = json.loads((run_dir / "run.json").read_text())
        assert record["federation_sha256"] == stats["federation_sha256"]
        assert set(pd.read_csv(run_dir / "metrics.csv")["round"]) == {1, 2}
    # aggregate
    summary = pd.read_csv(root / "results/small/tiny/summary.csv")
    assert set(summary["algorithm"]) == {"local", "fedavg"} and set(summary["n_seeds"]) == {2}
    metrics = json.loads((root / "results/small/tiny/metrics.json").read_text())
    assert set(metrics) == {"best", "local", "claims"} and metrics["best"]["method"] == "fedavg/default"
    # report: executed notebook, self-contained HTML with the claims table, figures as PNG and SVG
    html = (root / "reports/small/tiny/report.html").read_text()
    assert "<h2" in html and "Claims" in html and "FedAvg beats Local" in html and "data:image/png;base64" in html
    claims = pd.read_csv(root / "reports/small/tiny/claims.csv")  # verdicts on the paired CIs: see tests/test_claims.py
    assert claims["verdict"][2] in ("fails", "inconclusive")  # accuracy above 1.01 can never hold
    assert metrics["claims"] == {v: int((claims["verdict"] == v).sum()) for v in ("holds", "fails", "inconclusive")}
    for verdict in claims["verdict"]:
        assert verdict in html
    # the paper's numbers beside ours: ours in %, and ours - paper
    fedavg = summary.query("algorithm == 'fedavg' and selection == 'best_val' and stat == 'mean'").iloc[0]
    assert "a made-up table" in html and "Paper's centralized model" in html and "(not run here)" in html
    assert f"{100 * fedavg['mean'] - 50:+.2f} ± {100 * fedavg['ci95']:.2f}" in html
    figures = ("clients_by_run", "client_distribution", "gain_over_local", "learning_curves")
    # every figure is in the HTML as an image (not matplotlib's "<Figure size ...>" text), plus the federation's
    assert html.count("data:image/png;base64") >= len(figures) + 1 and "&lt;Figure size" not in html
    for figure in figures:
        assert (root / f"reports/small/tiny/figures/{figure}.png").stat().st_size > 0
        assert (root / f"reports/small/tiny/figures/{figure}.svg").read_text().lstrip().startswith("<?xml")
    # the simulation went through `pcl simulate` and its own notebook (`report.notebook`)
    sim = pd.read_csv(root / "results/small/model_averaging/claims.csv")
    assert (root / "reports/small/model_averaging/claims.csv").read_bytes() == \
        (root / "results/small/model_averaging/claims.csv").read_bytes()
    assert sum(json.loads((root / "results/small/model_averaging/metrics.json").read_text())["claims"].values()) == len(sim)
    assert "averaging" in (root / "reports/small/model_averaging/report.html").read_text()
    # nothing left to do, and Snakemake's own report renders
    assert "Nothing to be done" in snakemake(root, "-n", env=env).stdout
    snakemake(root, "--report", "snakemake-report.html", env=env)
    assert "report.html" in (root / "snakemake-report.html").read_text()


def finished_jobs(log: str) -> set[str]:
    """Setting folders whose train job Snakemake had registered as finished, read from its log."""
    outputs = dict(re.findall(r"rule train:\n(?:\s+\w+: .*\n)*?\s+output: (\S+)\n(?:\s+\w+: .*\n)*?\s+jobid: (\d+)", log))
    done = set(re.findall(r"Finished jobid: (\d+) \(Rule: train\)", log))
    return {folder for folder, jobid in outputs.items() if jobid in done}


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_finished_jobs(tmp_path):
    """Kill -9 snakemake while a job is mid-training: finished jobs stay, the killed one resumes from its
    checkpoint (kept outside the job's output folder, which Snakemake removes), and nothing half-written is
    trusted."""
    exp = copy.deepcopy(TINY)
    exp["train"] = {**exp["train"], "rounds": 40, "eval_every": 10, "checkpoint_every": 1}
    root = make_workflow(tmp_path, exp)
    runs = run_dirs(root, exp)
    jobs = sorted({r.parent for r in runs})
    checkpoints = root / "results/small/tiny/checkpoints"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    target = "results/small/tiny/summary.csv"
    proc = subprocess.Popen([BIN / "snakemake", "--cores", "1", target], cwd=root, env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    log = lambda: "".join(p.read_text() for p in (root / ".snakemake/log").glob("*.log"))  # noqa: E731
    # kill once a job has finished and the next one has checkpointed its second seed (its first seed is done)
    while time.time() < deadline and proc.poll() is None and not (
            len(finished_jobs(log())) >= 1 and any(checkpoints.glob("*/*/seed=1/checkpoint.pt"))):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # snakemake and its running job, as a crash or an OOM kill would
    proc.wait()
    done_jobs = finished_jobs(log())
    finished = {r: (r / "run.json").stat().st_mtime_ns for r in runs if str(r.parent.relative_to(root)) in done_jobs}
    assert finished and len(finished) < len(runs), "the kill should land mid-run"
    killed = [j for j in jobs if any((checkpoints / j.parent.name / j.name).glob("seed=*/checkpoint.pt"))]
    assert len(killed) == 1, "the kill should land while a job is training"
    for r in runs:  # pcl writes atomically: a run folder holds complete files or none
        if (r / "metrics.csv").exists():
            assert pd.read_csv(r / "metrics.csv")["round"].max() == 40

    snakemake(root, "--unlock")
    out = snakemake(root, "--cores", "2", "--rerun-incomplete", target)
    for r, mtime in finished.items():
        assert (r / "run.json").stat().st_mtime_ns == mtime, f"{r} was redone"
    assert (out.stdout + out.stderr).count("(Rule: train)") == len(jobs) - len(done_jobs)
    assert (root / target).exists()
    log_file = root / f"logs/small/tiny/train/{killed[0].parent.name}/{killed[0].name}.log"
    assert "resuming" in log_file.read_text()  # the killed job resumed its seed from the last checkpoint
    assert not list(checkpoints.rglob("checkpoint.pt"))


@pytest.mark.parametrize("configfile, reports", [
    ("workflow/config/personalization.yaml", {"partial", "pdbo_stochastic_directed", "pdbo_stochastic_undirected",
                                              "pdbo_static"}),
    (".test/config/config.yaml", {"benchmark"}),
    (".test/config/personalization.yaml", {"partial", "pdbo_stochastic_directed", "pdbo_stochastic_undirected",
                                           "pdbo_static"}),
])
def test_the_other_experiment_sets_resolve(tmp_path, configfile, reports):
    """The second experiment set and the workflow's test config (.test/, run by CI) name valid experiments; a dry
    run plans their reports (the repository's own files, copied)."""
    root = make_workflow(tmp_path)
    (root / configfile).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / configfile, root / configfile)
    target = ["benchmark"] if reports == {"benchmark"} else []
    out = snakemake(root, *target, "-n", "--configfile", configfile)
    scale = yaml.safe_load((REPO / configfile).read_text()).get("scale", "small")
    planned = set(re.findall(rf"reports/{scale}/([^/\s]+)/report\.html", out.stdout + out.stderr))
    assert planned == reports
