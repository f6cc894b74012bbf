"""The round loop: run one (algorithm, setting, seed) on a federation, evaluate, checkpoint, write results.

Outputs in ``out_dir``: ``metrics.csv`` (long table: round, client, split, metric, value; a client with no samples
in a split has only its ``n`` = 0 row there, no loss or accuracy), ``diagnostics.csv``
(per-round diagnostics, see ``pcl.diagnostics``) and ``run.json`` (resolved config, hyperparameters, seed, federation
hash, code version, engine backend, wall time, peak memory) and ``model.pt`` (the final shared model, which a
setting's ``init_from: <algorithm>/<setting>`` starts from). All are written atomically at the end; a
``checkpoint.pt`` written every ``checkpoint_every`` rounds lets a killed job resume with bit-identical results
(every random draw comes from the run's RNG tree, keyed by round, so a round boundary needs no generator state).
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import io
import os
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
from pcl.config import init_reference, split_setting
from pcl.data.federation import Federation
from pcl.device import describe, resolve_device
from pcl.engine import LocalTrainer
from pcl.io import atomic_write, sha256_file, write_json
from pcl.models import build_model
from pcl.rng import derive
from pcl.topology import Topology

EVAL_SPLITS = ("val", "test")
MODEL_FILE = "model.pt"  # the run's final shared model (Algorithm.export): what init_from references load


class DivergenceError(ValueError):
    """Training produced a non-finite loss or parameter: the run stops instead of recording NaNs as a result."""


class OutputLockedError(OSError):
    """Another process holds the output folder's lock: two writers would interleave checkpoints and results."""


class OutputDirError(OSError):
    """The output folder cannot be created or written: found before training, not after the last round."""


