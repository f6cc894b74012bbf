"""Shared fixtures: a small digits federation built once per test session."""
from __future__ import annotations

import pytest
import torch

from pcl.data.federation import Federation

DIGITS_SPEC = {"source": {"name": "digits"},
               "partition": {"scheme": "dirichlet", "num_clients": 20, "alpha": 0.3, "seed": 0}}


@pytest.fixture(scope="session")
def digits_fed(tmp_path_factory) -> Federation:
    out = tmp_path_factory.mktemp("fed")
    Federation.build(DIGITS_SPEC).save(out)
    return Federation.load(out / "federation.npz")


@pytest.fixture(scope="session", autouse=True)
def _own_cache(tmp_path_factory):
    """pcl's cache of passed hyperparameter checks (pcl.config) in a folder of this session, for every process the
    tests start too: a test never reads a user's cache or leaves one."""
    mp = pytest.MonkeyPatch()
    mp.setenv("PCL_CACHE_DIR", str(tmp_path_factory.mktemp("pcl-cache")))
    yield
    mp.undo()


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def kill_in_round(monkeypatch, cls, t: int = 2):
    """Make algorithm ``cls`` raise KeyboardInterrupt when round ``t`` starts (a job killed mid-run); returns the
    original ``round`` so a test can put it back."""
    original = cls.round

    def killed(self, state, rnd):
        if rnd == t:
            raise KeyboardInterrupt("killed")
        return original(self, state, rnd)

    monkeypatch.setattr(cls, "round", killed)
    return original
