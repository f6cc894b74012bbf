"""Minibatch plans shared by the vectorized engine and the reference loop.

A plan fixes, before training, which samples every client uses at every local step. Both execution
paths read the same plan, which is what makes them comparable to float tolerance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class BatchPlan:
    """``index[s, j]`` are the ``B`` sample rows client ``j`` uses at step ``s``; ``active[s, j]`` says whether
    client ``j`` still trains at step ``s`` (clients with less data finish their epochs earlier)."""

    index: torch.Tensor
    active: torch.Tensor

    @property
    def steps(self) -> int:
        return int(self.index.shape[0])


def steps_for(n: torch.Tensor, batch_size: int, epochs: float | None, steps: int | None,
              drop_last: bool = False) -> torch.Tensor:
    """Local steps of each client: a fixed count, or enough full batches to cover ``epochs`` passes (``drop_last``:
    only the full batches inside them, at least one, as a PyTorch DataLoader with drop_last=True, PFLlib's setting)."""
    if (epochs is None) == (steps is None):
        raise ValueError("local training needs exactly one of 'local_epochs' or 'local_steps'")
    if steps is not None:
        if steps < 1:
            raise ValueError(f"local_steps must be >= 1, got {steps}")
        return torch.full_like(n, int(steps))
    if epochs <= 0:
        raise ValueError(f"local_epochs must be > 0, got {epochs}")
    rounding = torch.floor if drop_last else torch.ceil
    return torch.clamp(rounding(n.double() * epochs / batch_size).long(), min=1)


def make_plan(n: torch.Tensor, batch_size: int, epochs: float | None = None, steps: int | None = None,
              generator: torch.Generator | None = None, drop_last: bool = False) -> BatchPlan:
    """Epoch-wise shuffling per client: each client's index stream is a concatenation of fresh random
    permutations of its own ``n[j]`` samples, cut into full batches of ``batch_size`` (a batch may run
    over an epoch boundary, so every step sees exactly ``batch_size`` samples)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if bool((n < 1).any()):
        raise ValueError("every training client needs at least one sample")
    per_client = steps_for(n, batch_size, epochs, steps, drop_last)
    total = int(per_client.max())
    length = total * batch_size
    n_max = int(n.max())
    epochs_needed = max(1, max(math.ceil(int(s) * batch_size / int(k)) for s, k in zip(per_client, n)))
    keys = torch.rand(len(n), epochs_needed, n_max, generator=generator)
    keys = keys.masked_fill(torch.arange(n_max) >= n[:, None, None], 2.0)  # padding sorts last
    perms = keys.argsort(dim=-1)
    pos = torch.arange(length)
    epoch = torch.clamp(pos[None, :] // n[:, None], max=epochs_needed - 1)
    within = pos[None, :] % n[:, None]
    stream = perms[torch.arange(len(n))[:, None], epoch, within]          # [m, length]
    index = stream.reshape(len(n), total, batch_size).transpose(0, 1)    # [steps, m, B]
    active = torch.arange(total)[:, None] < per_client[None, :]
    return BatchPlan(index=index.contiguous(), active=active)
