"""Graphs and mixing matrices: structure, closed-form spectra, consensus rates, push-sum debiasing, spec errors;
the topology config schema, Topology (torch sampling and weights) and torch gossip / push-sum on stacked params."""
import inspect
import re
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
import yaml

from pcl.config import ConfigError, validate_experiment
from pcl.topology import (
    GRAPH_NAMES,
    MIXING_RULES,
    Graph,
    Topology,
    complete,
    debias,
    erdos_renyi,
    gossip,
    is_connected,
    k_regular,
    local,
    make_graph,
    metropolis_hastings,
    push_sum,
    push_sum_average,
    push_sum_step,
    push_sum_weights,
    ring,
    spectral_gap,
    star,
    uniform,
)
from pcl.topology.graphs import _BUILDERS
from pcl.topology.topology import SEEDED_GRAPHS


def degrees(adj):
    return adj.sum(axis=1) - 1  # without the self-loop


# ---------------------------------------------------------------- graphs


def test_fixed_graphs_structure():
    assert np.array_equal(local(4), np.eye(4, dtype=bool))
    assert complete(5).all()
    undirected, directed = ring(6), ring(6, directed=True)
    assert np.array_equal(undirected, undirected.T) and (degrees(undirected) == 2).all()
    assert (degrees(directed) == 1).all() and not np.array_equal(directed, directed.T)
    assert directed[5, 0] and not directed[0, 5]
    for adj in (complete(5), undirected, directed):
        assert np.diagonal(adj).all() and is_connected(adj)
    assert not is_connected(local(3))


def test_star_routes_every_client_pair_through_the_server():
    adj = star(4)
    hub = 4
    assert adj.shape == (5, 5) and adj[hub].all() and adj[:, hub].all()
    assert np.array_equal(adj[:4, :4], np.eye(4, dtype=bool))  # no client-client edges
    two_hops = (adj.astype(int) @ adj.astype(int))[:4, :4] > 0
    assert np.array_equal(two_hops, complete(4))
    assert np.array_equal(make_graph({"name": "star"}, 4).support(), complete(4))


def test_erdos_renyi_connected_deterministic_and_dense_as_p():
    a = erdos_renyi(30, 0.3, np.random.default_rng(1))
    assert np.array_equal(a, erdos_renyi(30, 0.3, np.random.default_rng(1)))
    assert not np.array_equal(a, erdos_renyi(30, 0.3, np.random.default_rng(2)))
    assert np.array_equal(a, a.T) and np.diagonal(a).all() and is_connected(a)
    big = erdos_renyi(300, 0.2, np.random.default_rng(0))
    density = degrees(big).sum() / (300 * 299)
    assert abs(density - 0.2) < 0.01  # 4 sigma ~ 0.0038 for 44850 pairs


def test_erdos_renyi_bounded_retries_and_bad_p():
    with pytest.raises(ValueError, match="max_tries=5"):
        erdos_renyi(20, 0.0, np.random.default_rng(0), max_tries=5)
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match="p="):
            erdos_renyi(10, p, np.random.default_rng(0))


@pytest.mark.parametrize("kind,n,k", [("random", 20, 3), ("random", 15, 4), ("circulant", 12, 4), ("circulant", 10, 5)])
def test_k_regular_degrees_and_connectivity(kind, n, k):
    adj = k_regular(n, k, np.random.default_rng(0), kind=kind)
    assert (degrees(adj) == k).all() and np.array_equal(adj, adj.T) and is_connected(adj)


def test_k_regular_random_is_seeded():
    a = k_regular(20, 3, np.random.default_rng(7))
    assert np.array_equal(a, k_regular(20, 3, np.random.default_rng(7)))
    assert not np.array_equal(a, k_regular(20, 3, np.random.default_rng(8)))


