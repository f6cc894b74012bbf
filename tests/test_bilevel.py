"""Decentralized bilevel personalization: exact expected push-sum weights, SGP reaching the minimiser of the average
loss on a stochastic directed graph, and HGP converging (geometrically) to the true hypergradient, which is computed
centrally by implicit differentiation and checked against finite differences."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

import pcl.algorithms.sgp  # noqa: F401  (registration)
from pcl.algorithms import ALGORITHMS, Context, make_hparams
from pcl.bilevel import error_vs_depth, expected_sgp, hgp, implicit_hypergradient, outer_objective, toy_logistic
from pcl.bilevel.hgp import _flat, check_reverse_links, sampled_mixing
from pcl.data.types import ClientData
from pcl.engine import LocalTrainer
from pcl.topology import Graph, Topology, complete, expected_push_sum_weights, push_sum_weights, ring


# ------------------------------------------------------------------------------------- expected push-sum weights


@pytest.mark.parametrize("directed", [True, False])
def test_expected_push_sum_weights_equal_the_enumeration_of_edge_events(directed):
    graph = Graph.stochastic(complete(3), np.random.default_rng(1), directed=directed)
    pairs = [(i, j) for i in range(3) for j in range(i + 1 if not directed else 0, 3) if i != j]
    expected = np.zeros((3, 3))
    for bits in itertools.product([0, 1], repeat=len(pairs)):
        adj, prob = np.eye(3, dtype=bool), 1.0
        for (i, j), b in zip(pairs, bits):
            adj[i, j] = b
            if not directed:
                adj[j, i] = b
            prob *= graph.rates[i, j] if b else 1 - graph.rates[i, j]
        expected += prob * push_sum_weights(adj)
    np.testing.assert_allclose(expected_push_sum_weights(graph), expected, atol=1e-14)


def test_expected_push_sum_weights_of_a_static_graph_are_its_weights():
    adj = ring(5, directed=True)
    np.testing.assert_array_equal(expected_push_sum_weights(Graph.static(adj)), push_sum_weights(adj))


# ------------------------------------------------------------------------------------------------------------ SGP


class _Fed:
    """The two things a Context reads of a federation, for a least-squares problem."""

    def __init__(self, x, y):
        self.data = ClientData(x=x, y=y, n=torch.full((x.shape[0],), x.shape[1]))
        self.num_clients = x.shape[0]

    def client_data(self, split, device="cpu"):
        return self.data


def test_sgp_on_a_stochastic_directed_graph_reaches_the_minimiser_of_the_average_loss():
    g = torch.Generator().manual_seed(0)
    k, n, d = 5, 12, 3
    x = torch.randn(k, n, d, generator=g)
    slopes = torch.randn(d, generator=g) + 0.5 * torch.randn(k, 1, d, generator=g)  # a different task per node
    y = (x * slopes).sum(-1) + torch.randn(k, 1, generator=g) + 0.3 * torch.randn(k, n, generator=g)
    # closed form of argmin (1/k) Σ_i mean_b (θ·x_ib + c - y_ib)^2: the normal equations of the node-mean losses
    X = torch.cat([x, torch.ones(k, n, 1)], -1).double()
    gram, rhs = (X.transpose(1, 2) @ X / n).sum(0), (X.transpose(1, 2) @ y.double()[..., None] / n).sum(0)
    theta = torch.linalg.solve(gram, rhs).squeeze(-1)

    model = nn.Linear(d, 1)
    topology = Topology(Graph.stochastic(complete(k), np.random.default_rng(0), directed=True), "push_sum")
    ctx = Context(model, _Fed(x, y), LocalTrainer(model), seed=0, topology=topology)
    cls = ALGORITHMS["sgp"]
    alg = cls(make_hparams(cls.Hparams, {"lr": 0.05, "batch_size": n, "weight_decay": 0.0, "steps_per_round": 300,
                                         "lr_milestones": [200, 250]}), ctx)
    state = alg.round(alg.init(), 0)[0]
    z = alg.personalized(state)
    got = torch.cat([z["weight"].reshape(k, d), z["bias"].reshape(k, 1)], 1).double()
    # consensus (to the O(lr) disagreement left by the decayed step) on the minimiser of the average loss, which
    # every node's own least-squares solution misses by far
    local = torch.linalg.solve(X.transpose(1, 2) @ X, X.transpose(1, 2) @ y.double()[..., None]).squeeze(-1)
    assert (got - got.mean(0)).abs().max() < 5e-3
    assert (got - theta).abs().max() < 0.03 < 0.3 < (local - theta).abs().max()
    assert not torch.allclose(state["w"], torch.ones(k, dtype=torch.float64))  # directed: the weights matter
    freq = state["edge_sum"] / state["steps"]
    assert (freq - topology.expected()).abs().max() < 0.12                    # the recorded edge frequencies


def test_sgp_on_the_local_graph_is_local_sgd():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(3, 8, 2, generator=g), torch.randn(3, 8, generator=g)
    model = nn.Linear(2, 1)
    ctx = Context(model, _Fed(x, y), LocalTrainer(model), seed=0, topology=Topology.from_spec(
        {"graph": {"name": "local"}}, 3, seed=0))
    cls = ALGORITHMS["sgp"]
    hp = make_hparams(cls.Hparams, {"batch_size": 8, "steps_per_round": 5})
    alg = cls(hp, ctx)
    state = alg.init()
    start = alg.personalized(state)
    state = alg.round(state, 0)[0]
    assert torch.equal(state["w"], torch.ones(3, dtype=torch.float64))
    # the same five full-batch SGD steps, run by the engine without any communication
    local = ctx.local_train(start, torch.arange(3), hp, local_steps=5, purpose="unused")
    for n in local:
        torch.testing.assert_close(alg.personalized(state)[n], local[n], rtol=0, atol=1e-6)


def test_sgp_rejects_more_than_one_local_step():
    with pytest.raises(ValueError, match="local_steps=1"):
        make_hparams(ALGORITHMS["sgp"].Hparams, {"local_steps": 3})


# ------------------------------------------------------------------------------------------------------------ HGP


@pytest.fixture(scope="module")
def toy_fixed_point():
    """A 4-node toy converged on the expected SGP map; (x, w) is the fixed point x* = T(x*, w*; λ)."""
    toy = toy_logistic(num_nodes=4, seed=3)
    pbar = toy.topology.expected_push_sum()
    x, w = expected_sgp(toy.inner_loss, toy.x0, torch.ones(4, dtype=torch.float64), toy.lam, toy.train, pbar,
                        lr=2.0, steps=400)
    truth = implicit_hypergradient(toy.inner_loss, toy.outer_loss, x, w, toy.lam, toy.train, toy.outer_data, pbar, 2.0)
    return toy, pbar, x, w, truth


def test_the_fixed_point_is_converged_and_implicit_differentiation_matches_finite_differences(toy_fixed_point):
    toy, pbar, x, w, truth = toy_fixed_point
    x1, _ = expected_sgp(toy.inner_loss, x, w, toy.lam, toy.train, pbar, lr=2.0, steps=1)
    assert max((x1[n] - x[n]).abs().max() for n in x) < 1e-12
    direction = {"classes": torch.randn(toy.lam["classes"].shape, generator=torch.Generator().manual_seed(0),
                                        dtype=torch.float64)}
    eps = 1e-4

    def F(sign):
        lam = {"classes": toy.lam["classes"] + sign * eps * direction["classes"]}
        xs, ws = expected_sgp(toy.inner_loss, x, w, lam, toy.train, pbar, lr=2.0, steps=300)  # warm-started
        return outer_objective(toy.outer_loss, xs, ws, lam, toy.outer_data)
    fd = (F(1) - F(-1)) / (2 * eps)
    assert abs(float(fd - (_flat(truth) * _flat(direction)).sum())) < 1e-6 * max(1.0, abs(float(fd)))


def _hgp_errors(toy, pbar, x, w, truth, depth, mixing, alpha=1.0, beta=0.0):
    errors = []
    hgp(toy.inner_loss, toy.outer_loss, x, w, toy.lam, outer_data=toy.outer_data, batches=lambda m: toy.train,
        mixing=mixing, depth=depth, lr=2.0, alpha=alpha, beta=beta,
        callback=lambda m, v: errors.append(float((_flat(v) - _flat(truth)).norm() / _flat(truth).norm())))
    return np.array(errors)


def test_hgp_with_exact_expected_edges_converges_geometrically_to_the_true_hypergradient(toy_fixed_point):
    toy, pbar, x, w, truth = toy_fixed_point
    err = _hgp_errors(toy, pbar, x, w, truth, 60, lambda m: pbar)
    assert err[-1] < 1e-3 * err[0]
    rates = err[30:61:10] / err[20:51:10]           # the error shrinks by the same factor every 10 steps
    assert rates.max() < 0.5 and rates.max() / rates.min() < 2
    vr = _hgp_errors(toy, pbar, x, w, truth, 60, lambda m: pbar, alpha=0.9, beta=0.1)
    assert vr[-1] < 1e-3 * vr[0]                    # the variance-reduced mix has the same limit


def test_hgp_over_sampled_stochastic_edges_converges_to_the_true_hypergradient(toy_fixed_point):
    toy, pbar, x, w, truth = toy_fixed_point
    gen = torch.Generator().manual_seed(0)
    err = _hgp_errors(toy, pbar, x, w, truth, 150, lambda m: sampled_mixing(toy.topology, gen, pbar,
                                                                              toy.topology.expected()),
                      alpha=0.9, beta=0.1)
    assert err[-1] < 0.1 and err[-1] < 0.2 * err[0]


def test_error_vs_depth_curves_for_the_appendix_settings():
    """With the exact expected operator every (α, β) mix sums the same Neumann partial sums (both branches of the
    w-update give Σ_{k<=m} (A^T)^k c when u is deterministic), so the curves coincide; they all fall to 0."""
    settings = ((1.0, 0.0), (0.9, 0.1), (0.5, 0.5))
    curves = error_vs_depth(settings=settings, depth=30, sgp_steps=200, edges="expected")
    assert set(curves) == set(settings)
    for err in curves.values():
        assert err.shape == (31,) and err[-1] < 0.01 * err[0]
        np.testing.assert_allclose(err, curves[(1.0, 0.0)], rtol=1e-8, atol=1e-12)


def test_hgp_needs_the_reverse_of_every_sgp_edge():
    topology = Topology(Graph.static(ring(4, directed=True)), "push_sum")
    with pytest.raises(ValueError, match="reverse"):
        check_reverse_links(topology.expected_push_sum(), topology.expected())


# ----------------------------------------------------------------------------------------------------------- PDBO


class _ClassFed(_Fed):
    num_classes = 3


def _pdbo_problem(hyper="da", **hp):
    import pcl.algorithms.pdbo  # noqa: F401  (registration)

    g = torch.Generator().manual_seed(2)
    k, n, d = 4, 10, 3
    y = torch.randint(3, (k, n), generator=g)
    x = torch.randn(3, d, generator=g)[y] + 0.5 * torch.randn(k, 1, d, generator=g) + torch.randn(k, n, d, generator=g)
    model = nn.Linear(d, 3).double()
    topology = Topology(Graph.stochastic(complete(k), np.random.default_rng(0), directed=True), "push_sum")
    ctx = Context(model, _ClassFed(x.double(), y), LocalTrainer(model), seed=0, topology=topology)
    cls = ALGORITHMS["pdbo"]
    return cls(make_hparams(cls.Hparams, {"hyper": hyper, "batch_size": n, **hp}), ctx)


def test_pdbo_first_hyper_step_trains_exactly_sgp():
    """λ = 0 gives uniform class weights: the first hyper-step's model is the SGP baseline's (same draws)."""
    pdbo = _pdbo_problem(sgp_steps=20, depth=2, lr_milestones=[10])
    sgp = ALGORITHMS["sgp"](make_hparams(ALGORITHMS["sgp"].Hparams, {"batch_size": 10, "steps_per_round": 20,
                                                                      "lr_milestones": [10]}), pdbo.ctx)
    pdbo.ctx.rngs.begin("train", 0)
    ours = pdbo.personalized(pdbo.round(pdbo.init(), 0)[0])
    pdbo.ctx.rngs.begin("train", 0)
    theirs = sgp.personalized(sgp.round(sgp.init(), 0)[0])
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=1e-12)


def test_pdbo_hypergradient_is_the_implicit_hypergradient_of_its_own_losses():
    """Full batch, exact expected edges, no step decay: the HGP of PDBO-DA's own inner/outer losses, at the point SGP
    reached, equals implicit differentiation of the same losses."""
    alg = _pdbo_problem("da", sgp_steps=50, depth=300, lr=0.1, lr_milestones=[], hgp_edges="expected", weight_decay=0.05,
                        edge_estimates="exact", alpha=0.9, beta=0.1)
    state = alg.init()
    lam = {n: torch.randn(v.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
           for n, v in state["lam"].items()}
    trained = alg.sgp(alg.fresh(alg.ctx.broadcast(state["init"])), 50, objective=alg.objective,
                      extras=alg.extras(lam))
    got = alg.hypergradient(trained, lam)
    data = alg.ctx.train
    truth = implicit_hypergradient(alg.inner_loss, alg.outer_loss, trained["x"], trained["w"], lam,
                                   (data.x, data.y), (data.x, data.y, data.mask().double()),
                                   alg.topology.expected_push_sum(), lr=0.1)
    assert float((_flat(got) - _flat(truth)).norm()) < 1e-3 * float(_flat(truth).norm())


def test_pdbo_mtl_depth_zero_is_the_direct_gradient_of_the_mixture_outer_loss():
    """MTL's λ enters the outer loss itself (the test-time mixture): at depth 0 HGP returns exactly ∂F/∂λ."""
    alg = _pdbo_problem("mtl", depth=0, num_learners=2, gamma_learners=0.1)
    state = alg.init()
    lam = {"learners": torch.randn(4, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)}
    got = alg.hypergradient(state, lam)["learners"]
    leaf = lam["learners"].clone().requires_grad_()
    data, z = alg.ctx.train, alg.personalized(state)
    mixed = sum(torch.softmax(leaf, -1)[:, m, None, None] * torch.softmax(
        torch.einsum("knd,kcd->knc", data.x, z["weight"][:, m]) + z["bias"][:, m, None], -1) for m in range(2))
    nll = -mixed.gather(-1, data.y[..., None]).squeeze(-1).log().mean(1)
    F_ = (nll + 0.05 * (leaf ** 2).sum(1)).mean()
    torch.testing.assert_close(got, torch.autograd.grad(F_, leaf)[0], rtol=1e-10, atol=1e-12)
