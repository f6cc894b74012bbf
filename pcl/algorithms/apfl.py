"""APFL (Deng, Kamani, Mahdavi 2020, "Adaptive Personalized Federated Learning", arXiv:2003.13461), Algorithm 1.

Each client keeps a personal model v_i and a mixing weight alpha_i; it predicts with the parameter interpolation
v_bar_i = alpha_i v_i + (1 - alpha_i) w (the paper's mixed model: parameters are mixed, not predictions). At every
local step a sampled client takes, on the same minibatch, w_i <- w_i - eta grad f_i(w_i) (FedAvg's local step) and
v_i <- v_i - eta alpha_i grad f_i(v_bar_i) (the gradient of f_i(v_bar_i) in v_i), and with ``adaptive`` also
alpha_i <- alpha_i - eta_alpha <v_i - w_i, grad f_i(v_bar_i)> projected onto [0, 1], at every step as in the paper
(the authors' FedTorch code clips the same way but updates alpha once per round and adds a 0.02 alpha term that the
paper does not have; we follow the paper).
The server averages the w_i (FedAvg, by data size). alpha = 0 is FedAvg's model, alpha = 1 is Local (both tested).

Vectorized: the three updates are one engine step on a joint parameter set {w/., v/., alpha} whose objective is
f_i(w) + f_i(alpha v + (1 - alpha) sg(w)) (sg = stop-gradient), so its gradient in w is grad f_i(w) alone and in
(v, alpha) that of f_i(v_bar), exactly the simultaneous updates above. Only the sampled clients train v_i and alpha_i,
as in the official code. Evaluation mixes v_i with the current global w."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pcl.algorithms.base import Algorithm, register
from pcl.algorithms.fedavg import FedAvgHparams
from pcl.algorithms.hparams import param
from pcl.engine import Objective, put, take, weighted_mean

W, V = "w/", "v/"


@dataclass
class APFLHparams(FedAvgHparams):
    """``alpha``: the (initial) mixing weight (the paper's experiments use 0.25, 0.5 and 0.75); ``adaptive``: learn
    alpha_i per client by gradient descent with step ``alpha_lr`` (the official code uses the local step size)."""

    alpha: float = param(0.5, ge=0, le=1)
    adaptive: bool = param(False)
    alpha_lr: float = param(0.05, gt=0)


def _part(p: dict, prefix: str) -> dict:
    return {n[len(prefix):]: v for n, v in p.items() if n.startswith(prefix)}


@dataclass(frozen=True)
class JointObjective(Objective):
    """f(w) + f(alpha v + (1 - alpha) sg(w)) on one client's joint parameters; alpha is trained or an extra."""

    def value(self, model, trained, frozen, x, y, extras):
        p = {**trained, **frozen}
        w, v = _part(p, W), _part(p, V)
        a = p.get("alpha", extras.get("alpha"))
        mixed = {n: a * v[n] + (1 - a) * w[n].detach() for n in v}
        data = lambda q: self.loss(self.predict(model, q, x, extras), y, extras)  # noqa: E731
        return data(w) + data(mixed)

    def after_step(self, trained, extras, lrs):
        return {**trained, "alpha": trained["alpha"].clamp(0, 1)} if "alpha" in trained else trained


@register("apfl")
class APFL(Algorithm):
    Hparams = APFLHparams

    def init(self) -> dict:
        w = self.ctx.init_params()
        alpha = torch.full((self.ctx.num_clients,), self.hp.alpha, device=self.ctx.device)
        return {"global": w, "personal": self.ctx.broadcast(w), "alpha": alpha}

    def round(self, state: dict, t: int):
        ctx, hp = self.ctx, self.hp
        chosen = ctx.sample_clients(hp.client_fraction)
        alpha = state["alpha"][chosen]
        joint = {**{W + n: p for n, p in ctx.broadcast(state["global"], len(chosen)).items()},
                 **{V + n: p for n, p in take(state["personal"], chosen).items()}}
        if hp.adaptive:
            joint["alpha"] = alpha
        # the trainer directly: alpha's own step size is not a model parameter group that ctx.local_train knows
        out = ctx.trainer.train(joint, ctx.train, chosen, hp.local_spec(), generator=ctx.rng("batches"),
                                objective=JointObjective(), extras={} if hp.adaptive else {"alpha": alpha},
                                lrs={"alpha": hp.alpha_lr})
        new_alpha = state["alpha"].clone()
        new_alpha[chosen] = out.get("alpha", alpha)
        state = {"global": weighted_mean(_part(out, W), ctx.train.n[chosen]),
                 "personal": put(state["personal"], chosen, _part(out, V)), "alpha": new_alpha}
        return (state, {"alpha": new_alpha}) if hp.adaptive else state

    def personalized(self, state: dict):
        out = {}
        for n, v in state["personal"].items():
            a = state["alpha"].to(v).view(-1, *[1] * (v.dim() - 1))
            out[n] = a * v + (1 - a) * state["global"][n]
        return out
