"""Server optimizers on the pseudo-gradient g = u - sum_i w_i u_i / sum_i w_i (the global model minus the weighted mean
of the clients' returned models), as FedOpt (Reddi et al., ICLR 2021, "Adaptive Federated Optimization", Algorithm 2)
and the partial-personalization code (``pfl/optim/server_optimizers.py``, which steps on state-dict "grads") do.

SGD with lr 1 and no momentum is FedAvg's averaging (u - (u - mean) = mean, to rounding); Adam is FedAdam, used for
StackOverflow and GLDv2 by Pillutla et al. (2022). Pure functions on unstacked parameter dicts, like
``pcl.engine.optim``: ``init(params) -> state``, ``step(params, g, state) -> (params, state)``; the state holds only
tensors and an int, so it checkpoints with ``torch.save`` and loads with ``weights_only=True``.
"""
from __future__ import annotations

import torch

from pcl.engine.stack import Params, weighted_mean

SERVER_OPTIMIZERS = ("sgd", "adam")


def pseudo_gradient(global_params: Params, local: Params, weights: torch.Tensor) -> Params:
    """u - weighted mean of the stacked ``local`` rows, over the names of ``local`` (the shared part)."""
    mean = weighted_mean(local, weights)
    return {n: global_params[n] - mean[n] for n in local}


class ServerOpt:
    """``name`` 'sgd' (heavy-ball ``momentum``, PyTorch's convention: b <- momentum*b + g, u <- u - lr*b) or 'adam'
    (Kingma & Ba 2015, PyTorch's defaults ``betas``/``eps``, bias-corrected)."""

    def __init__(self, name: str = "sgd", lr: float = 1.0, momentum: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        if name not in SERVER_OPTIMIZERS:
            raise ValueError(f"server_optimizer: unknown {name!r}; choose one of {SERVER_OPTIMIZERS}")
        if not lr > 0:
            raise ValueError(f"server_lr must be > 0, got {lr}")
        self.name, self.lr, self.momentum, (self.b1, self.b2), self.eps = name, lr, momentum, betas, eps

    def init(self, params: Params) -> dict:
        zeros = lambda: {n: torch.zeros_like(p) for n, p in params.items()}  # noqa: E731
        if self.name == "adam":
            return {"t": 0, "m": zeros(), "v": zeros()}
        return {"buf": zeros()} if self.momentum else {}

    def step(self, params: Params, g: Params, state: dict) -> tuple[Params, dict]:
        """New values of the parameters named in ``g`` (the others are returned unchanged) and the new state."""
        if self.name == "sgd":
            if self.momentum:
                buf = {n: self.momentum * state["buf"][n] + d for n, d in g.items()}
                g, state = buf, {"buf": buf}
            return {**params, **{n: params[n] - self.lr * d for n, d in g.items()}}, state
        t = state["t"] + 1
        m = {n: self.b1 * state["m"][n] + (1 - self.b1) * d for n, d in g.items()}
        v = {n: self.b2 * state["v"][n] + (1 - self.b2) * d * d for n, d in g.items()}
        c1, c2 = 1 - self.b1 ** t, 1 - self.b2 ** t
        new = {n: params[n] - self.lr * (m[n] / c1) / ((v[n] / c2).sqrt() + self.eps) for n in g}
        return {**params, **new}, {"t": t, "m": m, "v": v}
