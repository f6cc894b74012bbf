"""Per-pair gradients: every task j's stochastic gradient at every client i's model, in one vectorized call.

Personalized collaborative SGD (weighted gradient averaging and bias correction, Chayti et al., arXiv
2111.05968) makes every client a target: client i queries all K tasks' minibatch gradients g_j(x_i) at its
own iterate x_i. ``vmap`` over i of ``vmap`` over j of ``grad`` gives the whole [K, K, ...] table at once,
instead of K*K autograd calls; the training steps need only its weighted rows (``mixed_grads``, memory linear in K),
the weight estimation its statistics (``pair_grad_stats``, chunked).
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


def own_grads(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor) -> Params:
    """Row i: client i's gradient of its own batch loss at its own model (the diagonal of :func:`pair_grads`)."""
    return vmap(_grad_fn(model))(params, x, y)


def mixed_grads(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor,
                max_rows: int = 1 << 15) -> Params:
    """Row i: sum_j weights[i, j] * g_j(x_i), without the [M, K, ...] table of :func:`pair_grads`.

    It is the gradient at x_i of the weighted sum of every task's batch loss, so memory is one gradient per model
    plus the activations of all K batches, for a chunk of models at a time (at most ``max_rows`` samples in flight):
    linear, not quadratic, in the number of clients."""
    def one(p, w):
        def loss(q):
            per_task = vmap(lambda xb, yb: task_loss(functional_call(model, q, (xb,)), yb))(x, y)  # [K]
            return (w.to(per_task) * per_task).sum()
        return grad(loss)(p)
    batched = vmap(one)
    m = weights.shape[0]
    chunk = max(1, max_rows // max(int(x.shape[0] * x.shape[1]), 1))
    parts = [batched({n: v[lo:lo + chunk] for n, v in params.items()}, weights[lo:lo + chunk].to(x.device))
             for lo in range(0, m, chunk)]
    return {n: torch.cat([part[n] for part in parts]) for n in params}


def pair_grad_stats(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, groups: int | None = None,
                    max_elements: int = 1 << 25, gaps: bool = False) -> tuple[Params | torch.Tensor, torch.Tensor]:
    """Per-pair minibatch gradients (as :func:`pair_grads`) and, per pair ``[M, K]``, an unbiased estimate of the
    trace of the per-sample gradient covariance: the σ_j² at x_i that WGA's weight estimation needs.

    The batch is cut into ``groups`` equal parts (None: one per sample, i.e. per-sample gradients); with group
    means m_1..m_G of b = B/G samples each, b·Σ_g‖m_g − m̄‖²/(G − 1) is unbiased for the per-sample trace, so a few
    groups give the same estimate as per-sample gradients at a fraction of their cost (a sum over all parameters
    is already well averaged). Models are processed in chunks of at most ``max_elements`` numbers.

    ``gaps=True`` (model i = task i's own model, M = K) returns, instead of the [M, K, ...] table of means, only the
    [M, K] squared distances ‖ḡ_j(x_i) − ḡ_i(x_i)‖² that WGA's bias estimate needs, reduced chunk by chunk: memory
    linear in K (the table is K²·P numbers: 6.9 GB for 599 clients of a 4,810-parameter MLP).
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
        if gaps:
            rows = torch.arange(len(spread))
            own = {n: v[rows, lo + rows] for n, v in mean.items()}  # ḡ_i(x_i) of the chunk's models
            means.append(sum((v - own[n].unsqueeze(1)).double().pow(2).flatten(2).sum(-1) for n, v in mean.items()))
        else:
            means.append(mean)
        variances.append(spread * (size / (groups - 1)))  # (Tensor.var over a middle axis is ~20x slower)
    if gaps:
        return torch.cat(means), torch.cat(variances)
    return {n: torch.cat([c[n] for c in means]) for n in params}, torch.cat(variances)
