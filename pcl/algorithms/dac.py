"""DAC: Decentralized Adaptive Clustering (Listo Zec, Ekblom, Willbo, Mogren, Girdzijauskas, "Decentralized adaptive
clustering of deep nets is beneficial for client collaboration", FL-IJCAI'22 workshop, arXiv 2206.08839), as the
official code implements it (``utils.py::train_DAC``, commit 45209fd; dac.md 1.1). The paper's full text was not
available, so pcl follows the code; the machinery shared with the baselines is in ``peer_gossip``.

Each round every client i draws n peers from its distribution p_i (uniform at round 0, since all s_ij start at 0),
computes L_ij = mean loss of model j on its own training data, averages the n received models and its own by train-set
size, sets s_ij = 1/L_ij (overwriting the old value), copies two-hop estimates for peers it never sampled from its most
similar sampled neighbour that knows them (``two_hop``: ``fixed`` = the post-paper argmax fix, ``last`` = the 2022
code, likely what produced the paper's numbers), sets p_i = softmax_{j != i}(tau_t * s_ij) (never-seen peers keep
weight exp(0)), then trains E local epochs with a fresh Adam state. ``dac``: tau_t = tau; ``dac_var``:
tau_t = 2 tau / (1 + exp(-0.2 t)) - tau + 1 (official ``tau_function(round, tau, 0.2)``), rising from 1 to tau + 1.

Numerical care the official code lacks (see ``peer_gossip`` for the log-space distribution): a zero training loss
(float32 gives exactly 0 once a model fits a client's data with a large margin) would make 1/L infinite (the official
code raises ZeroDivisionError); L is clamped to the smallest normal float32, so such a peer simply dominates.
The similarities are kept in float64. Defaults: n = 5, E = 3, Adam lr 0.01, batch 8 (options.py) and tau = 30 (the
README's launch line, the only documented run; options.py's default is 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pcl.algorithms.base import register
from pcl.algorithms.hparams import param
from pcl.algorithms.peer_gossip import TWO_HOP, GossipHparams, PeerGossip, exclude_self, two_hop

LOSS_FLOOR = torch.finfo(torch.float32).tiny


@dataclass
class DACHparams(GossipHparams):
    """``tau``: softmax temperature on similarities (README: 30); ``two_hop``: 'fixed' (commit 45209fd) or 'last'
    (the 2022 code before it)."""

    tau: float = param(30.0, gt=0)
    two_hop: str = param("fixed", choices=TWO_HOP)


@dataclass
class DACVarHparams(DACHparams):
    """``tau_rate``: the slope b of the schedule tau_t = 2 tau / (1 + exp(-b t)) - tau + 1 (official: 0.2)."""

    tau_rate: float = param(0.2, gt=0)


@register("dac")
class DAC(PeerGossip):
    Hparams = DACHparams

    def tau(self, t: int) -> float:
        return self.hp.tau

    def extra_state(self) -> dict:
        k = self.ctx.num_clients
        return {"priors": torch.zeros(k, k, dtype=torch.float64)}

    def logits(self, state: dict, t: int) -> torch.Tensor:
        # round t samples from the distribution set at the end of round t - 1 (with tau_{t-1}); at t = 0 all s = 0
        return exclude_self(self.tau(max(t - 1, 0)) * state["priors"])

    def scored(self, t: int) -> bool:
        return True

    def learn(self, state, clients, peers, valid, losses, chosen, t):
        priors = state["priors"]
        own = priors[clients].clone()
        rows = torch.arange(len(clients))[:, None].expand_as(peers)
        own[rows[valid], peers[valid]] = 1.0 / losses[valid].to(torch.float64).clamp_min(LOSS_FLOOR)
        seen = state["n_sampled"][clients] > 0
        seen[torch.arange(len(clients)), clients] = True
        new = two_hop(own, priors[peers], seen, peers, valid, self.hp.two_hop)
        return {**state, "priors": priors.index_put((clients,), new)}


@register("dac_var")
class DACVar(DAC):
    """DAC with the rising temperature schedule (official ``--DAC_var``; the README's CIFAR-10 run)."""

    Hparams = DACVarHparams

    def tau(self, t: int) -> float:
        return 2 * self.hp.tau / (1 + math.exp(-self.hp.tau_rate * t)) - self.hp.tau + 1
