"""Clustering and mixture baselines: IFCA and Clustered FL recover planted clusters (and do not invent them), IFCA with
k = 1 and FedEM with M = 1 are FedAvg, FedEM's E-step and mixture prediction equal the posterior and the mixture
computed by hand, its weights stay on the simplex, CFL's single-linkage cut is the optimal bi-partition."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

import pcl.algorithms.cfl
import pcl.algorithms.fedem
import pcl.algorithms.ifca  # noqa: F401  (registration)
from pcl.algorithms import ALGORITHMS, Context, make_hparams
from pcl.data.federation import Federation
from pcl.engine import LocalTrainer
from pcl.models import build_model

# full-batch local gradient descent (batch = a client's 60 samples), so that update directions are not SGD noise
GD = {"lr": 0.2, "batch_size": 60, "local_epochs": 5.0}
CFL_HP = {**GD, "eps1": 0.06, "eps2": 0.25, "warmup_rounds": 10}


def _federation(num_clusters: int) -> Federation:
    """8 clients of 60 samples; each planted cluster is its own random rotation of 4 shared class means in R^8."""
    return Federation.build({"source": {"name": "synthetic_mixture", "num_clients": 8, "samples_per_client": 60,
                                        "num_clusters": num_clusters, "num_classes": 4, "dim": 8, "separation": 4.0},
                             "partition": {"scheme": "natural", "seed": 0}})


@pytest.fixture(scope="module")
def planted():
    return _federation(2)


@pytest.fixture(scope="module")
def unclustered():
    return _federation(1)


def _alg(name, fed, seed=0, **hp):
    model = build_model({"name": "linear"}, fed.input_shape, fed.num_classes)
    cls = ALGORITHMS[name]
    return cls(make_hparams(cls.Hparams, hp), Context(model, fed, LocalTrainer(model), seed=seed))


def _run(alg, rounds):
    """``rounds`` rounds as the runner plays them; the final state and the last round's diagnostics."""
    state, diag = alg.init(), {}
    for t in range(rounds):
        alg.ctx.rngs.begin("train", t)
        state = alg.round(state, t)
        diag = alg.ctx.take_diagnostics()
    return state, diag


# ------------------------------------------------------------------------------------------------------------ IFCA
def _ifca_best_restart(fed, restarts=4, rounds=15):
    """IFCA from several random initialisations, keeping the run whose cluster models fit their clients best (the
    paper's random restarts): its cluster assignment."""
    runs = []
    for seed in range(restarts):
        alg = _alg("ifca", fed, seed=seed, num_clusters=2, **GD)
        state, diag = _run(alg, rounds)
        mask = torch.ones(fed.num_clients, 2, dtype=torch.bool)
        loss = alg.ctx.scores(state["models"], "train", mask)["loss"].min(1).values.mean().item()
        runs.append((loss, diag["cluster"].numpy()))
    return min(runs, key=lambda r: r[0])[1]


def test_ifca_recovers_planted_clusters(planted):
    assert adjusted_rand_score(planted.part.cluster, _ifca_best_restart(planted)) >= 0.9


def test_ifca_finds_no_clusters_where_none_are_planted(unclustered):
    """A method that split clients by index would pass the planted test; here the halves by index mean nothing."""
    halves = np.repeat([0, 1], 4)
    assert adjusted_rand_score(halves, _ifca_best_restart(unclustered)) < 0.9


def test_ifca_with_one_cluster_is_fedavg(planted):
    ifca, _ = _run(_alg("ifca", planted, num_clusters=1, client_fraction=0.5), 3)
    fedavg, _ = _run(_alg("fedavg", planted, client_fraction=0.5), 3)
    for name, v in fedavg["global"].items():
        torch.testing.assert_close(ifca["models"][name][0], v, rtol=0, atol=0)


def test_ifca_clients_predict_with_their_best_fitting_model(planted):
    alg = _alg("ifca", planted, num_clusters=2, **GD)
    state, _ = _run(alg, 2)
    personal = alg.personalized(state)
    own = alg.ctx.scores(personal, "train", torch.eye(planted.num_clients, dtype=torch.bool))["loss"].diagonal()
    every = alg.ctx.scores(state["models"], "train", torch.ones(planted.num_clients, 2, dtype=torch.bool))["loss"]
    torch.testing.assert_close(own, every.min(1).values)


