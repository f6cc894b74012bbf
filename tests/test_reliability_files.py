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
