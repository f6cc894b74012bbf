"""Reliability of what pcl writes and names: file modes follow the umask, setting names are safe folder names."""
from __future__ import annotations

import os
import stat

import pytest

from pcl.config import ConfigError, validate_experiment
from pcl.io import atomic_write

CONFIG = {
    "name": "files", "kind": "federated",
    "data": {"source": {"name": "digits"}, "partition": {"scheme": "iid", "num_clients": 4, "seed": 0}},
    "model": {"name": "mlp", "hidden": [8]}, "train": {"rounds": 1}, "seeds": [0],
    "algorithms": {"local": {"default": {}}},
}


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_write_gives_the_mode_an_ordinary_open_would(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "out.csv", b"x\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.csv").stat().st_mode) == mode
    assert (tmp_path / "out.csv").read_bytes() == b"x\n" and os.listdir(tmp_path) == ["out.csv"]


@pytest.mark.parametrize("name", [".", "..", ".hidden"])
def test_setting_names_that_are_not_plain_folder_names_are_rejected(name):
    with pytest.raises(ConfigError, match="algorithms.local"):
        validate_experiment({**CONFIG, "algorithms": {"local": {name: {}}}})


@pytest.mark.parametrize("name", ["default", "lam0.1", "a-b_c"])
def test_ordinary_setting_names_pass(name):
    assert name in validate_experiment({**CONFIG, "algorithms": {"local": {name: {}}}})["algorithms"]["local"]


# --- download failures: one error line naming the URL, no traceback, nothing left in the cache ----------------------
@pytest.fixture
def not_found_mirror(tmp_path):
    """A loopback HTTP server that answers 404 to everything (an empty folder)."""
    import http.server
    import threading
    from functools import partial

    (tmp_path / "empty").mkdir()
    handler = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *a: None})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(tmp_path / "empty")))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def _closed_port() -> str:
    import socket

    with socket.socket() as s:  # bound, then closed: nothing listens there afterwards
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _mnist_experiment(tmp_path):
    import yaml

    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "data": {**CONFIG["data"], "source": {"name": "mnist"}}}))
    return path


FIRST_FILE = "mnist/train-images-idx3-ubyte.gz"  # the first file the mnist loader fetches


@pytest.mark.parametrize("command", ["download", "partition", "fetch"])
@pytest.mark.parametrize("server", ["404", "closed port"])
def test_unreachable_mirror_is_one_error_line(command, server, not_found_mirror, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from pcl.cli import app
    from pcl.data.download import MIRROR_ENV

    mirror = not_found_mirror if server == "404" else _closed_port()
    monkeypatch.setenv(MIRROR_ENV, mirror)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    args = {"download": ["download", str(_mnist_experiment(tmp_path))],
            "partition": ["partition", str(_mnist_experiment(tmp_path)), str(tmp_path / "fed")],
            "fetch": ["fetch", *FIRST_FILE.split("/")]}[command] + ["--data-root", str(tmp_path / "raw")]
    res = CliRunner().invoke(app, args)
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert len(errors) == 1 and FIRST_FILE in errors[0]
    assert (f"{mirror}/{FIRST_FILE}" in errors[0]) == (server == "404")  # the closed port names host, port, path
    assert server == "404" or f"port={mirror.rsplit(':', 1)[1]}" in errors[0]
    assert not [p for p in (tmp_path / "raw").rglob("*") if p.is_file()]  # no partial file in the cache
    assert not (tmp_path / "fed").exists()


def test_unreachable_mirror_from_the_shell_prints_no_traceback(tmp_path):
    """The same through the installed entry point (CliRunner would hide a traceback that reaches the terminal)."""
    import subprocess
    import sys
    from pathlib import Path

    from pcl.data.download import MIRROR_ENV

    env = {**os.environ, MIRROR_ENV: _closed_port(), "NO_PROXY": "127.0.0.1"}
    env.pop("PCL_DEBUG", None)
    pcl = Path(sys.executable).with_name("pcl")  # the console script installed beside this interpreter
    res = subprocess.run([str(pcl), "download", str(_mnist_experiment(tmp_path)),
                          "--data-root", str(tmp_path / "raw")], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert [line for line in res.stderr.splitlines() if line.startswith("error:")][0].count(FIRST_FILE) == 1