# ------------------------------------------------------------------------------------------------- Clustered FL
def test_cfl_recovers_planted_clusters(planted):
    _, diag = _run(_alg("cfl", planted, **CFL_HP), 30)
    assert adjusted_rand_score(planted.part.cluster, diag["cluster"].numpy()) >= 0.9


def test_cfl_splits_exactly_when_the_criterion_holds(planted):
    """Every round, a cluster splits iff its mean update norm < eps1 and its max update norm > eps2 (no warm-up here,
    so early rounds, before FL converged, must not split)."""
    hp = {**CFL_HP, "warmup_rounds": 0}
    alg = _alg("cfl", planted, **hp)
    state, split_rounds = alg.init(), []
    for t in range(30):
        before = state["cluster"]
        alg.ctx.rngs.begin("train", t)
        state = alg.round(state, t)
        d = alg.ctx.take_diagnostics()
        for c in before.unique().tolist():
            members = (before == c).nonzero().flatten()
            i = members[0]
            due = len(members) >= 3 and d["mean_update_norm"][i] < hp["eps1"] and d["max_update_norm"][i] > hp["eps2"]
            split = len(d["cluster"][members].unique()) == 2
            assert split == bool(due), (t, c)
            split_rounds += [t] * split
        flat = torch.cat([v.flatten(1) for v in state["params"].values()], 1)
        same = d["cluster"][:, None] == d["cluster"][None, :]  # averaged within the new clusters at once
        assert torch.cdist(flat, flat)[same].max() < 1e-5 and (torch.cdist(flat, flat)[~same] > 1e-6).all()
    assert split_rounds and split_rounds[0] > 0


def test_cfl_does_not_split_a_congruent_federation(unclustered):
    _, diag = _run(_alg("cfl", unclustered, **CFL_HP), 30)
    assert diag["cluster"].unique().tolist() == [0]


def test_cfl_clients_of_a_cluster_share_its_model(planted):
    state, diag = _run(_alg("cfl", planted, **CFL_HP), 30)
    flat = torch.cat([v.flatten(1) for v in state["params"].values()], 1)
    same = diag["cluster"][:, None] == diag["cluster"][None, :]
    gap = torch.cdist(flat, flat)
    assert gap[same].max() < 1e-5 and gap[~same].min() > 1e-2


def _max_cross(sim, side):
    return sim[side == 0][:, side == 1].max()


