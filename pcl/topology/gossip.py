"""Gossip and push-sum on stacked parameters (a dict of tensors whose leading dimension is the node).

Out of place and dtype-preserving, so that algorithms can differentiate through communication (hypergradients)
and keep float32 parameters while the mixing matrices stay float64. Push-sum is the communication step of
Stochastic Gradient Push (Assran et al. 2019): each node keeps a numerator ``x_i`` and a weight ``w_i``, both mixed by
a column-stochastic ``P`` (:meth:`Topology.weights` with ``mixing="push_sum"``), and uses ``x_i / w_i``, which
reaches the node average on directed, time-varying graphs where row-stochastic gossip reaches a biased consensus.
"""
from __future__ import annotations

import torch

from pcl.engine.stack import Params, mix


def gossip(W: torch.Tensor, params: Params) -> Params:
    """One gossip step: row ``i`` becomes ``sum_j W[i, j] p_j`` (``W`` row stochastic for consensus)."""
    return mix(W, params)


def push_sum(P: torch.Tensor, numerators: Params, weights: torch.Tensor) -> tuple[Params, torch.Tensor]:
    """One push-sum step: numerators and the [K] push-sum weights both become ``P @ .``."""
    return mix(P, numerators), torch.as_tensor(P).to(weights) @ weights


def debias(numerators: Params, weights: torch.Tensor) -> Params:
    """The push-sum estimates ``x_i / w_i`` that nodes evaluate gradients and models at."""
    return {n: v / weights.to(v).reshape(-1, *(1,) * (v.dim() - 1)) for n, v in numerators.items()}