@pytest.mark.parametrize(
    "n,k,kind,match",
    [(5, 5, "random", "k=5"), (5, -1, "random", "k=-1"), (5, 3, "random", "must be even"),
     (6, 2, "torus", "kind='torus'"), (8, 0, "circulant", "disconnected")],
)
def test_k_regular_errors(n, k, kind, match):
    with pytest.raises(ValueError, match=match):
        k_regular(n, k, np.random.default_rng(0), kind=kind)


# ---------------------------------------------------------------- stochastic graphs


@pytest.mark.parametrize("directed", [True, False])
def test_stochastic_rates_and_sample_frequencies(directed):
    graph = Graph.stochastic(complete(5), np.random.default_rng(0), low=0.4, high=0.8, directed=directed)
    rates = graph.expected()
    off = ~np.eye(5, dtype=bool)
    assert (rates[off] >= 0.4).all() and (rates[off] < 0.8).all() and (np.diagonal(rates) == 1).all()
    assert np.array_equal(rates, rates.T) != directed
    rng = np.random.default_rng(1)
    samples = np.stack([graph.sample(rng) for _ in range(4000)])
    assert samples[:, np.arange(5), np.arange(5)].all()
    if not directed:
        assert np.array_equal(samples, samples.transpose(0, 2, 1))
    else:
        assert any(not np.array_equal(s, s.T) for s in samples[:10])
    # 5 sigma of a Bernoulli mean over 4000 draws is at most 0.04
    assert np.abs(samples.mean(axis=0) - rates).max() < 0.04


def test_stochastic_respects_base_support_and_seed():
    base = ring(6)
    graph = Graph.stochastic(base, np.random.default_rng(3), directed=True)
    assert np.array_equal(graph.support(), base)
    rng = np.random.default_rng(0)
    assert all((~base & graph.sample(rng)).sum() == 0 for _ in range(50))
    again = Graph.stochastic(base, np.random.default_rng(3), directed=True)
    assert np.array_equal(graph.rates, again.rates)
    draws = [[g.sample(np.random.default_rng(9)) for _ in range(3)] for g in (graph, again)]
    assert all(np.array_equal(a, b) for a, b in zip(*draws))


def test_static_graph_sample_draws_nothing():
    graph = Graph.static(ring(5, directed=True))
    assert graph.directed and graph.is_static
    rng = np.random.default_rng(0)
    assert np.array_equal(graph.sample(rng), ring(5, directed=True))
    assert rng.random() == np.random.default_rng(0).random()


def test_graph_validation():
    with pytest.raises(ValueError, match="symmetric"):
        Graph(ring(4, directed=True).astype(float), directed=False)
    with pytest.raises(ValueError, match="diagonal"):
        Graph(np.zeros((3, 3)), directed=True)
    with pytest.raises(ValueError, match="low=0.9, high=0.5"):
        Graph.stochastic(complete(3), np.random.default_rng(0), low=0.9, high=0.5)
    with pytest.raises(ValueError, match="symmetric"):
        Graph.stochastic(ring(4, directed=True), np.random.default_rng(0), directed=False)


# ---------------------------------------------------------------- make_graph


def test_make_graph_every_name_is_connected_and_seeded():
    specs = {
        "local": {}, "complete": {}, "star": {}, "ring": {"directed": True}, "erdos_renyi": {"p": 0.4, "seed": 1},
        "k_regular": {"k": 3, "seed": 1}, "stochastic": {"directed": False, "base": {"name": "ring"}, "seed": 1},
    }
    assert set(specs) == set(GRAPH_NAMES)
    for name, keys in specs.items():
        graph = make_graph({"name": name, **keys}, 10)
        assert graph.num_nodes == 10
        assert is_connected(graph.support()) == (name != "local")
        assert np.array_equal(graph.rates, make_graph({"name": name, **keys}, 10).rates)
    stochastic = make_graph({"name": "stochastic"}, 6)
    assert stochastic.directed and not stochastic.is_static
    assert np.array_equal(stochastic.support(), complete(6))


