"""Hyper-Gradient Push (HGP): a decentralized estimate of dF/dλ_i through the fixed point of Stochastic Gradient Push.

Terashita & Hara, "Personalized Decentralized Bilevel Optimization over Stochastic and Directed Networks" (arXiv
2210.02129 v1, 2022), official code hitachi-rd-cv/pdbo-hgp tag v1 (``module_torch/hgp.py``,
``lib_task/hyper_gradient_push.py``). The expected SGP map sends, from node i to j,
    msg_{i->j} = (P̄_ji / R_ji) x_i + [j = i] damping · s_i(x_i / w_i; λ_i),   s_i = -lr ∇g_i,
weight (P̄_ji / R_ji) w_i, where P̄ = E[P_t] and R_ji = Pr[j -> i] (empirical from SGP, or exact). Its fixed point
x* = T(x*, w*; λ) has dF/dλ = ∂F/∂λ + B^T (I - A^T)^{-1} ∂F/∂x with A = ∂T/∂x, B = ∂T/∂λ; HGP sums the Neumann
series by passing u against the SGP edges: node j sends u_j over the CURRENT edge j -> i, and node i adds the VJP
of its message to j; dividing by R_ji makes the random reverse link unbiased.

Vectorization: a message is linear in x_i except the self-message's gradient term, so Σ_j (∂msg_{i->j}/∂x_i)^T u_j
= Σ_j M_ji u_j + damping (∂s_i/∂x_i)^T u_i with M = adj_t ⊙ P̄ / R (``P̄`` itself in the exact-expected-edge mode).
So a depth step is one mixing product plus ONE vmapped VJP per node, which equals pdbo-hgp's one VJP per (node,
out-neighbour) pair exactly. Weight messages depend on neither x nor λ, so the w-block of the adjoint (pdbo-hgp's
``u_w``) never reaches v and is not computed.

Variance reduction (α, β) as pdbo-hgp: v <- α(v + B^T u) + (1-α) B^T w;  u <- A^T u;
w <- β(A^T w + c) + (1-β)(w + u), with w = c = ∂F/∂x at the start. Deviation, on purpose: pdbo-hgp puts the direct
term ∂F/∂λ into v's initial value, so for α < 1 it decays as α^M and the estimate converges to B^T(I-A^T)^{-1}c
without it; we add ∂F/∂λ outside the recursion, so every (α, β) converges to the true hypergradient. The two agree
for α = 1 and whenever ∂F/∂λ = 0 (PDBO-DA without a λ regularizer).

Also here: the central references for tests and reports (the expected SGP fixed point, implicit differentiation
with dense Jacobians, finite differences), and the error-vs-depth curve of the paper's appendix (reconstructed
toy: 3-node logistic regression with per-node class weights, full batch, lr 2.0, 500 SGP steps, depth 500, exact
expected edges, on a stochastic directed graph).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import grad, jacrev, vjp, vmap
from torch.nn import functional as F

from pcl.engine.stack import Params, mix
from pcl.topology import Graph, Topology, complete

Tree = dict[str, torch.Tensor]
# one node's pure functions: inner_loss(z, lam, batch) -> g_i; outer_loss(z, lam, data) -> f_i + regularizer
InnerLoss = Callable[[Tree, Tree, object], torch.Tensor]
OuterLoss = Callable[[Tree, Tree, object], torch.Tensor]

APPENDIX_SETTINGS = ((1.0, 0.0), (0.0, 1.0), (0.5, 0.5), (0.9, 0.1), (0.1, 0.9))  # (α, β) compared in the appendix
STOCHASTIC_DEFAULT, STATIC_DEFAULT = (0.9, 0.1), (1.0, 0.0)  # pdbo-hgp: stochastic graphs, FedEM-setting runs


def default_alpha_beta(graph: Graph) -> tuple[float, float]:
    """The paper's (α, β): (0.9, 0.1) on stochastic graphs, plain Neumann (1, 0) on static ones."""
    return STATIC_DEFAULT if graph.is_static else STOCHASTIC_DEFAULT


def _scale(tree: Tree, w: torch.Tensor) -> Tree:
    return {n: v / w.to(v) for n, v in tree.items()}


