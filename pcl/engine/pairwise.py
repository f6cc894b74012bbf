"""Per-pair gradients: every task j's stochastic gradient at every client i's model, in one vectorized call.

Personalized collaborative SGD (weighted gradient averaging and bias correction, Chayti et al., arXiv
2111.05968) makes every client a target: client i queries all K tasks' minibatch gradients g_j(x_i) at its
own iterate x_i. ``vmap`` over i of ``vmap`` over j of ``grad`` gives the whole [K, K, ...] table at once,
instead of K*K autograd calls.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from pcl.engine.objective import task_loss
from pcl.engine.stack import Params


def _grad_fn(model: nn.Module):
    return grad(lambda p, x, y: task_loss(functional_call(model, p, (x,)), y))


def pair_grads(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor) -> Params:
    """``out[n][i, j]`` = gradient of task j's mean loss on its batch ``(x[j], y[j])`` at parameters ``params[i]``.

    ``params`` is stacked ``[M, ...]`` (the models), ``x`` is ``[K, B, *features]`` and ``y`` ``[K, B]`` (one
    minibatch per task); the result is stacked ``[M, K, ...]``.
    """
    over_tasks = vmap(_grad_fn(model), in_dims=(None, 0, 0))
    return vmap(over_tasks, in_dims=(0, None, None))(params, x, y)


def pair_grad_stats(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, groups: int | None = None,
                    max_elements: int = 1 << 25) -> tuple[Params, torch.Tensor]:
    """Per-pair minibatch gradients (as :func:`pair_grads`) and, per pair ``[M, K]``, an unbiased estimate of the
    trace of the per-sample gradient covariance: the σ_j² at x_i that WGA's weight estimation needs.

    The batch is cut into ``groups`` equal parts (None: one per sample, i.e. per-sample gradients); with group
    means m_1..m_G of b = B/G samples each, b·Σ_g‖m_g − m̄‖²/(G − 1) is unbiased for the per-sample trace, so a few
    groups give the same estimate as per-sample gradients at a fraction of their cost (a sum over all parameters
    is already well averaged). Models are processed in chunks of at most ``max_elements`` numbers.
    """
    k, batch = x.shape[:2]
    groups = batch if groups is None else groups
    if not 2 <= groups <= batch or batch % groups:
        raise ValueError(f"groups={groups} must divide the batch of {batch} samples into >= 2 equal parts")
    size = batch // groups
    x = x.reshape(k, groups, size, *x.shape[2:])
    y = y.reshape(k, groups, size, *y.shape[2:])
    per_group = vmap(_grad_fn(model), in_dims=(None, 0, 0))
    table = vmap(vmap(per_group, in_dims=(None, 0, 0)), in_dims=(0, None, None))
    m = next(iter(params.values())).shape[0]
    per_model = k * groups * sum(v[0].numel() for v in params.values())
    chunk = max(1, max_elements // max(per_model, 1))
    means, variances = [], []
    for lo in range(0, m, chunk):
        per = table({n: v[lo:lo + chunk] for n, v in params.items()}, x, y)  # [c, K, groups, ...]
        mean = {n: v.mean(2) for n, v in per.items()}
        spread = sum((v - mean[n].unsqueeze(2)).pow(2).flatten(2).sum(-1) for n, v in per.items())
        means.append(mean)
        variances.append(spread * (size / (groups - 1)))  # (Tensor.var over a middle axis is ~20x slower)
    return {n: torch.cat([c[n] for c in means]) for n in params}, torch.cat(variances)


def pair_mix(weights: torch.Tensor, table: Params) -> Params:
    """Row i of the result is Σ_j weights[i, j]·table[i, j]: each client's weighted average of its pair entries."""
    return {n: torch.einsum("ij,ij...->i...", weights.to(v), v) for n, v in table.items()}


def pair_diag(table: Params) -> Params:
    """The own entries table[i, i] (each client's gradient of its own loss at its own model)."""
    return {n: v[torch.arange(v.shape[0]), torch.arange(v.shape[0])] for n, v in table.items()}
