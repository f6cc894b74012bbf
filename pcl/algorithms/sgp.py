"""Stochastic Gradient Push (Assran, Loizou, Ballas, Rabbat, ICML 2019, Algorithm 1), as the inner solver of
Terashita & Hara, "Personalized Decentralized Bilevel Optimization over Stochastic and Directed Networks"
(arXiv 2210.02129 v1, 2022; official code hitachi-rd-cv/pdbo-hgp tag v1, ``lib_task/stochastic_gradient_push.py``,
``module_torch/client.py``). With λ = 0 it is their decentralized-FedAvg baseline "SGP"; on the self-loop-only graph
(``topology: {graph: {name: local}}``) it is their "Local".

Each step t, on a freshly sampled graph G_t (``ctx.graph``; without a ``topology:`` section the complete graph, where
SGP is FedAvg with one local step):
  z_i = x_i / w_i;  s_i = -η_t ∇g_i(z_i; minibatch)                    (one local SGD step, ``ctx.local_train``)
  P_t[j, i] = 1 / |N_out^t(i)| for i -> j, self included                 (column stochastic)
  x_i <- Σ_j P_t[i, j] x_j + s_i;  w_i <- Σ_j P_t[i, j] w_j              (the gradient only in the self-message)
η_t = lr · lr_decay^(number of milestones <= t) (pdbo-hgp: 0.05, ×0.1 at 500 and 550 of 600 steps).
SGP uses its own push-sum weights; the topology's ``mixing`` rule is not used. The running sums of P_t and of the
sampled adjacency are kept in the state: they are the empirical E[p_ji] and Pr[i -> j] that hypergradient push
(pcl.bilevel.hgp) divides by, and are reported as diagnostics ``mixing_mean`` and ``edge_freq``.

One pcl round = ``steps_per_round`` SGP steps (the step counter, and so the schedule, runs across rounds).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pcl.algorithms.base import Algorithm, LocalSGD, register
from pcl.algorithms.hparams import param
from pcl.engine import Objective, Params
from pcl.engine.objective import Extras
from pcl.topology import Topology, debias, push_sum


@dataclass
class SGPHparams(LocalSGD):
    """Defaults from pdbo-hgp v1 (``config/paper/personalization_sgp_hgp.py``): lr 0.05, batch 128, weight decay 1e-3,
    ×0.1 at steps 500 and 550; one local SGD step per gossip step (``local_steps`` must stay 1, plain SGD).
    ``steps_per_round``: SGP steps per pcl round (20 rounds = the paper's 600 steps)."""

    lr: float = param(0.05, gt=0)
    local_epochs: float | None = param(None, gt=0)
    local_steps: int | None = param(1, ge=1)
    batch_size: int = param(128, ge=1)
    weight_decay: float = param(1e-3, ge=0)
    steps_per_round: int = param(30, ge=1)
    lr_milestones: list[int] = param(default_factory=lambda: [500, 550], ge=0)
    lr_decay: float = param(0.1, gt=0, le=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.local_steps != 1 or self.optimizer != "sgd":
            raise ValueError(f"SGP takes one plain SGD step per gossip step: need local_steps=1 and optimizer='sgd', "
                             f"got local_steps={self.local_steps!r}, optimizer={self.optimizer!r}")

    def lr_at(self, step: int) -> float:
        return self.lr * self.lr_decay ** sum(step >= m for m in self.lr_milestones)


def edge_statistics(num_nodes: int) -> dict[str, torch.Tensor]:
    """Zeroed running sums of the SGP weights and of the sampled adjacency, and their step count."""
    zeros = torch.zeros(num_nodes, num_nodes, dtype=torch.float64)
    return {"p_sum": zeros, "edge_sum": zeros.clone(), "steps": torch.zeros((), dtype=torch.float64)}


def edge_estimates(stats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Empirical ``(E[P], Pr[edge])`` (pdbo-hgp ``p_vec_expected``, ``are_in_neighbors_expected``)."""
    steps = stats["steps"].clamp(min=1)
    return stats["p_sum"] / steps, stats["edge_sum"] / steps


@register("sgp")
class SGP(Algorithm):
    Hparams = SGPHparams

    @property
    def topology(self) -> Topology:
        if self.ctx.graph is None:  # a Context built without a topology: the runner's default (complete graph)
            return Topology.from_spec(None, self.ctx.num_clients, seed=0)
        return self.ctx.graph

    def init(self) -> dict:
        return self.fresh(self.ctx.broadcast(self.ctx.init_params()))

    def fresh(self, x0: Params) -> dict:
        """Push-sum state at the start of training: numerators ``x0``, weights 1, no edge statistics yet."""
        k = self.ctx.num_clients
        return {"x": dict(x0), "w": torch.ones(k, dtype=torch.float64), "step": 0, **edge_statistics(k)}

    def sgp(self, state: dict, steps: int, objective: Objective | None = None, extras: Extras | None = None) -> dict:
        """``steps`` SGP steps from ``state`` (its x, w, step counter and edge statistics)."""
        clients = torch.arange(self.ctx.num_clients)
        x, w, t = state["x"], state["w"], int(state["step"])
        p_sum, edge_sum = state["p_sum"], state["edge_sum"]
        for _ in range(steps):
            adj = self.topology.sample(self.ctx.rng("graph"))
            P = self.topology.push_sum(adj)
            z = debias(x, w)
            moved = self.ctx.local_train(z, clients, self.hp, objective=objective, extras=extras,
                                         lr=self.hp.lr_at(t))
            x, w = push_sum(P, x, w)
            x = {n: v + (moved[n] - z[n]) for n, v in x.items()}  # s_i enters only node i's own message
            p_sum, edge_sum, t = p_sum + P, edge_sum + adj.to(torch.float64), t + 1
        return {**state, "x": x, "w": w, "step": t, "p_sum": p_sum, "edge_sum": edge_sum,
                "steps": state["steps"] + steps}

    def diagnostics(self, state: dict) -> dict[str, torch.Tensor]:
        mixing, edges = edge_estimates(state)
        return {"mixing_mean": mixing, "edge_freq": edges, "push_weight": state["w"]}

    def round(self, state: dict, t: int):
        state = self.sgp(state, self.hp.steps_per_round)
        return state, self.diagnostics(state)

    def personalized(self, state: dict) -> Params:
        return debias(state["x"], state["w"])