def _add(a: Tree, b: Tree, ca: float = 1.0, cb: float = 1.0) -> Tree:
    return {n: ca * a[n] + cb * b[n] for n in a}


def _step_fn(inner_loss: InnerLoss, lr: float, damping: float):
    """One node's SGP gradient term s_i(x_i, λ_i) = -lr · damping · ∇_z g_i at z = x_i / w_i."""
    gradient = grad(inner_loss)

    def s(x_i: Tree, w_i: torch.Tensor, lam_i: Tree, batch) -> Tree:
        return {n: -(lr * damping) * g for n, g in gradient(_scale(x_i, w_i), lam_i, batch).items()}
    return s


def sampled_mixing(topology: Topology, generator: torch.Generator, pbar: torch.Tensor,
                   rates: torch.Tensor) -> torch.Tensor:
    """M = adj_t ⊙ P̄ / R on one sampled graph (M[j, i] uses edge j -> i, the reverse of the SGP edge i -> j)."""
    adj = topology.sample(generator).to(torch.float64)
    safe = torch.where(rates > 0, rates, torch.ones_like(rates))
    return torch.where(rates > 0, adj * pbar / safe, torch.zeros_like(pbar))


def check_reverse_links(pbar: torch.Tensor, rates: torch.Tensor) -> None:
    """HGP sends u_j back over j -> i for every SGP edge i -> j: each must be possible."""
    missing = (pbar > 0) & (rates <= 0)
    if bool(missing.any()):
        j, i = (int(v) for v in missing.nonzero()[0])
        raise ValueError(f"HGP needs the reverse of every SGP edge, but edge {i} -> {j} is used by SGP while "
                         f"{j} -> {i} never appears; use an undirected or a stochastic graph over a symmetric base")


def outer_gradients(outer_loss: OuterLoss, x: Params, w: torch.Tensor, lam: Tree, data) -> tuple[Params, Tree]:
    """∂F/∂x_i (through z_i = x_i / w_i) and ∂F/∂λ_i of F = (1/n) Σ_i outer_loss_i, as pdbo-hgp divides by n."""
    n = w.shape[0]
    du, dl = vmap(grad(lambda x_i, w_i, l_i, d: outer_loss(_scale(x_i, w_i), l_i, d), argnums=(0, 2)))(x, w, lam, data)
    return {k: v / n for k, v in du.items()}, {k: v / n for k, v in dl.items()}


def hgp(inner_loss: InnerLoss, outer_loss: OuterLoss, x: Params, w: torch.Tensor, lam: Tree, *, outer_data,
        batches: Callable[[int], object], mixing: Callable[[int], torch.Tensor], depth: int, lr: float,
        damping: float = 1.0, alpha: float = 1.0, beta: float = 0.0,
        callback: Callable[[int, Tree], None] | None = None) -> Tree:
    """Every node's estimate v_i of dF/dλ_i after ``depth`` HGP steps (module docstring).

    ``x``, ``lam``: stacked [K, ...]; ``w``: [K] push-sum weights; ``batches(m)``: the stacked inner batch of depth
    step m; ``mixing(m)``: the [K, K] M of step m (``sampled_mixing``, or P̄ for exact expected edges);
    ``callback(m, v)`` sees the estimate after m steps (m = 0 .. depth), e.g. for error-vs-depth curves."""
    if not (0 <= alpha <= 1 and 0 <= beta <= 1):
        raise ValueError(f"HGP needs alpha, beta in [0, 1], got alpha={alpha!r}, beta={beta!r}")
    if depth < 0:
        raise ValueError(f"HGP depth must be >= 0, got {depth}")
    dtype = next(iter(x.values())).dtype
    w = w.to(dtype)
    s = _step_fn(inner_loss, lr, damping)
    vr = alpha < 1

    def pullbacks(x_i, w_i, lam_i, batch, cots):
        _, back = vjp(lambda a, b: s(a, w_i, b, batch), x_i, lam_i)
        return tuple(back(c) for c in cots)
    vpull = vmap(pullbacks)

    u, direct = outer_gradients(outer_loss, x, w, lam, outer_data)
    c = acc = u
    v = {n: torch.zeros_like(t) for n, t in lam.items()}
    if callback:
        callback(0, _add(direct, v))
    for m in range(depth):
        M = mixing(m).T  # row i of M^T @ u: Σ_j M[j, i] u_j
        out = vpull(x, w, lam, batches(m), (u, acc) if vr else (u,))
        (ux, bu), (wx, bw) = out[0], out[-1]
        if vr:
            v = _add(_add(v, bu), bw, alpha, 1 - alpha)
        else:
            v = _add(v, bu)
        u_new = _add(mix(M, u), ux)
        if vr:
            acc = _add(_add(_add(mix(M, acc), wx), c), _add(acc, u_new), beta, 1 - beta)
        u = u_new
        if callback:
            callback(m + 1, _add(direct, v))
    return _add(direct, v)


