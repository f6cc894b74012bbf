"""The SLURM profile, without a cluster: stub sbatch/squeue/sacct/scancel/sinfo/srun (tests/stubs) run every
submitted job on this machine, so a tiny workflow goes through snakemake-executor-plugin-slurm for real."""
from __future__ import annotations

import copy
import json
import os
import re
import sys
from pathlib import Path

import pytest

from test_pipeline import BIN, TINY, make_workflow, run_dirs, snakemake

STUBS = Path(__file__).resolve().parent / "stubs"
PROFILE = "workflow/profiles/slurm"


def on_device(device: str, name: str) -> dict:
    """TINY renamed, with `train.device` set; its data spec (so its federation) is TINY's."""
    exp = {**copy.deepcopy(TINY), "name": name}
    exp["train"]["device"] = device
    return exp


def gpu_less_sbatch(folder: Path) -> Path:
    """An ``sbatch`` for ``folder`` (put it first on PATH) of a cluster without GPU nodes: a GPU request is
    recorded in ``$SLURM_STUB_DIR/refused.jsonl`` and refused as SLURM would; anything else goes to the stub."""
    folder.mkdir(parents=True)
    script = folder / "sbatch"
    script.write_text(f"""#!{sys.executable}
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
if any(a.startswith(("--gpus", "--gres=gpu")) for a in args):
    state = Path(os.environ["SLURM_STUB_DIR"])
    state.mkdir(parents=True, exist_ok=True)
    with open(state / "refused.jsonl", "a") as f:
        f.write(json.dumps(args) + "\\n")
    sys.exit("sbatch: error: Batch job submission failed: Requested node configuration is not available")
os.execv({str(STUBS / "sbatch")!r}, [{str(STUBS / "sbatch")!r}, *args])
""")
    script.chmod(0o755)
    return folder


@pytest.fixture
def slurm_env(tmp_path):
    return {"PATH": f"{STUBS}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}", "SLURM_STUB_DIR": str(tmp_path / "slurm")}


def test_profile_dry_run_lists_cluster_jobs(tmp_path, slurm_env):
    root = make_workflow(tmp_path / "repo", TINY)
    out = snakemake(root, "--profile", PROFILE, "-n", env=slurm_env)
    text = out.stdout + out.stderr
    assert "train" in text and "runtime=240" in text and "mem_mb=4000" in text  # the profile's per-rule resources


def test_train_jobs_of_cuda_and_auto_experiments_ask_for_a_gpu(tmp_path, slurm_env):
    root = make_workflow(tmp_path / "repo", TINY, on_device("cuda", "tiny_cuda"), on_device("auto", "tiny_auto"))
    out = snakemake(root, "--profile", PROFILE, "-n", env=slurm_env)
    gpus = {}  # experiment -> the `gpu` resource of each of its train jobs
    for block in (out.stdout + out.stderr).split("\n\n"):
        if "rule train:" in block:
            exp = re.search(r"wildcards: exp=([^,\s]+)", block).group(1)
            gpus.setdefault(exp, []).append(int(re.search(r"resources: .*\bgpu=(\d+)", block).group(1)))
    assert gpus == {"tiny": [0] * 2, "tiny_cuda": [1] * 2, "tiny_auto": [1] * 2}  # one job per setting  # cpu is the default


@pytest.mark.slow
def test_tiny_workflow_runs_through_the_slurm_executor(tmp_path, slurm_env):
    # A second experiment, on `train.device: cuda`, goes to a cluster without GPU nodes: its train job is
    # refused at submission (so nothing runs on a GPU that is not there) and only its sbatch line is checked.
    root = make_workflow(tmp_path / "repo", TINY, on_device("cuda", "tiny_cuda"))
    target = "results/small/tiny/local/default"  # the train job's folder: every seed's run
    cuda_target = "results/small/tiny_cuda/local/default"
    gpu_less = gpu_less_sbatch(tmp_path / "gpu-less")
    env = {**slurm_env, "PATH": f"{gpu_less}{os.pathsep}{slurm_env['PATH']}"}
    out = snakemake(root, "--profile", PROFILE, "--slurm-init-seconds-before-status-checks", "1", target, cuda_target,
                    env=env, check=False)

    assert out.returncode != 0 and "Requested node configuration is not available" in out.stdout + out.stderr
    assert json.loads((root / target / "seed=0/run.json").read_text())["algorithm"] == "local"  # keep-going: done
    jobs = [json.loads(p.read_text()) for p in sorted((tmp_path / "slurm").glob("*.json"))]
    # partition and the cpu train job went to sbatch (the config rules are local); both completed
    assert len(jobs) == 2 and {j["state"] for j in jobs} == {"COMPLETED"}
    train = next(j for j in jobs if "rule_train" in " ".join(j["args"]))
    args = " ".join(train["args"])
    # the profile's per-rule resources and the rule's single thread reach sbatch; a cpu run asks for no GPU
    assert "-t 240" in args and "--mem 4000" in args and "--cpus-per-task=1" in args
    assert "--gpus" not in args and "--gres" not in args
    assert train["name"] == next(j["name"] for j in jobs if j is not train)  # one run id names the workflow's jobs
    # the cuda run's train job asked for one GPU (the plugin turns the rule's gpu=1 into --gpus=1), with the
    # same per-rule resources; refused, it was resubmitted once (the profile's `retries: 1`)
    refused = [json.loads(line) for line in (tmp_path / "slurm" / "refused.jsonl").read_text().splitlines()]
    assert len(refused) == 2
    for cuda_args in refused:
        assert "rule_train_wildcards_tiny_cuda_local_default" in " ".join(cuda_args) and "--gpus=1" in cuda_args
        assert "-t 240" in " ".join(cuda_args) and "--mem 4000" in " ".join(cuda_args)
    assert not (run_dirs(root, TINY)[-1] / "run.json").exists()  # only what the targets need ran (not fedavg)
