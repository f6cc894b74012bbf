"""Failure modes of `pcl train` that used to pass silently or hang: divergence recorded as a result, a corrupt
checkpoint, two writers in one folder, an unwritable folder, bad CLI numbers, duplicate YAML keys; each fails
early with one ``error:`` line (exit 2), or recovers where recovery is safe."""
from __future__ import annotations

import copy
import fcntl
import os

import pytest
import torch
import yaml
from typer.testing import CliRunner

from pcl.algorithms import ALGORITHMS
from pcl.cli import app
from pcl.config import ConfigError, load_experiment, validate_experiment
from pcl.data.federation import Federation
from pcl.run import DivergenceError, OutputDirError, OutputLockedError, train

CONFIG = {
    "name": "reliab", "kind": "federated",
    "data": {"source": {"name": "digits"},
             "partition": {"scheme": "dirichlet", "num_clients": 6, "alpha": 0.5, "seed": 0}},
    "model": {"name": "mlp", "hidden": [8]},
    "train": {"rounds": 3, "eval_every": 1, "engine": "vectorized", "checkpoint_every": 0},
    "algorithms": {"local": {"default": {}}, "fedavg": {"default": {}, "huge": {"lr": 1.0e+38}}},
    "seeds": [0],
}


@pytest.fixture(scope="module")
def fed_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("reliab")
    Federation.build(CONFIG["data"]).save(root)
    return root


def _cfg(**train_cfg):
    cfg = copy.deepcopy(CONFIG)
    cfg["train"].update(train_cfg)
    return validate_experiment(cfg)


def _write(tmp_path, cfg, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def _error_lines(output):
    return [line for line in output.splitlines() if line.startswith("error:")]


# --- 1. divergence -------------------------------------------------------------------------------------------------
def test_divergence_raises_and_writes_no_results(fed_dir, tmp_path):
    """lr 1e38 used to finish with NaN losses in metrics.csv; now it stops with the run's coordinates."""
    out = tmp_path / "run"
    with pytest.raises(DivergenceError) as info:
        train(_cfg(), fed_dir, out, algorithm="fedavg", setting="huge", seed=3, progress=False)
    msg = str(info.value)
    for part in ("'reliab'", "fedavg", "huge", "seed 3", "round 1", "clients 0, 1, 2"):
        assert part in msg, msg
    assert not (out / "metrics.csv").exists() and not (out / "run.json").exists()


def test_divergence_names_clients_and_keeps_last_checkpoint(fed_dir, tmp_path, monkeypatch):
    """A NaN in two clients' rows at round 2: the error names those clients, and round 1's checkpoint survives so
    a fixed rerun can resume."""
    cls = ALGORITHMS["local"]
    real = cls.round

    def poisoned(self, state, t):
        state = real(self, state, t)
        if t == 1:
            params = {n: v.clone() for n, v in state["params"].items()}
            first = next(iter(params))
            params[first][[2, 4]] = float("nan")
            state = {**state, "params": params}
        return state

    monkeypatch.setattr(cls, "round", poisoned)
    out = tmp_path / "run"
    with pytest.raises(DivergenceError, match=r"parameters after round 2, clients 2, 4;"):
        train(_cfg(checkpoint_every=1), fed_dir, out, algorithm="local", progress=False)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["round"] == 1
    assert not (out / "metrics.csv").exists() and not (out / "run.json").exists()


def test_non_finite_evaluation_loss_stops_the_run(fed_dir, tmp_path, monkeypatch):
    """Finite parameters can still predict inf/NaN (e.g. a diverging fine-tune inside evaluate): checked too."""
    cls = ALGORITHMS["fedavg"]
    real = cls.evaluate

    def bad_eval(self, state, splits):
        out = real(self, state, splits)
        out["test"]["loss"][5] = float("inf")
        return out

    monkeypatch.setattr(cls, "evaluate", bad_eval)
    with pytest.raises(DivergenceError, match=r"test loss after round 1, clients 5;"):
        train(_cfg(), fed_dir, tmp_path / "run", algorithm="fedavg", setting="default", progress=False)


def test_cli_divergence_is_one_error_line(fed_dir, tmp_path):
    cfg = _write(tmp_path, CONFIG)
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", str(cfg), str(fed_dir), str(out), "--algorithm", "fedavg",
                                   "--setting", "huge", "--no-progress"])
    assert res.exit_code == 2, res.output
    assert len(_error_lines(res.output)) == 1 and "diverged" in res.output and "Traceback" not in res.output
    assert not (out / "metrics.csv").exists()


