"""One tree of random generators: every draw comes from (run seed, phase, round, purpose, n-th use).

A generator is derived afresh for each use instead of being advanced through the run, so evaluation (its own phase)
can never move training's draws, and a run resumed at a round boundary needs no generator state: the same config and
seed give the same bytes whether it ran through, evaluated every round, or was killed and resumed.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch


def derive(seed: int, *keys: object) -> int:
    """A 63-bit seed determined by ``seed`` and ``keys`` (a stable hash: same on every machine and run)."""
    digest = hashlib.blake2b(repr((int(seed), *keys)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class RNGTree:
    """Generators for a run. ``begin(phase, t)`` starts a phase ('init', 'train', 'eval', 'finish') of round ``t``;
    ``torch(purpose)``/``numpy(purpose)`` then give the k-th generator of that purpose in it."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self.begin("init", 0)

    def begin(self, phase: str, t: int) -> None:
        self.phase, self.t, self._uses = phase, int(t), {}

    def _next(self, purpose: str) -> int:
        k = self._uses.get(purpose, 0)
        self._uses[purpose] = k + 1
        return derive(self.seed, self.phase, self.t, purpose, k)

    def torch(self, purpose: str) -> torch.Generator:
        return torch.Generator().manual_seed(self._next(purpose))

    def numpy(self, purpose: str) -> np.random.Generator:
        return np.random.default_rng(self._next(purpose))