@pytest.mark.parametrize(
    "spec,match",
    [
        ({"name": "torus"}, "'torus'"),
        ({"p": 0.3}, "'name'"),
        ({"name": "erdos_renyi"}, r"\['p'\]"),
        ({"name": "erdos_renyi", "p": 1.2}, "p=1.2"),
        ({"name": "erdos_renyi", "p": 0.5, "prob": 0.5}, r"\['prob'\]"),
        ({"name": "k_regular", "k": 10}, "k=10"),
        ({"name": "ring", "seed": 0}, r"\['seed'\]"),
        ({"name": "stochastic", "base": {"name": "stochastic"}}, "must be static"),
        ({"name": "stochastic", "low": -0.2}, "low=-0.2"),
    ],
)
def test_make_graph_errors_name_the_bad_key(spec, match):
    with pytest.raises(ValueError, match=match):
        make_graph(spec, 10)


# ---------------------------------------------------------------- mixing matrices


GRAPHS = [
    complete(6), ring(7), erdos_renyi(12, 0.3, np.random.default_rng(0)), k_regular(10, 3, np.random.default_rng(0))
]


@pytest.mark.parametrize("adj", GRAPHS)
def test_metropolis_hastings_symmetric_doubly_stochastic_on_support(adj):
    w = metropolis_hastings(adj)
    assert np.allclose(w, w.T) and (w >= 0).all()
    assert np.allclose(w.sum(axis=0), 1) and np.allclose(w.sum(axis=1), 1)
    off = ~np.eye(len(adj), dtype=bool)
    assert np.array_equal(w[off] > 0, adj[off])
    x = np.random.default_rng(0).normal(size=(len(adj), 3))
    assert np.allclose((w @ x).mean(axis=0), x.mean(axis=0))


def test_metropolis_hastings_closed_form_and_directed_error():
    # path 0-1-2: degrees 1, 2, 1 -> W_01 = W_12 = 1/3, W_00 = 2/3, W_11 = 1/3
    path = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1]], dtype=bool)
    expected = np.array([[2, 1, 0], [1, 1, 1], [0, 1, 2]]) / 3
    assert np.allclose(metropolis_hastings(path), expected)
    with pytest.raises(ValueError, match="symmetric"):
        metropolis_hastings(ring(5, directed=True))


def test_uniform_is_row_stochastic_and_fedavg_on_complete():
    assert np.allclose(uniform(complete(4)), np.full((4, 4), 0.25))
    w = uniform(star(3))  # hub 3 hears everyone; client i hears itself and the hub
    assert np.allclose(w.sum(axis=1), 1)
    assert np.allclose(w[3], 0.25) and np.allclose(w[0], [0.5, 0, 0, 0.5])
    assert not np.allclose(w.sum(axis=0), 1)


def test_push_sum_weights_column_stochastic_by_out_degree():
    # 0 -> 1, 0 -> 2, 1 -> 2, 2 -> 0 (plus self-loops): out-degrees 3, 2, 2
    adj = np.eye(3, dtype=bool)
    adj[0, 1] = adj[0, 2] = adj[1, 2] = adj[2, 0] = True
    p = push_sum_weights(adj)
    expected = np.array([[1 / 3, 0, 1 / 2], [1 / 3, 1 / 2, 0], [1 / 3, 1 / 2, 1 / 2]])
    assert np.allclose(p, expected)
    assert np.allclose(p.sum(axis=0), 1) and not np.allclose(p.sum(axis=1), 1)


def test_spectral_gap_closed_form_and_ordering():
    n = 10
    # MH on a ring is (I + S + S^T)/3 with eigenvalues (1 + 2 cos(2 pi k / n)) / 3
    eig = (1 + 2 * np.cos(2 * np.pi * np.arange(1, n) / n)) / 3
    assert spectral_gap(metropolis_hastings(ring(n))) == pytest.approx(1 - np.abs(eig).max(), abs=1e-12)
    assert spectral_gap(metropolis_hastings(complete(n))) == pytest.approx(1.0)
    assert spectral_gap(metropolis_hastings(local(n))) == pytest.approx(0.0)
    gaps = [spectral_gap(metropolis_hastings(a)) for a in (ring(16), k_regular(16, 4, kind="circulant"), complete(16))]
    assert gaps[0] < gaps[1] < gaps[2]