def _check_out_dir(out_dir: Path) -> None:
    """Create ``out_dir`` and write/remove a probe file, so an unwritable folder fails before any round runs."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OutputDirError(f"output folder {out_dir} is not writable: {err.strerror or err}") from None


@contextlib.contextmanager
def _locked(out_dir: Path):
    """Hold an advisory ``flock`` on ``out_dir/.lock`` (non-blocking; the file holds the PID) for the whole run, so a
    second writer into the same folder fails at once instead of clobbering the first one's files."""
    path = out_dir / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise OutputLockedError(f"output folder {out_dir} is in use by another pcl run (pid {holder}); "
                                    f"lock file {path}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # an empty lock file is left: run folders stay byte-identical across runs
    finally:
        os.close(fd)  # closing the only descriptor releases the lock; the file stays (unlinking it would race)


def _nonfinite_clients(params: dict[str, torch.Tensor], k: int) -> list[int]:
    """Clients whose parameters have a NaN/inf: one isfinite pass per tensor; a tensor without a leading client
    dimension (a shared/global model) taints every client."""
    bad = torch.zeros(k, dtype=torch.bool)
    for v in params.values():
        if not torch.is_tensor(v) or not v.is_floating_point():
            continue
        if v.dim() >= 1 and v.shape[0] == k:
            bad |= ~torch.isfinite(v.reshape(k, -1)).all(dim=1).cpu()
        elif not bool(torch.isfinite(v).all()):
            bad[:] = True
    return bad.nonzero().flatten().tolist()


def _model_params(state, names: set[str]):
    """The parameter sets inside an algorithm state (dicts keyed by the model's parameter names), at any depth."""
    if isinstance(state, dict):
        if state and set(state) == names:
            yield state
        else:
            for v in state.values():
                yield from _model_params(v, names)
    elif isinstance(state, (list, tuple)):
        for v in state:
            yield from _model_params(v, names)


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
    """Long-table rows of one evaluation. A client with no samples in the split (``n == 0``) gets only its ``n``
    row: it has no loss or accuracy (NaN from ``score``), and a blank or 0.0 value would read as a result."""
    has_data = metrics["n"].cpu() > 0
    out = []
    for metric, values in metrics.items():
        out.extend((t, k, split, metric, float(v)) for k, v in enumerate(values.tolist())
                   if metric == "n" or has_data[k])
    return out


def _mean_over_data(values: torch.Tensor, n: torch.Tensor) -> str:
    """The progress line's mean over clients that have samples in the split, or "no data"."""
    has_data = n.to(values.device) > 0
    return f"{values[has_data].mean():.4f}" if has_data.any() else "no data"


def _diverged(what: str, where: str, t: int, clients: list[int]) -> DivergenceError:
    shown = ", ".join(map(str, clients[:5])) + (f", ... ({len(clients)} in all)" if len(clients) > 5 else "")
    return DivergenceError(f"training diverged ({where}): non-finite {what} after round {t}, clients {shown}; "
                           f"try a smaller learning rate")


def train(config: dict, federation: str | Path, out_dir: str | Path, *, algorithm: str | None = None,
          setting: str | None = None, seed: int = 0, data_root: str | Path = "data/raw", threads: int = 1,
          progress: bool = True, checkpoint_dir: str | Path | None = None) -> dict:
    """Run one training job; returns the run record (also written to ``run.json``). The output folder is checked
    for writability and locked first; a diverging run raises ``DivergenceError`` and writes no results.
    ``checkpoint.pt`` goes to ``checkpoint_dir`` (default: the output folder) and is removed when the run ends."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    out_dir = Path(out_dir)
    ckpt_dir = out_dir if checkpoint_dir is None else Path(checkpoint_dir)
    algorithm, setting, overrides = resolve(config, algorithm, setting)
    loop, overrides = split_setting(overrides)
    config = {**config, "train": {**config["train"], **loop}}  # run.json records the rounds this run trained
    _check_out_dir(out_dir)
    if ckpt_dir != out_dir:
        _check_out_dir(ckpt_dir)
    with _locked(out_dir):
        return _train(config, federation, out_dir, ckpt_dir / "checkpoint.pt", algorithm, setting, overrides,
                      int(seed), data_root, threads, progress)


def train_seeds(config: dict, federation: str | Path, out_dir: str | Path, *, algorithm: str | None = None,
                setting: str | None = None, data_root: str | Path = "data/raw", threads: int = 1,
                progress: bool = True, checkpoint_dir: str | Path | None = None) -> list[dict]:
    """Every seed of ``config["seeds"]`` for one (algorithm, setting), one after the other in this process, into
    ``out_dir/seed=<s>`` (checkpoints in ``checkpoint_dir/seed=<s>``); returns the run records.

    Why one process: at the sizes of the default and benchmark experiments a run trains in 1-3 s, while starting a
    process (imports, engine set-up) costs ~3 s more. The runs are independent (all randomness comes from each run's
    seeded RNG tree), so each seed's outputs are byte-identical to those of its own ``train`` call (a test)."""
    out_dir = Path(out_dir)
    ckpt_root = out_dir if checkpoint_dir is None else Path(checkpoint_dir)
    records = [train(config, federation, out_dir / f"seed={s}", algorithm=algorithm, setting=setting, seed=s,
                     data_root=data_root, threads=threads, progress=progress, checkpoint_dir=ckpt_root / f"seed={s}")
               for s in config["seeds"]]
    if ckpt_root != out_dir:
        with contextlib.suppress(OSError):  # empty once every seed has finished
            ckpt_root.rmdir()
    return records


def _load_checkpoint(ckpt: Path):
    """The saved checkpoint, or None (and it is moved aside to ``checkpoint.pt.corrupt-<n>``) when it cannot be read:
    a truncated or foreign file must not block the job forever; the run then starts from scratch."""
    try:
        saved = torch.load(ckpt, weights_only=True)  # plain tensors and containers: a crafted file cannot run code
        saved = {k: saved[k] for k in ("key", "state", "rows", "diagnostics", "round")}
    except Exception as err:  # noqa: BLE001 - whatever the unpickler or a missing key raises
        n = 1
        while (aside := ckpt.with_name(f"{ckpt.name}.corrupt-{n}")).exists():
            n += 1
        os.replace(ckpt, aside)
        reason = (str(err).splitlines() or [""])[0][:160]
        print(f"warning: unreadable checkpoint {ckpt} ({type(err).__name__}: {reason}); moved to {aside.name}, "
              f"starting from scratch", file=sys.stderr)
        return None
    return saved


def _resolve_init(overrides: dict, out_dir: Path, seed) -> tuple[dict, str | None]:
    """A setting's ``init_from``: an ``<algorithm>/<setting>`` reference (``pcl.config.init_reference``) becomes that
    run's ``model.pt`` beside this run (``<exp>/<alg>/<setting>/seed=<seed>``, the workflow's layout); returns the
    overrides with the path and the file's SHA-256 (None without ``init_from``)."""
    value = overrides.get("init_from")
    if value is None:
        return overrides, None
    ref = init_reference(value)
    path = out_dir.resolve().parents[2] / ref[0] / ref[1] / f"seed={seed}" / MODEL_FILE if ref else Path(value)
    if not path.is_file():
        hint = f" (run {value} with seed {seed} first)" if ref else ""
        raise FileNotFoundError(f"init_from {value!r}: no file {path}{hint}")
    return {**overrides, "init_from": str(path)}, sha256_file(path)


def _train(config: dict, federation, out_dir: Path, ckpt: Path, algorithm: str, setting: str, overrides: dict,
           seed: int, data_root, threads: int, progress: bool) -> dict:
    torch.set_num_threads(threads)
    start = time.time()
    cls = ALGORITHMS[algorithm]
    overrides, init_sha = _resolve_init(overrides, out_dir, seed)
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
    # the init file's content is part of the key: a retrained pre-training run invalidates a dependent checkpoint
    key = {"config": config, "algorithm": algorithm, "setting": setting, "seed": seed, "federation": fed.sha256,
           "init_sha256": init_sha}

    state, rows, diag, first = None, [], [], 0
    saved = _load_checkpoint(ckpt) if ckpt.exists() else None
    if saved is not None:
        if saved["key"] == key:
            state, rows, diag, first = saved["state"], saved["rows"], saved["diagnostics"], saved["round"]
            print(f"resuming {algorithm}/{setting}/seed={seed} from round {first}", file=sys.stderr)
    if state is None:
        ctx.rngs.begin("init", 0)
        state = alg.init()

    names = {n for n, _ in model.named_parameters()}
    where = f"experiment {config.get('name')!r}, algorithm {algorithm}, setting {setting}, seed {seed}"

    def check_params(t: int) -> None:
        """After each round: the personalized parameters are computed from the parameter sets in the state (a
        fedavg_ft fine-tune is caught by the evaluation-loss check), so checking those is cheap and sufficient."""
        found = list(_model_params(state, names)) or [alg.personalized(state)]  # fallback: an unusual state layout
        bad = sorted(set().union(*(_nonfinite_clients(p, fed.num_clients) for p in found)))
        if bad:
            raise _diverged("parameters", where, t, bad)

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
            check_params(done)
            if done % every == 0 or done == rounds:
                summary = []
                ctx.rngs.begin("eval", done)
                evaluated = alg.evaluate(state, EVAL_SPLITS)
                collect(done)
                for split, m in evaluated.items():
                    # a client without samples in the split has a NaN loss by definition (no data), not divergence
                    loss = m["loss"].masked_fill(m["n"].to(m["loss"].device) == 0, 0.0) if "loss" in m else None
                    bad = _nonfinite_clients({"loss": loss}, fed.num_clients) if loss is not None else []
                    if bad:
                        raise _diverged(f"{split} loss", where, done, bad)
                for split, m in evaluated.items():
                    rows.extend(_rows(done, split, m))
                    score = "acc" if "acc" in m else "mse"
                    summary.append(f"{split} {score} {_mean_over_data(m[score], m['n'])}")
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
              "federation_sha256": fed.sha256, "init_sha256": init_sha, "num_clients": fed.num_clients,
              "engine": tcfg["engine"],
              "backend": ctx.trainer.backend, "device": describe(device),
              "code": code_version(), "wall_time_s": round(time.time() - start, 3),
              "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    buf = io.BytesIO()
    torch.save({n: v.detach().cpu() for n, v in alg.export(state).items()}, buf)
    atomic_write(out_dir / MODEL_FILE, buf.getvalue())
    write_json(out_dir / "run.json", record)
    ckpt.unlink(missing_ok=True)
    if ckpt.parent != out_dir:
        with contextlib.suppress(OSError):  # a checkpoint folder of its own: leave no empty folder behind
            ckpt.parent.rmdir()
    return record
