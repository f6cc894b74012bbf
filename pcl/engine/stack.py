"""Stacked client state: a dict of tensors, one per parameter, with a leading client dimension.

Aggregation, gossip and client selection are then single tensor operations instead of loops over
client objects (the pattern peers.md recommends over PFLlib's per-client model copies).
"""
from __future__ import annotations

import torch

Params = dict[str, torch.Tensor]


def broadcast(p: Params, k: int) -> Params:
    """``k`` stacked copies of an unstacked parameter set, as a view (no memory per copy: 1,000 clients of a CNN
    starting from the global model cost one model). Engine code is functional and never writes into it."""
    return {n: v.unsqueeze(0).expand(k, *v.shape) for n, v in p.items()}


def take(p: Params, idx: torch.Tensor) -> Params:
    """The rows of the clients in ``idx`` (a copy)."""
    return {n: v[idx].clone() for n, v in p.items()}


def put(p: Params, idx: torch.Tensor, rows: Params) -> Params:
    """A copy of ``p`` whose rows ``idx`` are replaced by ``rows``."""
    out = {n: v.clone() for n, v in p.items()}
    for n in out:
        out[n][idx] = rows[n]
    return out


def weighted_mean(p: Params, w: torch.Tensor) -> Params:
    """Unstacked weighted average over the client dimension (weights are normalised here)."""
    w = w.to(torch.float64) / w.to(torch.float64).sum()
    return {n: torch.tensordot(w.to(v.dtype), v, dims=1) for n, v in p.items()}


def mix(W: torch.Tensor, p: Params) -> Params:
    """Gossip: row i of the result is sum_j W[i, j] p_j, i.e. stacked params <- W @ params."""
    W = torch.as_tensor(W)
    return {n: (W.to(v) @ v.reshape(v.shape[0], -1)).reshape(W.shape[0], *v.shape[1:]) for n, v in p.items()}