def test_metropolis_hastings_consensus_at_the_spectral_gap_rate():
    w = metropolis_hastings(ring(10))
    rate = 1 - spectral_gap(w)
    x = np.random.default_rng(0).normal(size=10)
    mean = x.mean()
    errors = []
    for _ in range(80):
        errors.append(np.linalg.norm(x - mean))
        x = w @ x
        assert x.mean() == pytest.approx(mean, abs=1e-12)
    errors = np.array(errors)
    assert (errors <= errors[0] * rate ** np.arange(80) * (1 + 1e-9)).all()
    assert errors[-1] / errors[-2] == pytest.approx(rate, rel=1e-6)  # the bound is the actual asymptotic rate


# ---------------------------------------------------------------- push-sum


def test_push_sum_converges_to_average_where_plain_mixing_stays_biased():
    base = {"name": "k_regular", "k": 4, "seed": 0}  # sparse, so that mixing takes ~100 steps
    graph = make_graph({"name": "stochastic", "directed": True, "base": base, "seed": 0}, 12)
    values = np.random.default_rng(1).normal(loc=3.0, size=(12, 2))
    target = values.mean(axis=0)

    estimate = push_sum_average(values, graph, steps=200, rng=np.random.default_rng(2))
    assert np.abs(estimate - target).max() < 1e-6

    rng = np.random.default_rng(2)
    x, w = values.copy(), np.ones(12)
    for _ in range(200):
        x, w = push_sum_step(x, w, graph.sample(rng))
    assert np.allclose(x.sum(axis=0), values.sum(axis=0))  # column-stochastic: mass preserved
    assert np.allclose(x / w[:, None], estimate)  # same rng stream -> same run
    assert np.abs(x - target).max() > 0.5  # numerators alone: biased by the weights w != 1
    assert np.abs(w - 1).max() > 0.2


def test_push_sum_average_checks_rows():
    with pytest.raises(ValueError, match="4 rows"):
        push_sum_average(np.zeros(3), Graph.static(complete(4)), 5, np.random.default_rng(0))


# ---------------------------------------------------------------- topology: config schema


SCHEMAS = Path(__file__).parents[1] / "pcl/schemas"
TOPOLOGY_SCHEMA = yaml.safe_load((SCHEMAS / "topology.schema.yaml").read_text())
VALID_TOPOLOGIES = [
    {},
    {"graph": {"name": "local"}, "mixing": "metropolis_hastings"},
    {"graph": {"name": "complete"}},
    {"graph": {"name": "star"}, "mixing": "uniform"},
    {"graph": {"name": "ring", "directed": True}, "mixing": "push_sum"},
    {"graph": {"name": "erdos_renyi", "p": 0.5, "seed": 3, "max_tries": 10}, "mixing": "metropolis_hastings"},
    {"graph": {"name": "k_regular", "k": 2, "kind": "circulant", "seed": 0, "max_tries": 5}},
    {"graph": {"name": "k_regular", "k": 3}, "mixing": "push_sum"},
    {"graph": {"name": "stochastic"}, "mixing": "push_sum"},
    {"graph": {"name": "stochastic", "directed": False, "low": 0.2, "high": 0.9, "seed": 1,
               "base": {"name": "erdos_renyi", "p": 0.6}}, "mixing": "metropolis_hastings"},
]


@pytest.fixture(scope="module")
def topology_validator():
    jsonschema.Draft202012Validator.check_schema(TOPOLOGY_SCHEMA)
    return jsonschema.Draft202012Validator(TOPOLOGY_SCHEMA)


def topology_error(validator, spec):
    err = jsonschema.exceptions.best_match(validator.iter_errors(spec))
    return None if err is None else f"{list(err.absolute_path)} {err.message}"