# --- 2. corrupt checkpoints ----------------------------------------------------------------------------------------
def _valid_checkpoint_bytes(tmp_path):
    import io
    buf = io.BytesIO()
    torch.save({"key": {}, "state": {"w": torch.randn(1000)}, "rows": [], "diagnostics": [], "round": 1}, buf)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["empty", "truncated", "random", "missing_key"])
def test_corrupt_checkpoint_is_moved_aside(kind, fed_dir, tmp_path, capsys):
    """An unreadable checkpoint used to raise on every retry, blocking the job for good; now it is moved aside and
    the run starts over, giving the same results as a clean run."""
    clean = tmp_path / "clean"
    train(_cfg(), fed_dir, clean, algorithm="local", progress=False)
    out = tmp_path / "run"
    out.mkdir()
    data = {"empty": b"", "truncated": _valid_checkpoint_bytes(tmp_path)[:700], "random": os.urandom(4096)}
    if kind == "missing_key":
        torch.save({"key": {}, "state": {}}, out / "checkpoint.pt")
    else:
        (out / "checkpoint.pt").write_bytes(data[kind])
    (out / "checkpoint.pt.corrupt-1").write_bytes(b"an earlier one")
    capsys.readouterr()
    train(_cfg(), fed_dir, out, algorithm="local", progress=False)
    assert "warning: unreadable checkpoint" in capsys.readouterr().err
    assert (out / "checkpoint.pt.corrupt-2").exists() and not (out / "checkpoint.pt").exists()
    assert (out / "checkpoint.pt.corrupt-1").read_bytes() == b"an earlier one"
    assert (out / "metrics.csv").read_bytes() == (clean / "metrics.csv").read_bytes()


class _Payload:
    """Unpickling this runs code: what a crafted checkpoint in a shared output folder could do on resume."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_crafted_checkpoint_runs_no_code(fed_dir, tmp_path):
    marker = tmp_path / "pwned"
    out = tmp_path / "run"
    out.mkdir()
    torch.save({"key": _Payload(marker)}, out / "checkpoint.pt")  # a full pickle: loading it unsafely opens marker
    train(_cfg(), fed_dir, out, algorithm="local", progress=False)
    assert not marker.exists() and (out / "checkpoint.pt.corrupt-1").exists() and (out / "metrics.csv").exists()


# --- 3. one writer per folder --------------------------------------------------------------------------------------
def test_second_writer_fails_naming_the_holder(fed_dir, tmp_path):
    """Another open file description holding the flock (as a second `pcl train` would) makes train fail at once."""
    out = tmp_path / "run"
    out.mkdir()
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, b"424242\n")
        with pytest.raises(OutputLockedError, match="pid 424242"):
            train(_cfg(), fed_dir, out, algorithm="local", progress=False)
        res = CliRunner().invoke(app, ["train", str(_write(tmp_path, CONFIG)), str(fed_dir), str(out),
                                       "--algorithm", "local", "--no-progress"])
        assert res.exit_code == 2 and len(_error_lines(res.output)) == 1 and "424242" in res.output, res.output
    finally:
        os.close(fd)
    assert not (out / "metrics.csv").exists()
    train(_cfg(), fed_dir, out, algorithm="local", progress=False)  # released: the folder is usable again
    assert (out / ".lock").read_bytes() == b""  # emptied on release, so finished run folders are byte-identical


# --- 4. unwritable output folder -----------------------------------------------------------------------------------
def test_unwritable_output_fails_before_training(fed_dir, tmp_path, monkeypatch):
    """A folder that cannot be created used to surface only after the last round; now before any work."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(Federation, "load", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(OutputDirError, match="not writable"):
        train(_cfg(), fed_dir, blocker / "run", algorithm="local", progress=False)
    res = CliRunner().invoke(app, ["train", str(_write(tmp_path, CONFIG)), str(fed_dir), str(blocker / "run"),
                                   "--algorithm", "local", "--no-progress"])
    assert res.exit_code == 2 and len(_error_lines(res.output)) == 1 and "not writable" in res.output, res.output


def test_probe_write_failure_is_reported(fed_dir, tmp_path, monkeypatch):
    """An existing folder that refuses writes (read-only mount; root ignores chmod, so simulated)."""
    from pathlib import Path
    real = Path.write_bytes

    def refuse(self, data):
        if self.name.startswith(".probe-"):
            raise PermissionError(13, "Permission denied")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", refuse)
    with pytest.raises(OutputDirError, match="Permission denied"):
        train(_cfg(), fed_dir, tmp_path / "run", algorithm="local", progress=False)


