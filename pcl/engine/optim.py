"""Functional optimizers (SGD, Adam) on one client's parameters, and a per-parameter step-size table.

They are pure (no in-place updates), so a local trajectory can be differentiated (hypergradients) and vmapped over
clients; both execution paths use the same code. The state is a dict of parameter-shaped tensors, and the step count
``t`` is a plain number: every client that takes its s-th step takes it at the same ``t = s``.
"""
from __future__ import annotations

import torch

from pcl.engine.stack import Params


class SGD:
    """Plain SGD with optional L2 weight decay (no state)."""

    def __init__(self, weight_decay: float = 0.0) -> None:
        self.wd = weight_decay

    def init(self, params: Params) -> dict[str, Params]:
        return {}

    def update(self, params: Params, grads: Params, state: dict, lrs: dict[str, float], t: int):
        out = {n: torch.add(p, grads[n] + self.wd * p if self.wd else grads[n], alpha=-lrs[n]) for n, p in params.items()}
        return out, state


class Adam:
    """Adam (Kingma & Ba 2015). A fresh state per local-training call, as DAC's official code does."""

    def __init__(self, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.wd, (self.b1, self.b2), self.eps = weight_decay, betas, eps

    def init(self, params: Params) -> dict[str, Params]:
        return {"m": {n: torch.zeros_like(p) for n, p in params.items()},
                "v": {n: torch.zeros_like(p) for n, p in params.items()}}

    def update(self, params: Params, grads: Params, state: dict, lrs: dict[str, float], t: int):
        c1, c2 = 1 - self.b1 ** t, 1 - self.b2 ** t
        out, m, v = {}, {}, {}
        for n, p in params.items():
            g = grads[n] + self.wd * p if self.wd else grads[n]
            m[n] = state["m"][n] + (1 - self.b1) * (g - state["m"][n])
            v[n] = state["v"][n] + (1 - self.b2) * (g * g - state["v"][n])
            out[n] = p - lrs[n] * (m[n] / c1) / (_sqrt(v[n] / c2) + self.eps)
        return out, {"m": m, "v": v}


def _sqrt(v: torch.Tensor) -> torch.Tensor:
    """sqrt with a finite derivative where v = 0 (a dead unit's zero gradient): plain sqrt would give 0 * inf = nan
    in a hypergradient through Adam steps. The inner ``where`` keeps the unused branch's derivative finite too."""
    positive = v > 0
    return torch.where(positive, torch.where(positive, v, torch.ones_like(v)).sqrt(), torch.zeros_like(v))


OPTIMIZERS = {"sgd": SGD, "adam": Adam}
