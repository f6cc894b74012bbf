"""Peer scoring: the loss and accuracy of model j on client i's data, for many (i, j) pairs in batched calls.

DAC, PENS, IFCA and Clustered FL decide whom to trust from how well other clients' models fit their own data. The
pairs are processed in chunks bounded both in padded samples and in gathered parameters, so N x n pairs of a CNN
cost a few vmapped forward passes, not N*n Python calls.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, vmap

from pcl.data.types import ClientData
from pcl.engine.evaluate import score
from pcl.engine.stack import Params


@torch.no_grad()
def scores(model: nn.Module, params: Params, data: ClientData, pairs: torch.Tensor, max_rows: int = 200_000,
           max_params: int = 1 << 25) -> dict[str, torch.Tensor]:
    """Metrics of model ``j`` (row j of stacked ``params`` [M, ...]) on client ``i``'s split ``data``.

    ``pairs`` is either a long tensor ``[P, 2]`` of (i, j) rows, giving metrics of shape ``[P]``, or a boolean
    matrix ``[K, M]`` selecting pairs, giving ``[K, M]`` matrices (NaN where not selected). Metrics are those of
    :func:`pcl.engine.evaluate.score`: ``loss`` and ``acc`` (classification) or ``mse`` (regression)."""
    as_matrix = pairs.dtype == torch.bool
    if as_matrix:
        k, m = pairs.shape
        if k != data.num_clients or m != next(iter(params.values())).shape[0]:
            raise ValueError(f"scores: a pair mask must be [clients={data.num_clients}, models], got {tuple(pairs.shape)}")
        index = pairs.nonzero()
    else:
        if pairs.ndim != 2 or pairs.shape[1] != 2:
            raise ValueError(f"scores: pairs must be [P, 2] (client, model) rows or a bool mask, got {tuple(pairs.shape)}")
        index = pairs.long()
    forward = vmap(lambda p, x: functional_call(model, p, (x,)))
    per_model = sum(v[0].numel() for v in params.values())
    chunk = max(1, min(max_rows // max(int(data.x.shape[1]), 1), max_params // max(per_model, 1)))
    parts: list[dict[str, torch.Tensor]] = []
    for lo in range(0, len(index), chunk):
        i, j = index[lo:lo + chunk].to(data.x.device).unbind(1)
        out = forward({n: v[j] for n, v in params.items()}, data.x[i])
        parts.append(score(out, ClientData(data.x[i], data.y[i], data.n[i])))
    names = [n for n in (parts[0] if parts else {"loss": 0}) if n != "n"]
    flat = {n: torch.cat([p[n] for p in parts]) if parts else torch.zeros(0) for n in names}
    if not as_matrix:
        return flat
    full = {}
    for n, v in flat.items():
        full[n] = torch.full((k, m), float("nan"), dtype=v.dtype, device=v.device)
        full[n][index[:, 0], index[:, 1]] = v
    return full
