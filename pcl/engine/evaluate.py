"""Every client evaluated on its own split in one batched call (vmap over the client dimension)."""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from pcl.data.types import ClientData
from pcl.engine.stack import Params


@torch.no_grad()
def outputs(model: nn.Module, params: Params, data: ClientData, max_rows: int = 200_000) -> torch.Tensor:
    """Model outputs ``[K, n_max, out]`` of every client's own parameters on its own (padded) samples.

    Clients are processed in chunks of at most ``max_rows`` padded samples to bound memory."""
    forward = vmap(lambda p, x: functional_call(model, p, (x,)))
    chunk = max(1, max_rows // max(int(data.x.shape[1]), 1))
    return torch.cat([forward({k: v[lo:lo + chunk] for k, v in params.items()}, data.x[lo:lo + chunk])
                      for lo in range(0, data.num_clients, chunk)])


def score(out: torch.Tensor, data: ClientData, probabilities: bool = False) -> dict[str, torch.Tensor]:
    """Per-client mean loss and accuracy (classification) or mean squared error (regression), plus ``n``.

    A client with no samples in the split (``n == 0``) has no metric: its loss/acc/mse are NaN (0/0), never 0, so
    "no data" cannot be mistaken for a perfect loss or a zero accuracy; consumers skip such clients by ``n``
    (``pcl.run`` writes no row for them, ``pcl.results`` leaves them out of every statistic).

    ``probabilities=True`` means ``out`` holds class probabilities (e.g. a mixture of two models' predictions)
    rather than logits; the loss is then the negative log of the mixture probability."""
    m = data.mask().to(out.dtype)
    denom = torch.where(data.n > 0, data.n.to(out.dtype), torch.nan).to(out.device)
    if data.y.dtype.is_floating_point:
        per = (out.squeeze(-1) - data.y) ** 2
        mse = (per * m).sum(1) / denom
        return {"loss": mse, "mse": mse.clone(), "n": data.n.to(torch.float32)}
    logp = out.clamp_min(1e-12).log() if probabilities else F.log_softmax(out, -1)
    per = -logp.gather(-1, data.y.unsqueeze(-1)).squeeze(-1)
    hit = (out.argmax(-1) == data.y).to(out.dtype)
    return {"loss": (per * m).sum(1) / denom, "acc": (hit * m).sum(1) / denom, "n": data.n.to(torch.float32)}


def evaluate(model: nn.Module, params: Params, data: ClientData, max_rows: int = 200_000) -> dict[str, torch.Tensor]:
    """Per-client metrics of each client's own model on its own split."""
    return score(outputs(model, params, data, max_rows), data)