# --- 5. CLI numbers ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, word", [(["--threads", "0"], "--threads"), (["--seed", "-1"], "--seed")])
def test_bad_threads_and_seed_are_rejected(args, word, fed_dir, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", str(_write(tmp_path, CONFIG)), str(fed_dir), str(out),
                                   "--algorithm", "local", "--no-progress", *args])
    assert res.exit_code == 2 and len(_error_lines(res.output)) == 1 and word in res.output, res.output
    assert "Traceback" not in res.output and not (out / "metrics.csv").exists()


def test_debug_reraises_with_traceback(fed_dir, tmp_path):
    argv = ["train", str(_write(tmp_path, CONFIG)), str(fed_dir), str(tmp_path / "run"), "--threads", "0"]
    res = CliRunner().invoke(app, ["--debug", *argv])
    assert isinstance(res.exception, ValueError) and "--threads" in str(res.exception)
    res = CliRunner().invoke(app, argv, env={"PCL_DEBUG": "1"})
    assert isinstance(res.exception, ValueError)
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 2 and not isinstance(res.exception, ValueError)


# --- 6. duplicate YAML keys ----------------------------------------------------------------------------------------
def test_duplicate_yaml_key_is_rejected_with_line(tmp_path):
    """`lr` given twice used to keep the last one silently."""
    text = yaml.safe_dump(CONFIG, sort_keys=False).replace("      lr: 1.0e+38\n", "      lr: 1.0e+38\n      lr: 0.1\n")
    assert text.count("lr:") == 2
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    line = text.splitlines().index("      lr: 0.1") + 1
    with pytest.raises(ConfigError, match=rf"duplicate key 'lr'(.|\n)*line {line}"):
        load_experiment(path)
    res = CliRunner().invoke(app, ["validate", str(path)])
    assert res.exit_code == 2 and "duplicate key 'lr'" in res.output


def test_yaml_merge_keys_still_allowed(tmp_path):
    """An explicit key overriding a `<<: *anchor` merge is not a duplicate."""
    text = yaml.safe_dump(CONFIG, sort_keys=False)
    text = text.replace("  fedavg:\n    default: {}\n", "  fedavg:\n    default: &base\n      lr: 0.1\n"
                        "    other:\n      <<: *base\n      lr: 0.2\n")
    path = tmp_path / "merge.yaml"
    path.write_text(text)
    assert load_experiment(path)["algorithms"]["fedavg"]["other"] == {"lr": 0.2}


# --- 7. empty evaluation splits: "no data", never 0.0 --------------------------------------------------------------
def test_score_of_a_client_without_samples_is_nan():
    """0 samples used to give loss 0.0 and accuracy 0.0 (a sum over nothing divided by n clamped to 1)."""
    from pcl.data.types import ClientData
    from pcl.engine.evaluate import score

    out = torch.tensor([[[2.0, 0.0], [0.0, 2.0]], [[5.0, 5.0], [5.0, 5.0]]])  # client 1: padding only
    data = ClientData(x=torch.zeros(2, 2, 1), y=torch.tensor([[0, 0], [0, 0]]), n=torch.tensor([2, 0]))
    m = score(out, data)
    assert m["acc"][0] == 0.5 and m["n"].tolist() == [2.0, 0.0]
    expected = (torch.log1p(torch.exp(torch.tensor(-2.0))) + torch.log1p(torch.exp(torch.tensor(2.0)))) / 2
    assert torch.isclose(m["loss"][0], expected)
    assert m["loss"][1].isnan() and m["acc"][1].isnan()
    reg = score(torch.ones(2, 2, 1), ClientData(torch.zeros(2, 2, 1), torch.zeros(2, 2), torch.tensor([1, 0])))
    assert reg["mse"][0] == 1.0 and reg["mse"][1].isnan()


def _federation_without(root, split, clients):
    """The module's federation with ``split`` of ``clients`` emptied (its samples moved to train); the partitioner
    never makes an empty split (it keeps >= 1 sample per split, however small val_frac), a hand-made or natural
    federation can."""
    import numpy as np

    fed = Federation.build(CONFIG["data"])
    for k in clients:
        moved = getattr(fed.part, split)[k]
        fed.part.train[k] = np.concatenate([fed.part.train[k], moved])
        getattr(fed.part, split)[k] = moved[:0]
    fed.save(root)
    return root


