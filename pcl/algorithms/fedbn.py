"""FedBN (Li, Jiang, Zhang, Kamp, Dou, ICLR 2021, "FedBN: Federated Learning on Non-IID Features via Local Batch
Normalization"), Algorithm 1: FedAvg in which every client keeps its normalisation layers' parameters local; the server
averages (by data size) only the other parameters, and a client predicts with the shared ones and its own.

The normalisation parameters are the model's parameter group ``norm``; a model without one is refused. The models
carry no buffers (no running statistics), so the local part of the state is exactly those parameters: each client's
rows start from the common initialisation and change only when that client trains. Vectorized as FedAvg: one
``ctx.local_train`` call trains all sampled clients, each from the global shared part and its own norm part."""
from __future__ import annotations

import torch

from pcl.algorithms.base import Algorithm, register
from pcl.algorithms.fedavg import FedAvgHparams
from pcl.engine import put, take, weighted_mean
from pcl.models import param_names


@register("fedbn")
class FedBN(Algorithm):
    Hparams = FedAvgHparams

    def __init__(self, hp, ctx) -> None:
        super().__init__(hp, ctx)
        groups = ctx.model.param_groups() if hasattr(ctx.model, "param_groups") else {}
        if not groups.get("norm"):
            raise ValueError(f"fedbn keeps normalisation layers local, but model {type(ctx.model).__name__} has no "
                             f"'norm' parameter group (it declares {sorted(g for g, m in groups.items() if m)}); "
                             "use a model with normalisation layers")
        self.norm = param_names(ctx.model, "norm")  # a list: model order keeps the state byte-stable

    def init(self) -> dict:
        w = self.ctx.init_params()
        return {"shared": {n: v for n, v in w.items() if n not in self.norm},
                "norm": take(self.ctx.broadcast({n: w[n] for n in self.norm}), torch.arange(self.ctx.num_clients))}

    def _models(self, state: dict, clients: torch.Tensor) -> dict:
        """The stacked models of ``clients``: the global shared parameters with each client's own norm parameters."""
        mine = take(state["norm"], clients)
        shared = self.ctx.broadcast(state["shared"], len(clients))
        return {n: mine[n] if n in self.norm else shared[n] for n, _ in self.ctx.model.named_parameters()}

    def round(self, state: dict, t: int) -> dict:
        chosen = self.ctx.sample_clients(self.hp.client_fraction)
        local = self.ctx.local_train(self._models(state, chosen), chosen, self.hp)
        return {"shared": weighted_mean({n: local[n] for n in state["shared"]}, self.ctx.train.n[chosen]),
                "norm": put(state["norm"], chosen, {n: local[n] for n in self.norm})}

    def personalized(self, state: dict):
        return self._models(state, torch.arange(self.ctx.num_clients))