# ------------------------------------------------------------------------------- central references (tests, reports)


def expected_sgp(inner_loss: InnerLoss, x: Params, w: torch.Tensor, lam: Tree, batch, pbar: torch.Tensor,
                 lr: float, steps: int, damping: float = 1.0) -> tuple[Params, torch.Tensor]:
    """``steps`` of the expected full-batch SGP map x <- P̄ x + s(x / w), w <- P̄ w (its fixed point is HGP's x*)."""
    dtype = next(iter(x.values())).dtype
    s = vmap(_step_fn(inner_loss, lr, damping), in_dims=(0, 0, 0, 0))
    w = w.to(dtype)
    for _ in range(steps):
        x, w = _add(mix(pbar, x), s(x, w, lam, batch)), pbar.to(dtype) @ w
    return x, w


def _flat(tree: Tree) -> torch.Tensor:
    return torch.cat([tree[n].reshape(-1) for n in sorted(tree)])


def _unflat(vec: torch.Tensor, like: Tree) -> Tree:
    out, at = {}, 0
    for n in sorted(like):
        out[n] = vec[at:at + like[n].numel()].reshape(like[n].shape)
        at += like[n].numel()
    return out


def implicit_hypergradient(inner_loss: InnerLoss, outer_loss: OuterLoss, x: Params, w: torch.Tensor, lam: Tree,
                           batch, outer_data, pbar: torch.Tensor, lr: float, damping: float = 1.0) -> Tree:
    """The true dF/dλ at (x, w), computed centrally: dense A, B of the expected map and a linear solve."""
    dtype = next(iter(x.values())).dtype
    w = w.to(dtype)
    s = vmap(_step_fn(inner_loss, lr, damping), in_dims=(0, 0, 0, 0))

    def T(xf, lf):
        xx = _unflat(xf, x)
        return _flat(_add(mix(pbar, xx), s(xx, w, _unflat(lf, lam), batch)))
    A, B = jacrev(T, argnums=(0, 1))(_flat(x), _flat(lam))
    u, direct = outer_gradients(outer_loss, x, w, lam, outer_data)
    y = torch.linalg.solve(torch.eye(A.shape[0], dtype=dtype) - A.T, _flat(u))
    return _unflat(_flat(direct) + B.T @ y, lam)


def outer_objective(outer_loss: OuterLoss, x: Params, w: torch.Tensor, lam: Tree, outer_data) -> torch.Tensor:
    """F = (1/n) Σ_i outer_loss_i(x_i / w_i, λ_i)."""
    return vmap(lambda x_i, w_i, l_i, d: outer_loss(_scale(x_i, w_i), l_i, d))(x, w.to(next(iter(x.values()))),
                                                                               lam, outer_data).mean()


# ------------------------------------------------------------------ the appendix's toy problem and error-vs-depth


@dataclass
class Toy:
    """A per-node logistic regression with per-class loss weights C·softmax(λ_i) (PDBO-DA in miniature), float64."""

    inner_loss: InnerLoss
    outer_loss: OuterLoss
    x0: Params
    lam: Tree
    train: tuple[torch.Tensor, torch.Tensor]
    outer_data: tuple[torch.Tensor, torch.Tensor]
    topology: Topology