def _train_pair(fed, tmp_path):
    runs = []
    for alg in ("local", "fedavg"):
        train(_cfg(rounds=3), fed, tmp_path / alg, algorithm=alg, setting="default", seed=0, progress=False)
        runs.append(tmp_path / alg)
    return runs


def _metrics(run):
    import pandas as pd

    return pd.read_csv(run / "metrics.csv")


@pytest.mark.parametrize("empty", [[1, 4], list(range(6))], ids=["some", "all"])
def test_empty_validation_split_has_no_metric_and_selection_skips_it(empty, tmp_path):
    import pandas as pd

    from pcl.results import summarize

    fed = _federation_without(tmp_path / "fed", "val", empty)
    runs = _train_pair(fed, tmp_path)  # the NaN loss of an empty split is not divergence: training finishes
    val = _metrics(runs[1]).query("split == 'val'")
    assert not val["value"].isna().any()
    for k in empty:  # only the sample count, 0, is written for a client without validation data
        assert val[val["client"] == k][["metric", "value"]].drop_duplicates().values.tolist() == [["n", 0.0]]
    has_val = sorted(set(range(6)) - set(empty))
    assert sorted(val.loc[val["metric"] == "acc", "client"].unique()) == has_val

    summary = summarize(runs, tmp_path / "summary")
    clients = pd.read_csv(tmp_path / "summary" / "clients.csv")
    assert sorted(clients["client"].unique()) == list(range(6))  # every client has test data: all reported
    if has_val:  # best_val: the round of the best mean validation accuracy over the clients that have some
        for run in runs:
            acc = _metrics(run).query("split == 'val' and metric == 'acc'")
            mean = acc.groupby("round")["value"].mean()
            chosen = clients[(clients["algorithm"] == run.name) & (clients["selection"] == "best_val")]
            assert chosen["round"].unique().tolist() == [mean[mean == mean.max()].index.min()]
    else:  # nothing to select on: only final
        assert set(summary["selection"]) == {"final"} and set(clients["selection"]) == {"final"}
    assert not summary["mean"].isna().any()


def test_empty_test_split_client_is_left_out_of_statistics(tmp_path):
    import numpy as np
    import pandas as pd

    from pcl.results import summarize

    fed = _federation_without(tmp_path / "fed", "test", [2])
    runs = _train_pair(fed, tmp_path)
    summarize(runs, tmp_path / "summary")
    clients = pd.read_csv(tmp_path / "summary" / "clients.csv")
    assert 2 not in set(clients["client"])
    per_run = pd.read_csv(tmp_path / "summary" / "runs.csv")
    test = _metrics(runs[1]).query("split == 'test' and round == 3").pivot(index="client", columns="metric",
                                                                             values="value")
    assert 2 not in test["acc"].dropna().index and test.loc[2, "n"] == 0
    others = test.drop(index=2)
    got = per_run.query("algorithm == 'fedavg' and selection == 'final'").set_index("stat")["value"]
    assert np.isclose(got["mean"], others["acc"].mean())
    assert np.isclose(got["wmean"], np.average(others["acc"], weights=others["n"]))
    assert np.isclose(got["worst"], others["acc"].min())


# --- 8. crafted federation files at the CLI: one error line ------------------------------------------------------
@pytest.mark.parametrize("defect, named", [("train_ptr", "'train_ptr'"), ("bytes", "not a readable federation")])
def test_crafted_federation_is_one_error_line(defect, named, fed_dir, tmp_path):
    import json
    import shutil

    import numpy as np

    from pcl.io import npz_bytes, sha256_file

    crafted = tmp_path / "fed"
    shutil.copytree(fed_dir, crafted)
    npz = crafted / "federation.npz"
    if defect == "bytes":
        npz.write_bytes(b"PK\x03\x04 not a zip")
    else:  # a pointer past the end, re-hashed into stats.json as a consistent rewrite would be
        with np.load(npz, allow_pickle=False) as z:
            a = {k: z[k].copy() for k in z.files}
        a["train_ptr"][-1] += 5
        npz.write_bytes(npz_bytes(a))
        stats = json.loads((crafted / "stats.json").read_text())
        (crafted / "stats.json").write_text(json.dumps({**stats, "federation_sha256": sha256_file(npz)}))
    res = CliRunner().invoke(app, ["train", str(_write(tmp_path, CONFIG)), str(crafted), str(tmp_path / "run"),
                                   "--algorithm", "local", "--no-progress"])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert len(_error_lines(res.output)) == 1 and named in res.output and str(npz) in res.output
