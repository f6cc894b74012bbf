"""PENS, performance-based neighbour selection (Onoszko, Karlsson, Mogren, Listo Zec, "Decentralized federated
learning of deep neural networks on non-iid data", ICML 2021 FL workshop, arXiv 2107.08517), as the DAC code runs it
(``utils.py::train_pens`` then ``gossip``, ``main_fed.py --pens``, commit 45209fd).

Phase 1, the first ``pens_rounds`` rounds: every client draws n peers uniformly, scores each model on its own training
data (L_ij), averages its model with the ``top_m`` lowest-loss ones (weights = train-set sizes; ties go to the earlier
draw, as the official stable sort) and counts those selections (``n_selected``). Phase 2, the remaining rounds: the
neighbours of i are the j selected more often than expected at random, n_selected[i, j] > (top_m / K) * pens_rounds
(the official threshold, with K where a uniform peer's expectation has K - 1), and i gossips with n of them
(all of them when fewer; with none it trains alone). The official run is ``n_rounds_pens`` + ``n_rounds`` rounds; here
``train.rounds`` counts both phases. Defaults: n = 5 and ``pens_rounds`` = 10, ``top_m`` = 2 are pcl's choice
(reconstructed: the DAC code's defaults are 0 for both, which make PENS pure local training)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pcl.algorithms.base import register
from pcl.algorithms.hparams import param
from pcl.algorithms.peer_gossip import GossipHparams, PeerGossip, counts, restricted


@dataclass
class PENSHparams(GossipHparams):
    """``pens_rounds``: rounds of the selection phase; ``top_m``: peers averaged per selection round (<= n_sampled)."""

    pens_rounds: int = param(10, ge=0)
    top_m: int = param(2, ge=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.top_m > self.n_sampled:
            raise ValueError(f"top_m={self.top_m} must be <= n_sampled={self.n_sampled}")


@register("pens")
class PENS(PeerGossip):
    Hparams = PENSHparams

    def extra_state(self) -> dict:
        k = self.ctx.num_clients
        return {"n_selected": torch.zeros(k, k, dtype=torch.long)}

    def selecting(self, t: int) -> bool:
        return t < self.hp.pens_rounds

    def neighbours(self, state: dict) -> torch.Tensor:
        """``[K, K]`` bool: j is a neighbour of i after the selection phase."""
        return state["n_selected"] > self.hp.top_m / self.ctx.num_clients * self.hp.pens_rounds

    def logits(self, state: dict, t: int) -> torch.Tensor:
        k = self.ctx.num_clients
        return restricted(torch.ones(k, k, dtype=torch.bool) if self.selecting(t) else self.neighbours(state))

    def scored(self, t: int) -> bool:
        return self.selecting(t)

    def choose(self, losses: torch.Tensor, valid: torch.Tensor, t: int) -> torch.Tensor:
        if not self.selecting(t):
            return valid
        order = torch.where(valid, losses, torch.inf).sort(dim=1, stable=True).indices
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1]).expand_as(order))
        return valid & (rank < self.hp.top_m)

    def learn(self, state, clients, peers, valid, losses, chosen, t):
        if not self.selecting(t):
            return state
        k = self.ctx.num_clients
        added = counts(clients, peers, chosen, k)
        return {**state, "n_selected": state["n_selected"].index_put((clients,), state["n_selected"][clients] + added)}
