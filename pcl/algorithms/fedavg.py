"""FedAvg (McMahan et al., AISTATS 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data"): sample a fraction of clients, train locally from the global model, average the
results weighted by training-set size."""
from __future__ import annotations

from dataclasses import dataclass

from pcl.algorithms.base import Algorithm, LocalSGD, register
from pcl.algorithms.hparams import param
from pcl.engine import weighted_mean


@dataclass
class FedAvgHparams(LocalSGD):
    """``client_fraction``: share of clients sampled per round (McMahan et al.'s C; 1.0 = full participation)."""

    client_fraction: float = param(1.0, gt=0, le=1)


@dataclass
class FedAvgRunHparams(FedAvgHparams):
    """``frozen``: a parameter group of the model (e.g. ``adapter``) that keeps its initial value. Pre-training the
    model of Pillutla et al. (2022) with its zero-initialised residual adapters frozen is pre-training the model
    without adapters, to which identity adapters are added afterwards, as the paper does (docs/papers/
    partial-personalization.md §2.4)."""

    frozen: str | None = param(None)


@register("fedavg")
class FedAvg(Algorithm):
    Hparams = FedAvgRunHparams

    def init(self) -> dict:
        return {"global": self.ctx.init_params()}

    def round(self, state: dict, t: int) -> dict:
        chosen = self.ctx.sample_clients(self.hp.client_fraction)
        trainable = f"-{self.hp.frozen}" if self.hp.frozen else None
        local = self.ctx.local_train(self.ctx.broadcast(state["global"], len(chosen)), chosen, self.hp,
                                     trainable=trainable)
        return {**state, "global": weighted_mean(local, self.ctx.train.n[chosen])}

    def personalized(self, state: dict):
        return self.ctx.broadcast(state["global"])