def toy_logistic(num_nodes: int = 3, dim: int = 4, classes: int = 2, samples: int = 30, weight_decay: float = 0.05,
                 gamma: float = 1e-2, seed: int = 0, directed: bool = True) -> Toy:
    """Node-skewed Gaussian classes, a random nonzero λ (so γ's direct term ∂F/∂λ is nonzero) and a stochastic
    graph with rates U(0.4, 0.8) over the complete graph. Outer loss: unweighted CE on the node's validation half."""
    g = torch.Generator().manual_seed(seed)
    means = 1.5 * torch.randn(classes, dim, generator=g, dtype=torch.float64)

    def draw():
        y = torch.randint(classes, (num_nodes, samples), generator=g)
        shift = 0.5 * torch.randn(num_nodes, 1, dim, generator=g, dtype=torch.float64)  # node-specific features
        return means[y] + shift + torch.randn(num_nodes, samples, dim, generator=g, dtype=torch.float64), y
    train, val = draw(), draw()

    def logits(z, X):
        return X @ z["weight"].T + z["bias"]

    def inner_loss(z, lam, batch):
        X, y = batch
        cw = classes * torch.softmax(lam["classes"], -1)
        ce = F.cross_entropy(logits(z, X), y, reduction="none")
        return (cw[y] * ce).mean() + 0.5 * weight_decay * sum((p ** 2).sum() for p in z.values())

    def outer_loss(z, lam, data):
        X, y = data
        return F.cross_entropy(logits(z, X), y) + 0.5 * gamma * (lam["classes"] ** 2).sum()

    x0 = {"weight": 0.1 * torch.randn(num_nodes, classes, dim, generator=g, dtype=torch.float64),
          "bias": torch.zeros(num_nodes, classes, dtype=torch.float64)}
    lam = {"classes": torch.randn(num_nodes, classes, generator=g, dtype=torch.float64)}
    graph = Graph.stochastic(complete(num_nodes), np.random.default_rng(seed), directed=directed)
    return Toy(inner_loss, outer_loss, x0, lam, train, val, Topology(graph, "push_sum"))


def error_vs_depth(settings=APPENDIX_SETTINGS, depth: int = 500, sgp_steps: int = 500, lr: float = 2.0,
                   num_nodes: int = 3, edges: str = "sampled", seed: int = 0) -> dict[tuple[float, float], np.ndarray]:
    """Relative error ||v_m - dF/dλ|| / ||dF/dλ|| for m = 0..depth, per (α, β): the appendix's comparison (toy
    above, full batch, exact expected edges P̄ and R; ``edges='sampled'`` sends HGP messages over sampled edges,
    ``'expected'`` uses P̄ itself). Every setting sees the same edge samples. The truth is implicit differentiation
    at the same (x, w), computed centrally."""
    if edges not in ("sampled", "expected"):
        raise ValueError(f"edges must be 'sampled' or 'expected', got {edges!r}")
    toy = toy_logistic(num_nodes=num_nodes, seed=seed)
    pbar, rates = toy.topology.expected_push_sum(), toy.topology.expected()
    w0 = torch.ones(num_nodes, dtype=torch.float64)
    x, w = expected_sgp(toy.inner_loss, toy.x0, w0, toy.lam, toy.train, pbar, lr, sgp_steps)
    truth = _flat(implicit_hypergradient(toy.inner_loss, toy.outer_loss, x, w, toy.lam, toy.train, toy.outer_data,
                                         pbar, lr))
    curves = {}
    for alpha, beta in settings:
        gen = torch.Generator().manual_seed(seed)
        err = np.zeros(depth + 1)

        def record(m, v):
            err[m] = float((_flat(v) - truth).norm() / truth.norm())
        mixing = (lambda m: sampled_mixing(toy.topology, gen, pbar, rates)) if edges == "sampled" else (lambda m: pbar)
        hgp(toy.inner_loss, toy.outer_loss, x, w, toy.lam, outer_data=toy.outer_data, batches=lambda m: toy.train,
            mixing=mixing, depth=depth, lr=lr, alpha=alpha, beta=beta, callback=record)
        curves[(alpha, beta)] = err
    return curves
