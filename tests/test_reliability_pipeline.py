"""Fault injection in the pipeline: kill -9 a small Snakemake run at several random points, then
``--rerun-incomplete``: every output is byte-identical to an uninterrupted run's.

``run.json`` records the run's wall time and peak memory, which legitimately differ between two runs; those two keys
are compared out, everything else (every other file, every other key) byte for byte.
"""
from __future__ import annotations

import copy
import json
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from test_pipeline import BIN, TINY, make_workflow, snakemake

TARGET = "results/small/tiny/summary.csv"
MEASURED = ("wall_time_s", "peak_memory_mb")  # run.json keys that hold a measurement of this execution
OUTPUT_DIRS = ("results", "data")  # logs/ and .snakemake/ are Snakemake's and the jobs' logs, not outputs


def _experiment() -> dict:
    exp = copy.deepcopy(TINY)  # 4 digits clients, local + fedavg, 2 seeds
    # 20 rounds: a seed's run outlasts the kill's polling, so the mid-training kill finds its checkpoint in place
    exp["train"] = {**exp["train"], "rounds": 20, "checkpoint_every": 1}
    exp.pop("claims")
    return exp


def _state(root: Path) -> dict[str, int]:
    """Every file under the output folders with its modification time: a change is one step of progress."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for d in OUTPUT_DIRS for p in (root / d).rglob("*")
            if p.is_file()} if root.exists() else {}


def _kill_after(root: Path, events: int | None, jitter: float) -> bool:
    """Start the run, wait until ``events`` files under the outputs changed (None: until a train job has written a
    checkpoint), plus ``jitter`` seconds, then kill -9 the whole process group (Snakemake and its running jobs, as a
    crash or an OOM kill would). False if the run finished first."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen([BIN / "snakemake", "--cores", "2", "--rerun-incomplete", TARGET], cwd=root, env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    before, deadline = _state(root), time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        now = _state(root)
        changed = sum(now.get(k) != v for k, v in before.items()) + len(now.keys() - before.keys())
        if (changed >= events) if events else any(k.endswith("checkpoint.pt") for k in now):
            time.sleep(jitter)
            break
        time.sleep(0.02)
    running = proc.poll() is None
    if running:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return running


def _leftover(name: str) -> bool:
    """Temporary files of a write interrupted by the kill: the output-folder probe and atomic writes' temp files
    (hidden, never read by pcl or Snakemake; the real file is replaced whole or not at all)."""
    return name.startswith(".probe-") or (name.startswith(".") and name.endswith(".tmp"))


def _outputs(root: Path) -> dict[str, bytes]:
    out = {}
    for d in OUTPUT_DIRS:
        for p in sorted((root / d).rglob("*")):
            if not p.is_file() or _leftover(p.name):
                continue
            data = p.read_bytes()
            if p.name == "run.json":
                record = json.loads(data)
                assert all(isinstance(record.pop(k), (int, float)) for k in MEASURED)
                data = json.dumps(record, sort_keys=True).encode()
            out[str(p.relative_to(root))] = data
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, and what Snakemake printed."""
    root = make_workflow(tmp_path_factory.mktemp("reference"), _experiment())
    proc = snakemake(root, "--cores", "2", TARGET)
    return root, proc.stdout + proc.stderr


@pytest.mark.slow
def test_kill_9_at_random_points_then_rerun_incomplete_gives_identical_outputs(reference, tmp_path):
    faulted = make_workflow(tmp_path / "faulted", _experiment())
    rng = random.Random(12)
    # two kills after a random number of file writes (anywhere: configs, partition, training), one mid-training
    # the mid-training kill lands at once (no jitter): a seed's run takes well under a second, and a jitter could let
    # it finish, removing the checkpoint this kill is meant to leave
    points = [(rng.randint(1, 6), rng.uniform(0.0, 0.5)) for _ in range(2)] + [(None, 0.0)]
    for events, jitter in points:  # each attempt resumes what the previous kill left, then is killed again
        assert _kill_after(faulted, events, jitter), "every kill should land while the run is still going"
        snakemake(faulted, "--unlock")
    assert not (faulted / TARGET).exists()
    snakemake(faulted, "--cores", "2", "--rerun-incomplete", TARGET)

    expected, got = _outputs(reference[0]), _outputs(faulted)
    assert sorted(got) == sorted(expected)  # no output missing, none extra (no checkpoint.pt or *.corrupt-* left)
    differ = [name for name in expected if got[name] != expected[name]]
    assert not differ, f"differ from the uninterrupted run: {differ}"
    logs = [p.read_text() for p in (faulted / "logs/small/tiny/train").rglob("*.log")]
    assert any("resuming" in log for log in logs)  # the mid-training kill was resumed from its checkpoint


@pytest.mark.slow
def test_train_mem_mb_follows_the_run_and_set_resources_overrides_it(reference):
    """Each train job asks for pcl.resources' estimate (evaluated once its federation exists), not a fixed 1000."""
    import yaml

    from pcl.resources import train_mem_mb

    root, printed = reference
    fed = next((root / "data/federations").iterdir())
    exp = yaml.safe_load((root / "results/small/tiny/configs/local/default.yaml").read_text())
    expected = train_mem_mb(exp, "local", "default", fed / "federation.npz", root / "data/raw")
    asked = re.findall(r"rule train:.*?resources: [^\n]*?mem_mb=(\d+)", printed, re.S)
    assert len(asked) == 2 and set(asked) == {str(expected)}  # one job per setting, all its seeds
    dry = snakemake(root, TARGET, "-n", "--set-resources", "train:mem_mb=1234", "--forcerun", "train")
    asked = re.findall(r"rule train:.*?resources: [^\n]*?mem_mb=(\d+)", dry.stdout + dry.stderr, re.S)
    assert asked == ["1234"] * 2
