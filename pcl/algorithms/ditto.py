"""Ditto (Li, Hu, Beirami, Smith, ICML 2021, "Ditto: Fair and Robust Federated Learning Through
Personalization"), Algorithm 1: the global model w is trained by FedAvg; each sampled client k also updates
its personal model v_k on F_k(v) + (lam/2)||v - w||^2, starting from its previous v_k.

The proximal term is applied as an exact proximal step after each stochastic gradient step (``Prox(exact=True)``
in ``pcl.engine.objective``), which equals Ditto's explicit step to first order in lr*lam and stays stable
for any lam: lam = 0 is Local training, lam -> infinity gives FedAvg's model (both limits are tested)."""
from __future__ import annotations

from dataclasses import dataclass

from pcl.algorithms.base import Algorithm, register
from pcl.algorithms.fedavg import FedAvgHparams
from pcl.algorithms.hparams import param
from pcl.engine import Objective, Prox, put, take, weighted_mean


@dataclass
class DittoHparams(FedAvgHparams):
    """``lam``: strength of the pull to the global model (Ditto's lambda; the paper tunes it in
    {0.05, 0.1, 0.2, 0.5, 1, 2}). ``personal_epochs``: local epochs of the personal update per round."""

    lam: float = param(0.1, ge=0)
    personal_epochs: float = param(1.0, gt=0)


@register("ditto")
class Ditto(Algorithm):
    Hparams = DittoHparams

    def init(self) -> dict:
        w = self.ctx.init_params()
        return {"global": w, "personal": self.ctx.broadcast(w)}

    @property
    def objective(self) -> Objective:
        return Objective() + Prox("anchor", self.hp.lam, exact=True)

    def round(self, state: dict, t: int) -> dict:
        chosen = self.ctx.sample_clients(self.hp.client_fraction)
        w, m = state["global"], len(chosen)
        anchor = self.ctx.broadcast(w, m)
        personal = self.ctx.local_train(take(state["personal"], chosen), chosen, self.hp, objective=self.objective,
                                        extras={"anchor": anchor}, local_epochs=self.hp.personal_epochs,
                                        local_steps=None)
        local = self.ctx.local_train(self.ctx.broadcast(w, m), chosen, self.hp)
        return {"global": weighted_mean(local, self.ctx.train.n[chosen]),
                "personal": put(state["personal"], chosen, personal)}

    def personalized(self, state: dict):
        return state["personal"]