def test_cfl_single_linkage_is_the_optimal_bipartition():
    """The paper's criterion, min over bi-partitions of the max cross-similarity, by brute force."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        u = torch.nn.functional.normalize(torch.randn(7, 4, generator=gen), dim=1)
        sim = u @ u.T
        side = pcl.algorithms.cfl.bipartition(sim, "single")
        best = min(_max_cross(sim, torch.tensor((0, *s))) for s in itertools.product((0, 1), repeat=6) if any(s))
        assert torch.isclose(_max_cross(sim, side), best)


def test_cfl_bipartition_separates_two_directions():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    u = torch.nn.functional.normalize(torch.stack([a, b + 0.1 * a, a + 0.2 * b, b, a - 0.1 * b]), dim=1)
    assert pcl.algorithms.cfl.bipartition(u @ u.T).tolist() == [0, 1, 0, 1, 0]


# ------------------------------------------------------------------------------------------------------------ FedEM
def test_fedem_with_one_learner_is_fedavg(planted):
    fedem, _ = _run(_alg("fedem", planted, num_learners=1, client_fraction=0.5), 3)
    fedavg, _ = _run(_alg("fedavg", planted, client_fraction=0.5), 3)
    for name, v in fedavg["global"].items():
        torch.testing.assert_close(fedem["learners"][name][0], v, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fedem["pi"], torch.ones_like(fedem["pi"]))


def _hand_learners(alg):
    """Two linear learners set by hand: W_1 = I-like scores of the first 4 features, W_2 = their negation."""
    w = torch.zeros(4, 8)
    w[:, :4] = torch.eye(4)
    return {"fc.weight": torch.stack([w, -0.5 * w]), "fc.bias": torch.stack([torch.zeros(4), torch.arange(4.0)])}


def _hand_likelihood(learners, x, y):
    """p_m(y | x) for every learner m and sample, in numpy: softmax of W_m x + b_m at the true class."""
    W, b = learners["fc.weight"].double().numpy(), learners["fc.bias"].double().numpy()
    logits = np.einsum("mcd,nd->mnc", W, x) + b[:, None, :]
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return p[:, np.arange(len(y)), y]  # [M, n]


def test_fedem_e_step_is_the_posterior(planted):
    alg = _alg("fedem", planted, num_learners=2)
    learners = _hand_learners(alg)
    pi = torch.tensor([[0.3, 0.7], [0.9, 0.1]], dtype=torch.float64)
    clients = torch.tensor([1, 6])
    q = alg.e_step(learners, pi, clients)
    d = alg.ctx.train
    for row, c in enumerate(clients.tolist()):
        n = int(d.n[c])
        p = _hand_likelihood(learners, d.x[c, :n].double().numpy(), d.y[c, :n].numpy())
        joint = pi[row].numpy()[:, None] * p
        np.testing.assert_allclose(q[row, :n].numpy(), (joint / joint.sum(0)).T, rtol=1e-5)
        assert (q[row, n:] == 0).all()


def test_fedem_predicts_with_the_mixture(planted):
    alg = _alg("fedem", planted, num_learners=2)
    state = {"learners": _hand_learners(alg), "pi": torch.rand(8, 2, dtype=torch.float64).softmax(1)}
    m = alg.evaluate(state, ("test",))["test"]
    d = alg.ctx.data("test")
    for c in (0, 5):
        n = int(d.n[c])
        x, y = d.x[c, :n].double().numpy(), d.y[c, :n].numpy()
        mixed = np.einsum("m,mn->n", state["pi"][c].numpy(), _hand_likelihood(state["learners"], x, y))
        np.testing.assert_allclose(m["loss"][c].item(), -np.log(mixed).mean(), rtol=1e-5)


def test_fedem_mixture_weights_are_mean_responsibilities_on_the_simplex(digits_fed):
    """After a round, pi_i is the mean over client i's own samples of the E-step at the round's start (clients of
    different sizes, so a wrong normaliser shows), and every pi_i stays on the simplex."""
    alg = _alg("fedem", digits_fed, num_learners=3)
    state = alg.init()
    everyone = torch.arange(digits_fed.num_clients)
    q = alg.e_step(state["learners"], state["pi"], everyone).numpy()
    n = alg.ctx.train.n.numpy()
    expected = np.stack([q[c, :n[c]].mean(0) for c in range(len(n))])
    assert len(set(n.tolist())) > 1
    for t in range(3):
        alg.ctx.rngs.begin("train", t)
        state = alg.round(state, t)
        if t == 0:
            np.testing.assert_allclose(state["pi"].numpy(), expected, rtol=1e-10)
        pi = state["pi"]
        assert (pi >= 0).all()
        torch.testing.assert_close(pi.sum(1), torch.ones(len(n), dtype=pi.dtype))
    assert (pi - torch.as_tensor(expected)).abs().max() > 1e-4  # the weights keep moving


def test_fedem_m_step_weights_each_sample_by_its_responsibility(planted):
    """The local loss is sum_m mean_b q_b(m) loss_m(b) with q from the round-start learners, held constant."""
    alg = _alg("fedem", planted, num_learners=2)
    start = _hand_learners(alg)
    trained = {n: v + 0.1 * torch.randn(v.shape, generator=torch.Generator().manual_seed(1)) for n, v in start.items()}
    pi = torch.tensor([0.3, 0.7])
    d = alg.ctx.train
    x, y = d.x[2, :16], d.y[2, :16]
    q = _hand_likelihood(start, x.double().numpy(), y.numpy()) * pi.double().numpy()[:, None]
    q = torch.as_tensor(q / q.sum(0), dtype=torch.float32)                          # [M, B], a constant
    objective = pcl.algorithms.fedem.ResponsibilityWeighted()
    extras = {"start": start, "pi": pi}
    got = torch.func.grad(lambda p: objective.value(alg.ctx.model, p, {}, x, y, extras))(trained)
    params = {n: v.clone().requires_grad_() for n, v in trained.items()}
    logits = torch.einsum("mcd,bd->mbc", params["fc.weight"], x) + params["fc.bias"][:, None, :]
    nll = -logits.log_softmax(-1).gather(-1, y.expand(2, -1)[..., None]).squeeze(-1)  # [M, B]
    (q * nll).sum(0).mean().backward()
    for n in params:
        torch.testing.assert_close(got[n], params[n].grad)
