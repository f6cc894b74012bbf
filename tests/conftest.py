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
