"""Communication graphs (static, directed, time-varying stochastic), their mixing matrices, and torch gossip."""
from pcl.topology.gossip import debias, gossip, push_sum
from pcl.topology.graphs import (
    GRAPH_NAMES,
    Graph,
    complete,
    erdos_renyi,
    is_connected,
    k_regular,
    local,
    make_graph,
    ring,
    star,
    with_self_loops,
)
from pcl.topology.mixing import (
    expected_push_sum_weights,
    metropolis_hastings,
    push_sum_average,
    push_sum_step,
    push_sum_weights,
    spectral_gap,
    uniform,
)
from pcl.topology.topology import MIXING_RULES, Topology

__all__ = [
    "GRAPH_NAMES",
    "Graph",
    "MIXING_RULES",
    "Topology",
    "complete",
    "debias",
    "erdos_renyi",
    "expected_push_sum_weights",
    "gossip",
    "is_connected",
    "k_regular",
    "local",
    "make_graph",
    "metropolis_hastings",
    "push_sum",
    "push_sum_average",
    "push_sum_step",
    "push_sum_weights",
    "ring",
    "spectral_gap",
    "star",
    "uniform",
    "with_self_loops",
]