def test_topology_schema_keys_match_make_graph_builders():
    graph = TOPOLOGY_SCHEMA["$defs"]["graph"]
    assert set(graph["properties"]["name"]["enum"]) == set(GRAPH_NAMES)
    assert set(TOPOLOGY_SCHEMA["properties"]["mixing"]["enum"]) == set(MIXING_RULES)
    covered = []
    for rule in graph["allOf"]:
        name_rule = rule["if"]["properties"]["name"]
        for name in name_rule.get("enum", [name_rule.get("const")]):
            params = [p for p in inspect.signature(_BUILDERS[name]).parameters.values() if p.kind is p.KEYWORD_ONLY]
            assert set(rule["then"]["properties"]) - {"name"} == {p.name for p in params}, name
            assert set(rule["then"].get("required", [])) == {p.name for p in params if p.default is p.empty}, name
            assert ("seed" in rule["then"]["properties"]) == (name in SEEDED_GRAPHS), name
            covered.append(name)
    assert sorted(covered) == sorted(GRAPH_NAMES)
    base = graph["allOf"][-1]["then"]["properties"]["base"]
    assert set(base["properties"]["name"]["enum"]) == set(GRAPH_NAMES) - {"stochastic"}


@pytest.mark.parametrize("spec", VALID_TOPOLOGIES)
def test_topology_schema_accepts_every_valid_spec_and_it_builds(topology_validator, spec):
    assert topology_error(topology_validator, spec) is None
    topology = Topology.from_spec(spec, 6, seed=0)
    assert topology.num_nodes == 6 and topology.mixing == spec.get("mixing", "uniform")


@pytest.mark.parametrize("spec, pattern", [
    ({"graph": {"name": "ring"}, "mixng": "uniform"}, r"'mixng' was unexpected"),
    ({"graph": {"name": "ring", "seed": 0}}, r"\['graph'\] .*'seed' was unexpected"),
    ({"graph": {"name": "complete", "p": 0.5}}, r"\['graph'\] .*'p' was unexpected"),
    ({"graph": {"name": "erdos_renyi", "p": 0.5, "prob": 0.5}}, r"'prob' was unexpected"),
    ({"graph": {"name": "erdos_renyi"}}, r"\['graph'\] 'p' is a required property"),
    ({"graph": {"name": "erdos_renyi", "p": 1.5}}, r"\['graph', 'p'\] 1.5 is greater than the maximum"),
    ({"graph": {"name": "k_regular", "k": 2, "kind": "torus"}}, r"\['graph', 'kind'\] 'torus' is not one of"),
    ({"graph": {"name": "k_regular", "k": 2, "seed": -1}}, r"\['graph', 'seed'\] -1 is less than the minimum"),
    ({"graph": {"name": "stochastic", "directed": "yes"}}, r"\['graph', 'directed'\] 'yes' is not of type"),
    ({"graph": {"name": "stochastic", "base": {"name": "stochastic"}}}, r"\['graph', 'base', 'name'\]"),
    ({"graph": {"name": "stochastic", "base": {"name": "ring", "p": 0.3}}}, r"\['graph', 'base'\] .*'p' was unexp"),
    ({"graph": {"name": "torus"}}, r"\['graph', 'name'\] 'torus' is not one of"),
    ({"mixing": "gossip"}, r"\['mixing'\] 'gossip' is not one of"),
])
def test_topology_schema_rejects_naming_the_key(topology_validator, spec, pattern):
    err = topology_error(topology_validator, spec)
    assert err is not None and re.search(pattern, err), err


def test_experiment_schema_refs_the_topology_schema():
    base = {"name": "t", "kind": "simulation"}  # invalid without `simulation`: only the topology lines matter
    with pytest.raises(ConfigError) as valid:
        validate_experiment({**base, "topology": VALID_TOPOLOGIES[-1]})
    assert "topology" not in str(valid.value)
    with pytest.raises(ConfigError, match=r"topology\.graph: .*'seed' was unexpected"):
        validate_experiment({**base, "topology": {"graph": {"name": "ring", "seed": 0}}})


