"""Random gossip: the official DAC code's ``--random`` baseline (Listo Zec et al., FL-IJCAI'22, ``utils.py::gossip``,
commit 45209fd): each round every client averages its model with n peers drawn uniformly from all others (weights =
train-set sizes) and trains E local epochs; no scoring. Shares everything else with DAC (``peer_gossip``: independent
inits, initial local training, update order, best-by-validation models)."""
from __future__ import annotations

import torch

from pcl.algorithms.base import register
from pcl.algorithms.peer_gossip import PeerGossip, restricted


@register("random_gossip")
class RandomGossip(PeerGossip):
    def logits(self, state: dict, t: int) -> torch.Tensor:
        k = self.ctx.num_clients
        return restricted(torch.ones(k, k, dtype=torch.bool))
