"""FedProx (Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith, MLSys 2020, "Federated Optimization in Heterogeneous
Networks"), Algorithm 2: each sampled client approximately minimises h_k(w) = F_k(w) + (mu/2)||w - w^t||^2 from the
global model w^t by local SGD, and the server averages the results weighted by training-set size (as FedAvg).

The proximal term is differentiated, as the paper's solver does (its PerturbedGradientDescent adds mu(w - w^t) to each
stochastic gradient). mu = 0 is FedAvg bit for bit (tested). The paper's variable local work for stragglers (gamma-
inexact solutions) is not simulated: every sampled client runs the same local epochs."""
from __future__ import annotations

from dataclasses import dataclass

from pcl.algorithms.base import register
from pcl.algorithms.fedavg import FedAvg, FedAvgHparams
from pcl.algorithms.hparams import param
from pcl.engine import Objective, Prox, weighted_mean


@dataclass
class FedProxHparams(FedAvgHparams):
    """``mu``: strength of the proximal term (the paper tunes it in {0.001, 0.01, 0.1, 1})."""

    mu: float = param(0.01, ge=0)


@register("fedprox")
class FedProx(FedAvg):
    Hparams = FedProxHparams

    def round(self, state: dict, t: int) -> dict:
        chosen = self.ctx.sample_clients(self.hp.client_fraction)
        start = self.ctx.broadcast(state["global"], len(chosen))
        objective = Objective() + Prox("anchor", self.hp.mu, exact=False)
        local = self.ctx.local_train(start, chosen, self.hp, objective=objective, extras={"anchor": start})
        return {**state, "global": weighted_mean(local, self.ctx.train.n[chosen])}