# ---------------------------------------------------------------- topology: graph + mixing rule, torch side


def test_topology_default_is_fedavg_on_the_complete_graph():
    topology = Topology.from_spec(None, 4, seed=0)
    assert topology.mixing == "uniform" and not topology.directed and topology.graph.is_static
    w = topology.weights(topology.sample(torch.Generator()))
    assert w.dtype == torch.float64 and torch.equal(w, torch.full((4, 4), 0.25, dtype=torch.float64))


def test_topology_seed_comes_from_the_spec_else_the_argument():
    def rates(graph, seed):
        return Topology.from_spec({"graph": graph}, 10, seed=seed).graph.rates

    er = {"name": "erdos_renyi", "p": 0.4}
    assert np.array_equal(rates(er, 5), make_graph({**er, "seed": 5}, 10).rates)
    assert np.array_equal(rates({**er, "seed": 7}, 5), make_graph({**er, "seed": 7}, 10).rates)
    assert not np.array_equal(rates(er, 5), rates(er, 6))
    # a stochastic graph's base gets its own seed, derived from the graph's: not the rates' stream again
    stochastic = {"name": "stochastic", "base": er}
    assert not np.array_equal(rates(stochastic, 5) > 0, rates(stochastic, 6) > 0)
    assert not np.array_equal(rates(stochastic, 5) > 0, make_graph({**er, "seed": 5}, 10).support())
    assert np.array_equal(rates({**stochastic, "seed": 5}, 0), rates(stochastic, 5))


def test_topology_validation_names_the_problem():
    with pytest.raises(ValueError, match="metropolis_hastings.*directed"):
        Topology.from_spec({"graph": {"name": "stochastic"}, "mixing": "metropolis_hastings"}, 4, seed=0)
    with pytest.raises(ValueError, match="metropolis_hastings.*directed"):
        Topology(Graph.static(ring(4, directed=True)), "metropolis_hastings")
    with pytest.raises(ValueError, match="'gossip'"):
        Topology.from_spec({"mixing": "gossip"}, 4, seed=0)
    with pytest.raises(ValueError, match=r"\['mixng'\]"):
        Topology.from_spec({"mixng": "uniform"}, 4, seed=0)


@pytest.mark.parametrize("mixing", list(MIXING_RULES))
def test_topology_weights_are_the_numpy_rule(mixing):
    graph = {"name": "stochastic", "directed": mixing != "metropolis_hastings", "base": {"name": "ring"}}
    topology = Topology.from_spec({"graph": graph, "mixing": mixing}, 6, seed=0)
    adj = topology.sample(torch.Generator().manual_seed(0))
    w = topology.weights(adj)
    assert w.dtype == torch.float64 and torch.equal(w, torch.from_numpy(MIXING_RULES[mixing](adj.numpy())))
    assert torch.equal(topology.expected(), torch.from_numpy(topology.graph.expected()))
    sums = w.sum(dim=0 if mixing == "push_sum" else 1)
    assert torch.allclose(sums, torch.ones(6, dtype=torch.float64))


@pytest.mark.parametrize("directed", [True, False])
def test_topology_sample_frequencies_match_rates(directed):
    graph = {"name": "stochastic", "directed": directed, "low": 0.1, "high": 0.9}
    topology = Topology.from_spec({"graph": graph}, 4, seed=0)
    generator = torch.Generator().manual_seed(1)
    samples = torch.stack([topology.sample(generator) for _ in range(400)])
    assert samples.dtype == torch.bool and samples.shape == (400, 4, 4)
    assert samples[:, range(4), range(4)].all()
    assert torch.equal(samples, samples.transpose(1, 2)) != directed
    rates = topology.expected()
    standard_error = (rates * (1 - rates) / 400).sqrt()
    assert ((samples.double().mean(dim=0) - rates).abs() <= 4 * standard_error + 1e-12).all()


