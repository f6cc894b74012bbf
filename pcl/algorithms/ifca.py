"""IFCA, the Iterative Federated Clustering Algorithm (Ghosh, Chung, Yin, Ramchandran, NeurIPS 2020, "An Efficient
Framework for Clustered Federated Learning"), Algorithm 2 with the model-averaging option: the server keeps k cluster
models; every sampled client estimates its cluster as the model with the lowest loss on its training data, trains
that model locally, and the server averages the trained models per cluster.

Cluster estimation is one batched ``ctx.scores`` call over the [clients, k] mask; local training is one vectorized
call (row j starts from the model client j chose). The per-cluster average is a loop over the k clusters (not over
clients) so that it is FedAvg's ``weighted_mean`` exactly: with k = 1 IFCA is FedAvg (tested). The paper's clients
have equal data; clients are weighted by training-set size here, as FedAvg does, which reduces to its plain average.

The k models start from independent random initialisations, as in the paper's experiments; its remedy for a bad
start (several random restarts, keeping the best) is a choice of seeds at run level, not part of a run. A cluster
that no sampled client chose keeps its model. Each client predicts with the model that fits its training data best
now; the last cluster each client chose (-1 before it was first sampled) is recorded every round as ``cluster``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pcl.algorithms.base import Algorithm, register
from pcl.algorithms.fedavg import FedAvgHparams
from pcl.algorithms.hparams import param
from pcl.engine import Params, take, weighted_mean


@dataclass
class IFCAHparams(FedAvgHparams):
    """``num_clusters``: k, the number of cluster models (the paper sets it to the planted number: k = 2 and 4 on
    rotated MNIST/CIFAR, 2 on its synthetic mixtures of linear regressions)."""

    num_clusters: int = param(2, ge=1)


@register("ifca")
class IFCA(Algorithm):
    Hparams = IFCAHparams

    def init(self) -> dict:
        return {"models": self.ctx.init_params(independent=self.hp.num_clusters),
                "cluster": torch.full((self.ctx.num_clients,), -1, dtype=torch.long)}

    def estimate(self, models: Params, clients: torch.Tensor) -> torch.Tensor:
        """Each client's cluster: argmin over the k models of the loss on its training data."""
        mask = torch.zeros(self.ctx.num_clients, self.hp.num_clusters, dtype=torch.bool)
        mask[clients] = True
        return self.ctx.scores(models, "train", mask)["loss"][clients].argmin(1).cpu()

    def round(self, state: dict, t: int) -> dict:
        chosen = self.ctx.sample_clients(self.hp.client_fraction)
        models = state["models"]
        pick = self.estimate(models, chosen)
        local = self.ctx.local_train(take(models, pick), chosen, self.hp)
        n = self.ctx.train.n[chosen]
        new = {name: v.clone() for name, v in models.items()}
        for j in pick.unique().tolist():
            members = (pick == j).nonzero().flatten()
            for name, v in weighted_mean(take(local, members), n[members]).items():
                new[name][j] = v
        cluster = state["cluster"].clone()
        cluster[chosen] = pick
        self.ctx.diagnose("cluster", cluster)
        return {"models": new, "cluster": cluster}

    def personalized(self, state: dict) -> Params:
        return take(state["models"], self.estimate(state["models"], torch.arange(self.ctx.num_clients)))
