"""The round loop: run one (algorithm, setting, seed) on a federation, evaluate, checkpoint, write results.

Outputs in ``out_dir``: ``metrics.csv`` (long table: round, client, split, metric, value), ``diagnostics.csv``
(per-round diagnostics, see ``pcl.diagnostics``) and ``run.json`` (resolved config, hyperparameters, seed, federation
hash, code version, engine backend, wall time, peak memory). All are written atomically at the end; a
``checkpoint.pt`` written every ``checkpoint_every`` rounds lets a killed job resume with bit-identical results
(every random draw comes from the run's RNG tree, keyed by round, so a round boundary needs no generator state).
"""
from __future__ import annotations

import dataclasses
import io
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import pcl
from pcl import diagnostics
from pcl.algorithms import ALGORITHMS, Context, make_hparams
from pcl.data.federation import Federation
from pcl.device import describe, resolve_device
from pcl.engine import LocalTrainer
from pcl.io import atomic_write, write_json
from pcl.models import build_model
from pcl.rng import derive
from pcl.topology import Topology

EVAL_SPLITS = ("val", "test")


def code_version() -> dict:
    """The package version and, when run from a git checkout, its commit and whether it had local changes."""
    root = Path(__file__).resolve().parent.parent
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    commit = git("rev-parse", "HEAD")
    return {"pcl": pcl.__version__, "git_commit": commit or None,
            "git_dirty": bool(git("status", "--porcelain", "--", "pcl")) if commit else None,
            "torch": torch.__version__, "python": platform.python_version()}


def _pick(options: dict, chosen: str | None, flag: str, where: str) -> str:
    """``chosen`` if it is one of ``options``; may be omitted when there is only one option."""
    if chosen is None:
        if len(options) != 1:
            raise ValueError(f"{flag} is required{where}: choose one of {sorted(options)}")
        return next(iter(options))
    if chosen not in options:
        raise ValueError(f"{flag} {chosen!r} is not defined{where}; choose one of {sorted(options)}")
    return chosen


def resolve(config: dict, algorithm: str | None, setting: str | None) -> tuple[str, str, dict]:
    """Pick one (algorithm, setting) from the experiment; either may be omitted when it is the only one."""
    algorithm = _pick(config["algorithms"], algorithm, "--algorithm", " in this experiment")
    settings = config["algorithms"][algorithm]
    setting = _pick(settings, setting, "--setting", f" for {algorithm!r}")
    return algorithm, setting, settings[setting]


def _rows(t: int, split: str, metrics: dict[str, torch.Tensor]) -> list[tuple]:
    out = []
    for metric, values in metrics.items():
        out.extend((t, k, split, metric, float(v)) for k, v in enumerate(values.tolist()))
    return out


def train(config: dict, federation: str | Path, out_dir: str | Path, *, algorithm: str | None = None,
          setting: str | None = None, seed: int = 0, data_root: str | Path = "data/raw", threads: int = 1,
          progress: bool = True) -> dict:
    """Run one training job; returns the run record (also written to ``run.json``)."""
    torch.set_num_threads(threads)
    start = time.time()
    out_dir = Path(out_dir)
    algorithm, setting, overrides = resolve(config, algorithm, setting)
    cls = ALGORITHMS[algorithm]
    hp = make_hparams(cls.Hparams, overrides)
    fed = Federation.load(federation, data_root)
    model = build_model(config["model"], fed.input_shape, max(fed.num_classes, 1))
    tcfg = config["train"]
    topology = Topology.from_spec(config.get("topology"), fed.num_clients, seed=derive(seed, "topology"))
    device = resolve_device(tcfg.get("device", "cpu"))
    trainer = LocalTrainer(model, backend=tcfg["engine"], device=device, input_shape=fed.input_shape)
    ctx = Context(model, fed, trainer, seed=int(seed), topology=topology, device=device)
    alg = cls(hp, ctx)
    rounds, every, ckpt_every = tcfg["rounds"], tcfg["eval_every"], tcfg.get("checkpoint_every", 0)
    ckpt = out_dir / "checkpoint.pt"
    key = {"config": config, "algorithm": algorithm, "setting": setting, "seed": seed, "federation": fed.sha256}

    state, rows, diag, first = None, [], [], 0
    if ckpt.exists():
        saved = torch.load(ckpt, weights_only=True)  # plain tensors and containers: a crafted file cannot run code
        if saved["key"] == key:
            state, rows, diag, first = saved["state"], saved["rows"], saved["diagnostics"], saved["round"]
            print(f"resuming {algorithm}/{setting}/seed={seed} from round {first}", file=sys.stderr)
    if state is None:
        ctx.rngs.begin("init", 0)
        state = alg.init()

    def collect(t: int) -> None:
        for name, value in ctx.take_diagnostics().items():
            diag.extend(diagnostics.rows(t, name, value))

    bar = Progress(TextColumn(f"{algorithm}/{setting} seed={seed}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("{task.fields[msg]}"), disable=not progress, transient=False)
    with bar:
        task = bar.add_task("rounds", total=rounds, completed=first, msg="")
        for t in range(first, rounds):
            ctx.rngs.begin("train", t)
            state = alg.round(state, t)
            if isinstance(state, tuple):  # (state, diagnostics)
                state, extra = state
                for name, value in extra.items():
                    ctx.diagnose(name, value)
            done = t + 1
            if done == rounds:
                ctx.rngs.begin("finish", t)
                state = alg.finish(state)
            collect(done)
            if done % every == 0 or done == rounds:
                summary = []
                ctx.rngs.begin("eval", done)
                evaluated = alg.evaluate(state, EVAL_SPLITS)
                collect(done)
                for split, m in evaluated.items():
                    rows.extend(_rows(done, split, m))
                    score = "acc" if "acc" in m else "mse"
                    summary.append(f"{split} {score} {m[score].mean():.4f}")
                bar.update(task, msg=", ".join(summary))
                if not sys.stderr.isatty():
                    print(f"round {done}/{rounds}: {', '.join(summary)}", file=sys.stderr)
            bar.update(task, advance=1)
            if ckpt_every and done % ckpt_every == 0 and done < rounds:
                buf = io.BytesIO()
                torch.save({"key": key, "state": state, "rows": rows, "diagnostics": diag, "round": done}, buf)
                atomic_write(ckpt, buf.getvalue())

    table = pd.DataFrame(rows, columns=["round", "client", "split", "metric", "value"])
    table = table.sort_values(["round", "split", "metric", "client"], kind="stable")
    atomic_write(out_dir / "metrics.csv", table.to_csv(index=False, lineterminator="\n").encode())
    atomic_write(out_dir / "diagnostics.csv", diagnostics.table(diag).to_csv(index=False, lineterminator="\n").encode())
    record = {"experiment": config.get("name"), "algorithm": algorithm, "setting": setting, "seed": int(seed),
              "hparams": dataclasses.asdict(hp), "config": config, "federation": str(federation),
              "federation_sha256": fed.sha256, "num_clients": fed.num_clients, "engine": tcfg["engine"],
              "backend": ctx.trainer.backend, "device": describe(device),
              "code": code_version(), "wall_time_s": round(time.time() - start, 3),
              "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    write_json(out_dir / "run.json", record)
    ckpt.unlink(missing_ok=True)
    return record