def test_topology_sample_is_driven_by_the_torch_generator():
    topology = Topology.from_spec({"graph": {"name": "stochastic"}}, 5, seed=0)

    def draws(seed):
        generator = torch.Generator().manual_seed(seed)
        return torch.stack([topology.sample(generator) for _ in range(5)])

    assert torch.equal(draws(3), draws(3)) and not torch.equal(draws(3), draws(4))
    static = Topology.from_spec({"graph": {"name": "ring", "directed": True}}, 5, seed=0)
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    assert torch.equal(static.sample(generator), torch.from_numpy(ring(5, directed=True)))
    assert torch.equal(generator.get_state(), state)


# ---------------------------------------------------------------- torch gossip and push-sum on stacked params


class Replay:
    """A Graph stand-in that hands push_sum_average given adjacencies in order."""

    def __init__(self, adjs):
        self.num_nodes, self.adjs = adjs[0].shape[0], iter(adjs)

    def sample(self, rng):
        return next(self.adjs)


def test_torch_push_sum_averages_on_a_directed_stochastic_graph_as_the_numpy_reference():
    k, steps = 8, 100
    graph = {"name": "stochastic", "directed": True, "base": {"name": "k_regular", "k": 3}}
    ps, uni = (Topology.from_spec({"graph": graph, "mixing": m}, k, seed=0) for m in ("push_sum", "uniform"))
    values = torch.linspace(0, 7, k, dtype=torch.float64)
    noise = torch.randn(k, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    params = {"a": noise + values[:, None, None], "b": (values ** 2).float()}
    x, w, plain = params, torch.ones(k, dtype=torch.float64), params
    ref_x, ref_w = params["a"].numpy(), np.ones(k)
    generator, adjs = torch.Generator().manual_seed(0), []
    for _ in range(steps):
        adjs.append(ps.sample(generator).numpy())
        x, w = push_sum(ps.weights(adjs[-1]), x, w)
        plain = gossip(uni.weights(adjs[-1]), plain)
        ref_x, ref_w = push_sum_step(ref_x, ref_w, adjs[-1])
        assert np.allclose(x["a"].numpy(), ref_x, rtol=1e-12, atol=0) and np.allclose(w.numpy(), ref_w, rtol=1e-12)
    estimate = debias(x, w)
    assert {n: v.dtype for n, v in estimate.items()} == {n: v.dtype for n, v in params.items()}
    assert np.allclose(estimate["a"].numpy(), push_sum_average(params["a"].numpy(), Replay(adjs), steps, None))
    for n, v in params.items():
        target = v.double().mean(dim=0)
        assert (estimate[n].double() - target).abs().max() < 1e-4 * (1 + target.abs().max())
    assert (plain["b"].double() - params["b"].double().mean()).abs().min() > 0.3  # row stochastic: biased consensus
    assert (w - 1).abs().max() > 0.2  # the graph is unbalanced, so the debiasing does work


def test_push_sum_gradients_are_the_transposed_mixing():
    k = 4
    topology = Topology.from_spec({"graph": {"name": "stochastic", "base": {"name": "ring"}}, "mixing": "push_sum"},
                                  k, seed=0)
    P = topology.weights(topology.sample(torch.Generator().manual_seed(0)))
    g = torch.Generator().manual_seed(1)
    numerators = {"a": torch.randn(k, 3, generator=g, requires_grad=True)}
    weights = torch.rand(k, dtype=torch.float64, generator=g, requires_grad=True) + 0.5
    upstream, upstream_w = torch.randn(k, 3, generator=g), torch.randn(k, dtype=torch.float64, generator=g)
    out, out_w = push_sum(P, numerators, weights)
    assert out["a"].dtype == torch.float32 and out_w.dtype == torch.float64
    grad_x, grad_w = torch.autograd.grad((out["a"] * upstream).sum() + (out_w * upstream_w).sum(),
                                         [numerators["a"], weights])
    assert torch.allclose(grad_x, P.T.float() @ upstream) and torch.allclose(grad_w, P.T @ upstream_w)
    assert not torch.allclose(grad_x, P.float() @ upstream)
