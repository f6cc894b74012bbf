"""An experiment's communication topology: a :class:`Graph` plus the rule that turns a sampled graph into weights.

Graphs and mixing rules stay numpy (:mod:`pcl.topology.graphs`, :mod:`pcl.topology.mixing` are the reference);
this class is their torch face for algorithms: it samples from the run's torch generators, so that the RNG tree
(seed, purpose, round) drives the graph too, and hands back torch matrices.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pcl.rng import derive
from pcl.topology.graphs import Graph, make_graph
from pcl.topology.mixing import expected_push_sum_weights, metropolis_hastings, push_sum_weights, uniform

MIXING_RULES = {"metropolis_hastings": metropolis_hastings, "uniform": uniform, "push_sum": push_sum_weights}
DEFAULT_GRAPH = {"name": "complete"}
DEFAULT_MIXING = "uniform"
SEEDED_GRAPHS = frozenset({"erdos_renyi", "k_regular", "stochastic"})  # the make_graph names with a `seed` key


def _seeded(spec: dict, seed: int) -> dict:
    """``spec`` with ``seed`` filled in where it is missing, recursively into a stochastic graph's ``base``.

    The base gets a seed derived from ``seed``, not ``seed`` itself: an Erdos-Renyi base and the edge rates drawn
    from the same numpy stream would reuse the same uniforms, tying each edge's rate to whether it exists.
    """
    spec = dict(spec)
    if spec.get("name") in SEEDED_GRAPHS:
        spec.setdefault("seed", seed)
    if isinstance(spec.get("base"), dict):
        spec["base"] = _seeded(spec["base"], derive(spec.get("seed", seed), "base"))
    return spec


@dataclass(frozen=True, eq=False)
class Topology:
    """A communication graph and its mixing rule (one of :data:`MIXING_RULES`)."""

    graph: Graph
    mixing: str = DEFAULT_MIXING

    def __post_init__(self) -> None:
        if self.mixing not in MIXING_RULES:
            raise ValueError(f"Topology: unknown mixing {self.mixing!r}; known: {', '.join(MIXING_RULES)}")
        if self.mixing == "metropolis_hastings" and self.graph.directed:
            raise ValueError("Topology: mixing 'metropolis_hastings' needs an undirected graph, the graph is directed;"
                             " use 'push_sum' (or 'uniform')")

    @classmethod
    def from_spec(cls, spec: dict | None, num_nodes: int, seed: int) -> Topology:
        """Build an experiment's ``topology:`` section (None: complete graph, uniform mixing = FedAvg's average).

        A random graph without its own ``seed`` key is seeded from ``seed``, which the runner derives from the run
        seed, so that repeated runs see different graphs and rates unless the config pins them.
        """
        spec = {} if spec is None else spec
        unknown = sorted(set(spec) - {"graph", "mixing"})
        if unknown:
            raise ValueError(f"Topology: unknown key(s) {unknown}; allowed: ['graph', 'mixing']")
        graph = make_graph(_seeded(spec.get("graph", DEFAULT_GRAPH), int(seed)), num_nodes)
        return cls(graph, spec.get("mixing", DEFAULT_MIXING))

    @property
    def num_nodes(self) -> int:
        return self.graph.num_nodes

    @property
    def directed(self) -> bool:
        return self.graph.directed

    def sample(self, generator: torch.Generator) -> torch.Tensor:
        """Bool [K, K] adjacency of one step (``adj[i, j]``: edge ``i -> j``); a static graph draws nothing.

        A stochastic graph takes one 63-bit draw from ``generator`` to seed :meth:`Graph.sample`, so that what a
        sample is stays defined in one place while the run's torch RNG tree drives it.
        """
        if self.graph.is_static:
            return torch.from_numpy(self.graph.support())
        seed = int(torch.randint(2**63 - 1, (), generator=generator))
        return torch.from_numpy(self.graph.sample(np.random.default_rng(seed)))

    def weights(self, adj: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Float64 [K, K] mixing matrix of ``adj`` by the rule (``push_sum``: column-stochastic SGP weights)."""
        device = adj.device if isinstance(adj, torch.Tensor) else None
        adj = adj.cpu().numpy() if isinstance(adj, torch.Tensor) else np.asarray(adj)
        return torch.from_numpy(MIXING_RULES[self.mixing](adj)).to(device)

    def expected(self) -> torch.Tensor:
        """Float64 [K, K] edge presence probabilities (1 on the diagonal), which hypergradient estimators divide by."""
        return torch.from_numpy(self.graph.expected())

    def push_sum(self, adj: torch.Tensor) -> torch.Tensor:
        """Float64 [K, K] SGP push-sum weights of ``adj`` (uniform out-weights, self included), whatever ``mixing``
        says: Stochastic Gradient Push defines its own weights."""
        return torch.from_numpy(push_sum_weights(adj.cpu().numpy())).to(adj.device)

    def expected_push_sum(self) -> torch.Tensor:
        """Float64 [K, K] exact ``E[P_t]`` of the SGP weights over the random edges (see expected_push_sum_weights)."""
        return torch.from_numpy(expected_push_sum_weights(self.graph))
