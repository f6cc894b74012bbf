"""Clustered Federated Learning (Sattler, Müller, Samek, IEEE TNNLS 2020, "Clustered Federated Learning: Model-Agnostic
Distributed Multi-Task Optimization under Privacy Constraints"), Algorithm 1: FedAvg within clusters, starting from
one cluster of all clients. When a cluster is near a stationary point of its joint objective (norm of its
size-weighted mean update below ``eps1``) while some member is not (its update norm above ``eps2``), the cluster is
bi-partitioned by the cosine similarities of its members' updates; the recursion happens over rounds, as splits of
splits.

The bi-partition follows the official code (felisat/clustered-federated-learning): complete-linkage agglomerative
clustering into 2 groups, here on the cosine distance 1 - similarity (the same merges as the code's -similarity:
linkage is invariant to a shift). The paper's criterion, the bi-partition of minimal maximal cross-similarity, is
exactly the single-linkage 2-cut (the maximum-spacing clustering), available as ``linkage="single"`` (tested against
brute force); complete linkage, the code's choice, is the default. Also as in the code: no split before
``warmup_rounds``, only clusters of at least ``min_split_size`` clients split, and the paper's check of a split's
separation gap against the clients' risk-approximation error (unknown in practice) is left out. Updates are averaged
weighted by |D_i| as in Algorithm 1 (the code averages uniformly). Every client trains every round (the paper has no
client sampling); splits are applied first, then updates are averaged within the new clusters, as the code does.

Local training, update norms, the cosine-similarity matrix and the within-cluster averaging (one K x K mixing
matrix) are vectorized over clients; the per-cluster split test and its agglomerative clustering loop over
clusters. Each client holds its cluster's model as its row of ``params``; ids are recorded every round as ``cluster``,
with each client's cluster's ``mean_update_norm`` and ``max_update_norm`` (what eps1 and eps2 are compared with).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pcl.algorithms.base import Algorithm, LocalSGD, register
from pcl.algorithms.hparams import param
from pcl.engine import mix


@dataclass
class CFLHparams(LocalSGD):
    """``eps1``/``eps2``: split when a cluster's mean update norm is < eps1 and its max client update norm > eps2. The
    paper's guidance: eps1 as small as the stationarity of the joint (FedAvg) objective allows, so splits happen only
    after FL has converged, and eps2 above the update norms a client of a congruent cluster still has there; both
    scale with lr, local steps and model, so tune them per task (the code's demo: 0.4 and 1.6). ``warmup_rounds``: no
    split before (code: 20); ``min_split_size``: only clusters this large split (code: more than 2 clients);
    ``linkage``: how the bi-partition is found (see the module docstring)."""

    eps1: float = param(0.4, gt=0)
    eps2: float = param(1.6, gt=0)
    warmup_rounds: int = param(20, ge=0)
    min_split_size: int = param(3, ge=2)
    linkage: str = param("complete", choices=("complete", "single"))


def bipartition(similarity: torch.Tensor, linkage: str = "complete") -> torch.Tensor:
    """0/1 labels of the agglomerative 2-partition of a cosine-similarity matrix; the group of the first member is
    0, so the labels do not depend on sklearn's label order."""
    from sklearn.cluster import AgglomerativeClustering  # ~1 s to import: only when a split is tested

    distance = (1 - similarity).clamp_min(0).double().cpu().numpy()
    labels = AgglomerativeClustering(n_clusters=2, metric="precomputed", linkage=linkage).fit_predict(distance)
    return torch.as_tensor(labels != labels[0], dtype=torch.long)


@register("cfl")
class CFL(Algorithm):
    Hparams = CFLHparams

    def init(self) -> dict:
        k = self.ctx.num_clients
        return {"params": self.ctx.broadcast(self.ctx.init_params()), "cluster": torch.zeros(k, dtype=torch.long)}

    def within_cluster_mean(self, cluster: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """K x K mixing matrix: row i averages i's cluster weighted by training-set size (Algorithm 1's |D_i|/|D_c|)."""
        same = (cluster[:, None] == cluster[None, :]).to(dtype)
        w = same * self.ctx.train.n.cpu().to(dtype)[None, :]
        return w / w.sum(1, keepdim=True)

    def round(self, state: dict, t: int) -> dict:
        params, cluster = state["params"], state["cluster"].clone()
        local = self.ctx.local_train(params, torch.arange(self.ctx.num_clients), self.hp)
        update = {n: local[n] - params[n] for n in params}
        flat = torch.cat([v.flatten(1) for v in update.values()], 1).cpu()
        norms = flat.norm(dim=1)
        mean_norm = (self.within_cluster_mean(cluster, flat.dtype) @ flat).norm(dim=1)
        max_norm = torch.where(cluster[:, None] == cluster[None, :], norms[None, :], 0.0).amax(1)
        unit = flat / norms.clamp_min(1e-12)[:, None]
        for c in cluster.unique().tolist():
            members = (cluster == c).nonzero().flatten()
            i = members[0]
            if (t >= self.hp.warmup_rounds and len(members) >= self.hp.min_split_size
                    and mean_norm[i] < self.hp.eps1 and max_norm[i] > self.hp.eps2):
                side = bipartition(unit[members] @ unit[members].T, self.hp.linkage)
                cluster[members[side == 1]] = int(cluster.max()) + 1
        self.ctx.diagnose("cluster", cluster)
        self.ctx.diagnose("mean_update_norm", mean_norm)
        self.ctx.diagnose("max_update_norm", max_norm)
        mixed = mix(self.within_cluster_mean(cluster, torch.float64), update)
        return {"params": {n: params[n] + mixed[n] for n in params}, "cluster": cluster}

    def personalized(self, state: dict):
        return state["params"]
