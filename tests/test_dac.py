"""DAC and its gossip baselines (pcl.algorithms.dac, random_gossip, oracle_gossip, pens; shared peer_gossip).

Expected values are worked out by hand or from closed forms (exact inclusion probabilities of sampling without
replacement, FedAvg of two models), never taken from the code under test. Backend equality, same-seed bytes, resume and
evaluation frequency are checked by tests/test_contract.py."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.func import functional_call
from torch.nn import functional as F

import pcl.algorithms.dac  # noqa: F401  (registration)
import pcl.algorithms.oracle_gossip  # noqa: F401
import pcl.algorithms.pens  # noqa: F401
import pcl.algorithms.random_gossip  # noqa: F401
from pcl.algorithms import ALGORITHMS, Context, make_hparams
from pcl.algorithms.peer_gossip import counts, exclude_self, probabilities, sample_peers, two_hop
from pcl.data.federation import Federation
from pcl.engine import LocalTrainer
from pcl.models import build_model

FAST = {"local_epochs": 0.5, "batch_size": 32}


def _fed(scheme: str, k: int, **kw) -> Federation:
    return Federation.build({"source": {"name": "digits"},
                             "partition": {"scheme": scheme, "num_clients": k, "seed": 0, **kw}})


@pytest.fixture(scope="module")
def clustered():
    return _fed("clusters", 6, num_clusters=2, alpha=0.5)  # clients 0-2 in cluster 0, 3-5 in cluster 1


@pytest.fixture(scope="module")
def unclustered():
    return _fed("dirichlet", 2, alpha=0.5)


def _alg(name, fed, seed=0, **hp):
    model = build_model({"name": "mlp", "hidden": [8]}, fed.input_shape, fed.num_classes)
    ctx = Context(model, fed, LocalTrainer(model), seed=seed)
    cls = ALGORITHMS[name]
    return cls(make_hparams(cls.Hparams, hp), ctx)


def _rounds(alg, state, first, last):
    diags = []
    for t in range(first, last):
        alg.ctx.rngs.begin("train", t)
        state, d = alg.round(state, t)
        diags.append(d)
    return state, diags


def _no_training(alg):
    """Replace local training by the identity, so a round's averaging is visible in closed form."""
    alg.ctx.local_train = lambda params, clients, hp, **kw: params


def _loss(alg, params, j, i):
    """Mean cross-entropy of model j on client i's training data, computed directly (not through ctx.scores)."""
    d = alg.ctx.train
    x, y = d.x[i, :d.n[i]], d.y[i, :d.n[i]]
    return F.cross_entropy(functional_call(alg.ctx.model, {n: v[j] for n, v in params.items()}, (x,)), y).item()


