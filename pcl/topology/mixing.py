"""Mixing matrices for gossip and push-sum, and a reference push-sum averager.

A mixing step on stacked per-node values ``x`` (leading axis = node) is ``x <- M @ x``, so ``M[i, j]`` is the weight
node ``i`` puts on what it receives from ``j``; it can be non-zero only if ``j -> i`` is an edge (``adj[j, i]``) or
``i == j``. Self-loops are always added (see :mod:`pcl.topology.graphs`). Matrices are numpy float64; the engine
converts them and applies them to parameters.
"""
from __future__ import annotations

import numpy as np

from pcl.topology.graphs import Graph, with_self_loops


def _adjacency(adj: np.ndarray) -> np.ndarray:
    adj = np.asarray(adj)
    if adj.ndim != 2 or adj.shape[0] != adj.shape[1]:
        raise ValueError(f"adjacency must be a square matrix, got shape {adj.shape}")
    return with_self_loops(adj)


def metropolis_hastings(adj: np.ndarray) -> np.ndarray:
    """Metropolis-Hastings weights ``W_ij = 1 / (1 + max(d_i, d_j))`` on edges, the rest on the diagonal.

    Symmetric and doubly stochastic on any undirected graph using only each node's and its neighbours' degrees
    (Xiao & Boyd 2004), so gossip with it preserves the average and reaches consensus on a connected graph.
    Degrees ``d`` exclude the self-loop.
    """
    adj = _adjacency(adj)
    if not np.array_equal(adj, adj.T):
        raise ValueError("metropolis_hastings needs an undirected (symmetric) adjacency; use push_sum_weights instead")
    degree = adj.sum(axis=1) - 1
    weights = np.where(adj, 1.0 / (1.0 + np.maximum.outer(degree, degree)), 0.0)
    np.fill_diagonal(weights, 0.0)
    np.fill_diagonal(weights, 1.0 - weights.sum(axis=1))
    return weights


def uniform(adj: np.ndarray) -> np.ndarray:
    """Row-stochastic: each node averages itself and its in-neighbours equally, ``W_ij = 1 / |N_in(i)|``.

    On the complete graph this is ``J / K``, FedAvg's unweighted server average. On irregular graphs it is not column
    stochastic, so it does not preserve the average.
    """
    adj = _adjacency(adj)
    return adj.T / adj.sum(axis=0)[:, None]


def push_sum_weights(adj: np.ndarray) -> np.ndarray:
    """Column-stochastic SGP weights: node ``i`` splits its mass evenly over its out-neighbours and itself.

    ``P[j, i] = 1 / |N_out(i)|`` for ``i -> j`` (self included), as in Stochastic Gradient Push (Assran et al. 2019)
    and pdbo-hgp's ``GossipNormalize``. Only the sender's out-degree is needed, so it works on directed graphs; the sum
    of ``x`` is preserved but not its average, which push-sum's weight ratio repairs.
    """
    adj = _adjacency(adj)
    return adj.T / adj.sum(axis=1)[None, :]


def spectral_gap(weights: np.ndarray) -> float:
    """``1 - |lambda_2|``, where ``|lambda_2|`` is the second-largest eigenvalue modulus of ``weights``.

    For a symmetric doubly stochastic ``W``, ``||W^t x - mean(x)|| <= (1 - gap)^t ||x - mean(x)||``, and the bound is
    the asymptotic rate; a gap of 0 means no consensus (disconnected graph, or a periodic one).
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[0] != weights.shape[1]:
        raise ValueError(f"spectral_gap: weights must be a square matrix, got shape {weights.shape}")
    if weights.shape[0] == 1:
        return 1.0
    if np.array_equal(weights, weights.T):
        moduli = np.abs(np.linalg.eigvalsh(weights))
    else:
        moduli = np.abs(np.linalg.eigvals(weights))
    return float(1.0 - np.sort(moduli)[-2])


def push_sum_step(x: np.ndarray, w: np.ndarray, adj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One push-sum step on a sampled graph: numerators ``x`` [K, ...] and weights ``w`` [K] both mixed by ``P_t``."""
    mixing = push_sum_weights(adj)
    return np.tensordot(mixing, x, axes=1), mixing @ w


def push_sum_average(values: np.ndarray, graph: Graph, steps: int, rng: np.random.Generator) -> np.ndarray:
    """Each node's push-sum estimate ``x_i / w_i`` of the node average of ``values`` after ``steps`` sampled graphs.

    Starts from ``x = values``, ``w = 1`` (Kempe et al. 2003; SGP). Each step samples ``graph`` with ``rng``. The
    estimates converge to the exact average on directed, time-varying graphs whose union over time is strongly
    connected, where the numerators alone stay biased.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 0 or values.shape[0] != graph.num_nodes:
        raise ValueError(f"push_sum_average: values must have {graph.num_nodes} rows, got {values.shape}")
    x, w = values.copy(), np.ones(graph.num_nodes)
    for _ in range(steps):
        x, w = push_sum_step(x, w, graph.sample(rng))
    return x / w.reshape((-1,) + (1,) * (x.ndim - 1))


def expected_push_sum_weights(graph: Graph) -> np.ndarray:
    """``E[P_t]``: the exact expectation of :func:`push_sum_weights` over the graph's random edges.

    Column ``i`` of ``P_t`` depends only on node ``i``'s out-edges ``a_ij``, which are independent (on an undirected
    graph too: they are distinct pairs), with ``D_i = sum_{k != i} a_ik`` Poisson-binomial. So
    ``E[P_ii] = E[1 / (1 + D_i)]`` and ``E[P_ji] = r_ij E[1 / (2 + D_i^{-j})]``, where ``D_i^{-j}`` leaves ``j`` out.
    Computed by the Poisson-binomial recursion in O(n^3), so it needs no 2^n enumeration of edge events (pdbo-hgp's
    ``USE_TRUE_EXPECTED_EDGES``) and is exact on graphs of any size. Static graphs give ``push_sum_weights``.
    """
    rates = graph.rates
    n = graph.num_nodes
    expected = np.zeros((n, n))
    for i in range(n):
        q = np.broadcast_to(rates[i], (n, n)).copy()  # row j: node i's out-edge rates with edge i -> j left out
        q[:, i] = 0.0
        q[np.arange(n), np.arange(n)] = 0.0           # row i keeps every edge (its self-loop is not in D_i)
        pmf = np.zeros((n, n + 1))
        pmf[:, 0] = 1.0
        for k in range(n):
            pk = q[:, k:k + 1]
            pmf = pmf * (1 - pk) + np.pad(pmf[:, :-1], ((0, 0), (1, 0))) * pk
        counts = np.arange(n + 1)
        expected[:, i] = rates[i] * (pmf / (2.0 + counts)).sum(1)
        expected[i, i] = (pmf[i] / (1.0 + counts)).sum()
    return expected
