"""Per-FedAvg (Fallah, Mokhtari, Ozdaglar, NeurIPS 2020, "Personalized Federated Learning with Theoretical
Guarantees: A Model-Agnostic Meta-Learning Approach"), Algorithm 1: FedAvg on the MAML objective
F_i(w) = f_i(w - alpha grad f_i(w)), so that the global model is good after one local gradient step.

Each local step of a sampled client draws independent batches D, D' (and D'' for HF) and takes
    w_tilde = w - alpha grad f_i(w; D),
    FO: w <- w - beta grad f_i(w_tilde; D'),
    HF: w <- w - beta (I - alpha H_i(w; D'')) grad f_i(w_tilde; D'),
with the Hessian-vector product by the paper's finite difference H u ~ (grad f(w + delta u) - grad f(w - delta u)) /
(2 delta) (``finite_difference_hvp``). The server averages the clients' models (by data size, as ``fedavg``).
Evaluation adapts the global model by ``eval_steps`` gradient steps of size alpha on each client's training data
(the paper's one step; recomputed at every evaluation with the evaluation phase's generators, as ``fedavg_ft``).

Vectorized: one engine step is one Per-FedAvg step. The engine draws a batch of ``parts x batch_size`` samples
(consecutive slices of a client's shuffled stream: disjoint unless the batch wraps past an epoch's end) and the
objective splits it; its value is the surrogate <sg(d), w> whose gradient is the update direction d above
(sg = stop-gradient), and the engine's optimizer takes the step with ``lr`` = beta. ``torch.func.grad`` computes the
inner gradients, so the same step runs vmapped over clients or in the reference loop."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import grad

from pcl.algorithms.base import register
from pcl.algorithms.fedavg import FedAvg, FedAvgHparams
from pcl.algorithms.hparams import param
from pcl.engine import Objective, Params, weighted_mean


@dataclass
class PerFedAvgHparams(FedAvgHparams):
    """``alpha``: the inner (adaptation) step size; ``lr`` is the outer step size beta; ``batch_size`` is the size of
    each of D, D', D''; ``variant``: 'fo' (first order) or 'hf' (Hessian-free); ``delta``: the finite-difference step
    of HF; ``eval_steps``: adaptation steps before predicting (the paper's one). The paper tunes alpha and beta per
    data set; the defaults here suit the small federations of this package. A step consumes ``parts`` batches, so an
    epoch takes 1/2 (FO) or 1/3 (HF) of FedAvg's steps: at an equal epoch budget beta needs a larger lr than FedAvg."""

    alpha: float = param(0.01, ge=0)
    variant: str = param("hf", choices=("fo", "hf"))
    delta: float = param(0.001, gt=0)
    eval_steps: int = param(1, ge=1)


def finite_difference_hvp(gradient, params: Params, u: Params, delta: float) -> Params:
    """H(params) u ~ (gradient(params + delta u) - gradient(params - delta u)) / (2 delta), Per-FedAvg's HF estimate
    (exact for a quadratic loss up to rounding)."""
    plus = gradient({n: p + delta * u[n] for n, p in params.items()})
    minus = gradient({n: p - delta * u[n] for n, p in params.items()})
    return {n: (plus[n] - minus[n]) / (2 * delta) for n in params}


@dataclass(frozen=True)
class MetaObjective(Objective):
    """One client's Per-FedAvg direction as the gradient of a surrogate; the batch holds D, D' (and D'')."""

    alpha: float = 0.0
    variant: str = "hf"
    delta: float = 0.001

    @property
    def parts(self) -> int:
        return 3 if self.variant == "hf" else 2

    def value(self, model, trained, frozen, x, y, extras):
        def loss(p, xb, yb):
            return self.loss(self.predict(model, {**p, **frozen}, xb, extras), yb, extras)
        g = grad(loss)
        (x1, x2, *x3), (y1, y2, *y3) = x.chunk(self.parts), y.chunk(self.parts)
        w = {n: p.detach() for n, p in trained.items()}
        inner = g(w, x1, y1)
        d = g({n: p - self.alpha * inner[n] for n, p in w.items()}, x2, y2)
        if self.variant == "hf":
            hv = finite_difference_hvp(lambda q: g(q, x3[0], y3[0]), w, d, self.delta)
            d = {n: d[n] - self.alpha * hv[n] for n in d}
        return sum((d[n].detach() * p).sum() for n, p in trained.items())


@register("perfedavg")
class PerFedAvg(FedAvg):
    Hparams = PerFedAvgHparams

    def round(self, state: dict, t: int) -> dict:
        hp, ctx = self.hp, self.ctx
        objective = MetaObjective(alpha=hp.alpha, variant=hp.variant, delta=hp.delta)
        chosen = ctx.sample_clients(hp.client_fraction)
        local = ctx.local_train(ctx.broadcast(state["global"], len(chosen)), chosen, hp, objective=objective,
                                batch_size=objective.parts * hp.batch_size)
        return {**state, "global": weighted_mean(local, ctx.train.n[chosen])}

    def personalized(self, state: dict):
        if self.hp.alpha == 0:  # a zero step adapts nothing (and the engine refuses lr = 0)
            return super().personalized(state)
        everyone = torch.arange(self.ctx.num_clients)
        return self.ctx.local_train(self.ctx.broadcast(state["global"]), everyone, self.hp, purpose="finetune",
                                    lr=self.hp.alpha, local_steps=self.hp.eval_steps, local_epochs=None)