# --- two-hop propagation, by hand ----------------------------------------------------------------------------------
def test_two_hop_rule_on_four_clients():
    # client 0 sampled peers 2 then 1 this round (draw order), with fresh similarities s_01 = 0.5, s_02 = 2.0;
    # it had never sampled 3. Peer 1 knows 3 (s_13 = 4), peer 2 knows 3 (s_23 = 1); peer 1 also knows 2 (s_12 = 7).
    own = torch.tensor([[0.0, 0.5, 2.0, 0.0]], dtype=torch.float64)
    priors = torch.tensor([[0.0, 0.0, 0.0, 0.0],
                           [3.0, 0.0, 7.0, 4.0],
                           [1.5, 0.0, 0.0, 1.0],
                           [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    peers, valid = torch.tensor([[2, 1]]), torch.tensor([[True, True]])
    seen = torch.tensor([[True, True, True, False]])
    # fixed: k* = argmax_k s_0k over the peers that know 3 = client 2 (2.0 > 0.5), so s_03 = s_23 = 1;
    # last (2022 code): the last drawn peer that knows 3 = client 1, so s_03 = s_13 = 4.
    # Seen entries (0 itself, 1, 2: s_12 = 7 must not leak into s_02) keep their values.
    fixed = two_hop(own, priors[peers], seen, peers, valid, "fixed")
    last = two_hop(own, priors[peers], seen, peers, valid, "last")
    assert fixed.tolist() == [[0.0, 0.5, 2.0, 1.0]]
    assert last.tolist() == [[0.0, 0.5, 2.0, 4.0]]
    # drawn in the other order, "last" now picks client 2; "fixed" does not depend on the order
    swapped = torch.tensor([[1, 2]])
    assert two_hop(own, priors[swapped], seen, swapped, valid, "last").tolist() == [[0.0, 0.5, 2.0, 1.0]]
    assert two_hop(own, priors[swapped], seen, swapped, valid, "fixed").tolist() == [[0.0, 0.5, 2.0, 1.0]]
    # 3 sampled in an earlier round: its own estimate stays; nobody knows 3: it stays 0 (weight exp(0) later)
    seen_all = torch.ones(1, 4, dtype=torch.bool)
    assert two_hop(own, priors[peers], seen_all, peers, valid, "fixed").tolist() == own.tolist()
    blind = priors.clone()
    blind[:, 3] = 0
    assert two_hop(own, blind[peers], seen, peers, valid, "fixed")[0, 3] == 0
    # a slot that is not a real draw (valid False) never propagates
    assert two_hop(own, priors[peers], seen, peers, torch.tensor([[False, True]]), "fixed")[0, 3] == 4.0
    # equal similarity to both peers: the later draw wins, as the official stable sort's last element
    tie = torch.tensor([[0.0, 2.0, 2.0, 0.0]], dtype=torch.float64)
    assert two_hop(tie, priors[peers], seen, peers, valid, "fixed")[0, 3] == 4.0
    with pytest.raises(ValueError, match="rule"):
        two_hop(own, priors[peers], seen, peers, valid, "first")


# --- the temperature schedule --------------------------------------------------------------------------------------
def test_tau_schedules(clustered):
    dac, var = _alg("dac", clustered, tau=30.0), _alg("dac_var", clustered, tau=30.0)
    assert [dac.tau(t) for t in (0, 5, 50)] == [30.0, 30.0, 30.0]
    # dac.md: tau_t = 2 tau / (1 + exp(-0.2 t)) - tau + 1; by hand: exp(-1) = 0.36788, exp(-4) = 0.018316
    assert var.tau(0) == 1.0
    assert var.tau(5) == pytest.approx(60 / 1.3678794 - 29, abs=1e-5)    # 14.8635, ~ (tau + 1) / 2
    assert var.tau(20) == pytest.approx(60 / 1.0183156 - 29, abs=1e-5)   # 29.9208, ~ tau
    assert var.tau(500) == pytest.approx(31.0)
    # round t samples from the distribution set at the end of round t - 1, i.e. with tau_{t-1}
    s = torch.rand(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    state = {"priors": s}
    off = ~torch.eye(6, dtype=torch.bool)
    assert torch.equal(var.logits(state, 6)[off], (var.tau(5) * s)[off])
    assert torch.equal(var.logits(state, 1)[off], s[off])
    assert torch.isinf(var.logits(state, 3).diagonal()).all()


# --- sampling ------------------------------------------------------------------------------------------------------
def test_sampling_never_picks_itself_nor_repeats():
    k, reps = 6, 2000
    base = torch.randn(k, k, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
    logits = exclude_self(base).repeat(reps, 1)               # row b is client b % k
    peers, valid = sample_peers(logits, 4, torch.Generator().manual_seed(2))
    owner = torch.arange(k).repeat(reps)
    assert valid.all() and (peers != owner[:, None]).all()
    assert (peers.sort(1).values.diff(1) > 0).all()           # four distinct peers in every draw
    assert sample_peers(exclude_self(torch.zeros(3, 3)), 5, torch.Generator())[0].shape == (3, 2)  # n > K - 1


def test_sampling_matches_sequential_draws_without_replacement():
    # 3 candidates with p = (0.6, 0.3, 0.1), n = 2: exact P(j in S) = p_j + sum_{k != j} p_k p_j / (1 - p_k)
    p = np.array([0.6, 0.3, 0.1])
    incl = [p[j] + sum(p[k] * p[j] / (1 - p[k]) for k in range(3) if k != j) for j in range(3)]
    reps = 40_000
    logits = torch.tensor(np.log(p)).repeat(reps, 1)
    peers, valid = sample_peers(logits, 2, torch.Generator().manual_seed(3))
    hits = torch.zeros(3).scatter_add_(0, peers.flatten(), torch.ones(peers.numel())) / reps
    first = torch.bincount(peers[:, 0], minlength=3) / reps   # the first draw follows p itself
    assert np.allclose(hits.numpy(), incl, atol=0.01) and np.allclose(first.numpy(), p, atol=0.01)


def test_stable_distribution_equals_naive_softmax_and_survives_overflow():
    tau = 30.0
    s = torch.tensor([[0.0, 1.2, 0.7, 2.0], [0.4, 0.0, 0.9, 0.1]], dtype=torch.float64)
    naive = np.exp(tau * s.numpy())
    for row, i in zip(naive, range(2)):
        row[i] = 0.0
    naive /= naive.sum(1, keepdims=True)
    got = probabilities(exclude_self(tau * s))
    assert np.allclose(got.numpy(), naive, rtol=1e-12, atol=0)
    # a peer with training loss 0.01 < tau / 709.78: the official exp(tau / L) overflows and the row becomes NaN
    big = torch.tensor([[0.0, 100.0, 1.0, 99.0]], dtype=torch.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        official = np.exp(tau * big.numpy()[0, 1:]) / np.exp(tau * big.numpy()[0, 1:]).sum()
    assert np.isnan(official).any()
    p = probabilities(exclude_self(tau * big))[0]
    assert torch.isfinite(p).all() and p[0] == 0 and p.sum().item() == pytest.approx(1.0)
    # exactly the finite-precision answer: p_3 / p_1 = exp(-30), p_2 underflows to 0
    assert p[1].item() == pytest.approx(1.0) and p[3].item() == pytest.approx(math.exp(-30.0), rel=1e-9)


def test_fewer_positive_probability_peers_than_n():
    logits = exclude_self(torch.tensor([[0.0, 3000.0, 0.0, 0.0, 0.0]], dtype=torch.float64))  # client 0's row
    p = probabilities(logits)[0]
    assert int((p > 0).sum()) == 1                      # in linear space only one peer has positive probability
    with pytest.raises(ValueError):                    # so the official np.random.choice cannot draw 3
        np.random.default_rng(0).choice(5, 3, replace=False, p=p.numpy())
    peers, valid = sample_peers(logits.repeat(200, 1), 3, torch.Generator().manual_seed(4))
    assert valid.all() and (peers[:, 0] == 1).all()     # the dominant peer first, then the renormalised rest
    assert (peers != 0).all() and (peers.sort(1).values.diff(1) > 0).all()
    # structurally excluded candidates (-inf): a row with only 2 candidates draws those 2 and marks the rest invalid
    only = torch.tensor([[-torch.inf, 0.0, -torch.inf, 5.0, -torch.inf]], dtype=torch.float64)
    peers, valid = sample_peers(only, 3, torch.Generator().manual_seed(5))
    assert valid.tolist() == [[True, True, False]] and set(peers[0, :2].tolist()) == {1, 3}
    nobody = torch.full((1, 4), -torch.inf, dtype=torch.float64)
    assert not sample_peers(nobody, 2, torch.Generator())[1].any() and (probabilities(nobody) == 0).all()


# --- update order --------------------------------------------------------------------------------------------------
def _two_clients(fed, order, same_start=False):
    alg = _alg("dac", fed, n_sampled=1, order=order)
    _no_training(alg)
    state = alg.init()
    if same_start:
        state = {**state, "params": {n: v[:1].expand_as(v).clone() for n, v in state["params"].items()}}
    return alg, state


def test_sequential_and_synchronous_differ_only_in_update_order(unclustered):
    n = unclustered.client_data("train").n.double()
    w0 = (n / n.sum())[0].item()
    sync, s0 = _two_clients(unclustered, "synchronous")
    start = s0["params"]
    s1, _ = _rounds(sync, s0, 0, 1)
    for name, v in start.items():  # both clients average the same two models: FedAvg m = w0 theta_0 + w1 theta_1
        m = w0 * v[0] + (1 - w0) * v[1]
        torch.testing.assert_close(s1["params"][name], torch.stack([m, m]))
    assert s1["priors"][0, 1].item() == pytest.approx(1 / _loss(sync, start, 1, 0), rel=1e-5)
    assert s1["priors"][1, 0].item() == pytest.approx(1 / _loss(sync, start, 0, 1), rel=1e-5)

    seq, q0 = _two_clients(unclustered, "sequential")
    q1, _ = _rounds(seq, q0, 0, 1)
    # the first client a of the permutation gets m; the second, b, then reads a's new model: w_a m + w_b theta_b
    m = {name: w0 * v[0] + (1 - w0) * v[1] for name, v in start.items()}
    key = next(iter(m))
    a = 0 if torch.allclose(q1["params"][key][0], m[key]) else 1
    b, wa = 1 - a, [w0, 1 - w0][a]
    for name, v in start.items():
        torch.testing.assert_close(q1["params"][name][a], m[name])
        torch.testing.assert_close(q1["params"][name][b], wa * m[name] + (1 - wa) * v[b])
    second = {name: torch.stack([m[name], m[name]]) for name in m}
    assert q1["priors"][a, b].item() == pytest.approx(1 / _loss(seq, start, b, a), rel=1e-5)
    assert q1["priors"][b, a].item() == pytest.approx(1 / _loss(seq, second, a, b), rel=1e-5)


def test_orders_agree_when_updates_cannot_be_seen(unclustered):
    # identical start models and no training: what a later client reads is what it would have read at the start
    (sync, s), (seq, q) = _two_clients(unclustered, "synchronous", True), _two_clients(unclustered, "sequential", True)
    s, ds = _rounds(sync, s, 0, 2)
    q, dq = _rounds(seq, q, 0, 2)
    for key in ("priors", "n_sampled", "best_val"):
        assert torch.equal(s[key], q[key]), key
    for name in s["params"]:
        assert torch.equal(s["params"][name], q["params"][name])
    assert all(torch.equal(a["probs"], b["probs"]) for a, b in zip(ds, dq) if "probs" in a)
    assert "probs" in ds[0] and "probs" in dq[0]


def test_sequential_waves_equal_the_one_by_one_loop(clustered):
    # hand example: 1 reads 2 (not yet updated in the run [0]), 2 reads 0 (updated earlier in [0, 1]): cut before 2
    peers, valid = torch.tensor([[1], [2], [0], [1]]), torch.ones(4, 1, dtype=torch.bool)
    assert ALGORITHMS["dac"].waves([0, 1, 2, 3], peers, valid) == [[0, 1], [2, 3]]
    # reversed: 3 reads 1, 2 reads 0 (both not in the run), 1 reads 2 (in it): cut; 0 reads 1 (in it): cut
    assert ALGORITHMS["dac"].waves([3, 2, 1, 0], peers, valid) == [[3, 2], [1], [0]]

    def run(one_by_one):
        alg = _alg("dac", clustered, n_sampled=2, order="sequential")
        _no_training(alg)
        if one_by_one:
            alg.waves = lambda order, peers, valid: [[i] for i in order]
        return _rounds(alg, alg.init(), 0, 3)[0]
    batched, single = run(False), run(True)
    for key in ("priors", "n_sampled", "best_val"):
        assert torch.equal(batched[key], single[key]), key
    for name in batched["params"]:
        torch.testing.assert_close(batched["params"][name], single["params"][name], rtol=0, atol=1e-6)


# --- baselines -----------------------------------------------------------------------------------------------------
def test_oracle_samples_only_in_cluster_and_needs_clusters(clustered, unclustered):
    alg = _alg("oracle_gossip", clustered, n_sampled=5, order="synchronous", matrix_every=1, **FAST)
    _, diags = _rounds(alg, alg.init(), 0, 2)
    c = torch.as_tensor(clustered.part.cluster)
    same = (c[:, None] == c[None, :]) & ~torch.eye(6, dtype=torch.bool)
    for r, d in enumerate(diags):  # clusters of 3: each client takes both of its 2 cluster mates (n = 5 > 2) only
        assert torch.equal(d["sampled"], (r + 1) * same.long())  # cumulative counts
        assert torch.equal(counts(torch.arange(6), d["peers"].clamp(min=0), d["peers"] >= 0, 6), same.long())
        assert (d["within_share"] == 1).all()
        assert torch.allclose(d["probs"], same.double() / 2)
    with pytest.raises(ValueError, match="planted"):
        _alg("oracle_gossip", unclustered)
    random = _alg("random_gossip", unclustered, n_sampled=1, **FAST)  # no clusters: the share is NaN
    _, (d,) = _rounds(random, random.init(), 0, 1)
    assert "probs" in d and "sampled" in d  # round 1 records the matrices too
    assert torch.isnan(d["within_share"]).all()


def test_pens_selection_phase_counts_and_neighbours(clustered):
    alg = _alg("pens", clustered, n_sampled=3, top_m=1, pens_rounds=1, order="synchronous", matrix_every=1)
    _no_training(alg)
    state = alg.init()
    start = state["params"]
    state, (d0, d1) = _rounds(alg, state, 0, 2)
    sel = state["n_selected"]
    assert (d0["sampled"].sum(1) == 3).all() and (sel.sum(1) == 1).all()
    for i in range(6):  # the selected peer is the sampled one whose model fits i's training data best
        sampled = d0["sampled"][i].nonzero().flatten().tolist()
        best = min(sampled, key=lambda j: _loss(alg, start, j, i))
        assert sel[i].nonzero().flatten().tolist() == [best]
    # phase 2: neighbours = selected more than (top_m / K) * pens_rounds = 1/6 times, i.e. the one selected peer
    assert torch.equal(d1["sampled"] - d0["sampled"], sel) and torch.equal(state["n_selected"], sel)
    assert torch.allclose(d1["probs"], sel.double())
    with pytest.raises(ValueError, match="top_m"):
        make_hparams(ALGORITHMS["pens"].Hparams, {"top_m": 6, "n_sampled": 5})


# --- best-by-validation and determinism ----------------------------------------------------------------------------
def test_best_by_validation_is_kept_and_reported(clustered):
    alg = _alg("dac", clustered, n_sampled=2, order="synchronous", lr=0.05, **FAST)
    state = alg.init()
    first = state["best_val"].clone()
    state, diags = _rounds(alg, state, 0, 3)
    seen = torch.stack([first] + [d["current_val_loss"] for d in diags])
    assert torch.equal(state["best_val"], seen.min(0).values)
    reported = alg.evaluate(state, ("val",))["val"]["loss"]
    torch.testing.assert_close(reported, state["best_val"])
    # a client whose best so far cannot be beaten (validation loss 0) keeps its best model; the others take the new one
    marker = {n: torch.zeros_like(v) for n, v in state["best"].items()}
    rigged = {**state, "best": marker, "best_val": torch.tensor([0.0] + [math.inf] * 5)}
    after, (d,) = _rounds(alg, rigged, 3, 4)
    assert after["best_val"][0] == 0 and torch.equal(after["best_val"][1:], d["current_val_loss"][1:])
    for n, v in after["best"].items():
        assert (v[0] == 0).all() and torch.equal(v[1:], after["params"][n][1:])


@pytest.mark.parametrize("name", ["dac", "pens"])
def test_same_seed_same_state(clustered, name):
    def run(seed):
        alg = _alg(name, clustered, seed=seed, n_sampled=2, pens_rounds=1, **FAST) if name == "pens" else \
            _alg(name, clustered, seed=seed, n_sampled=2, **FAST)
        return _rounds(alg, alg.init(), 0, 2)[0]
    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(a["params"][n], b["params"][n]) for n in a["params"])
    assert torch.equal(a["n_sampled"], b["n_sampled"]) and not torch.equal(a["params"][next(iter(a["params"]))],
                                                                           c["params"][next(iter(c["params"]))])
