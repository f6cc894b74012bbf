"""pFedMe (Dinh, Tran, Nguyen, NeurIPS 2020, "Personalized Federated Learning with Moreau Envelopes"), Algorithm 1,
as the full-personalization baseline of Pillutla et al. (ICML 2022). Each sampled client, from w_{i,0} = w^t, for
each local batch D: solves theta~ ~= argmin_theta f_i(theta; D) + (lam/2)||theta - w_{i,r}||^2 (eq. 7) by
``inner_steps`` gradient steps of size ``inner_lr`` from theta = w_{i,r}, then w_{i,r+1} = w_{i,r} - lr lam (w_{i,r}
- theta~). The server applies ServerOpt to the pseudo-gradient (SGD with lr beta: w <- (1-beta) w + beta mean, the
paper's update; pcl.algorithms.partial).

Difference from the partial-personalization code (``pfl/optim/pfedme.py``, quirk 1): its ``get_l2_reg_pfedme``
detaches both operands, so the inner steps get NO proximal gradient (they are plain SGD on the batch from w). pcl
differentiates the proximal term, as eq. 7 and pFedMe's own code do. Like that code (and unlike pFedMe's, which
warm-starts theta across batches), theta restarts from the current w at each batch.

The personalized model evaluated is pFedMe's theta_i(w) = argmin f_i(theta) + (lam/2)||theta - w||^2 (eq. 2),
approximated at each evaluation by ``finetune_epochs`` of SGD on the client's training data from w (the paper's
tables fine-tune the pFedMe model for 5 epochs with an L2 pull to it, ``scripts/finetune/pfedme``); 0 evaluates w.
That is the inner problem again, so its step defaults to the personal step ``inner_lr``, not to the outer ``lr``
(pFedMe's eta: at the paper's eta = 0.005 a fine-tune at eta leaves w almost unchanged, and the large eta a small lam
needs overshoots: benchmark_classes2, lam 1, eta 0.3: 0.68 validation accuracy, 0.98 at inner_lr 0.1).

Step sizes: with an accurate inner solve, lam (w - theta~) is the gradient of the Moreau envelope (lam-smooth), so the
step on w is about ``lr`` times a gradient and stable for lr lam < 2; with K steps of size p, lam (w - theta~) ~
(1 - (1 - p lam)^K) grad f for small curvature, so a small ``inner_lr lam`` shrinks the step further.
The paper's MNIST setting (eta = 0.005, personal lr 0.1, lam = 15, K = 5, R = 20 local steps, beta = 1) runs
800 rounds; in a short run eta must be of the order of FedAvg's lr, which the defaults here are not.

The per-batch update is written as an ``Objective`` whose gradient in w is lam (w - stopgrad(theta~(w))), so both
engine backends run it unchanged. ``lam`` multiplies (1/2)||.||^2 as in the paper (the code's ``pfedme_reg_param`` r
multiplies ||.||^2 in the inner loss and r alone in the outer step).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import grad

from pcl.algorithms.base import register
from pcl.algorithms.hparams import param
from pcl.algorithms.partial import ServerHparams, ServerRound
from pcl.engine import Objective, Params, Prox


def inner_solve(loss, w: Params, lam: float, lr: float, steps: int, start: Params | None = None) -> Params:
    """``steps`` gradient steps on loss(theta) + (lam/2)||theta - w||^2 from ``start`` (default w), w held fixed."""
    w = {n: v.detach() for n, v in w.items()}
    prox = lambda th: loss(th) + 0.5 * lam * sum(((th[n] - w[n]) ** 2).sum() for n in th)  # noqa: E731
    theta = dict(w if start is None else start)
    for _ in range(steps):
        g = grad(prox)(theta)
        theta = {n: theta[n] - lr * g[n] for n in theta}
    return {n: v.detach() for n, v in theta.items()}


@dataclass(frozen=True)
class PFedMeStep(Objective):
    """(lam/2)||w - stopgrad(theta~(w))||^2: one SGD step of size lr on it is pFedMe's local update of w."""

    lam: float = 0.1
    inner_lr: float = 0.01
    inner_steps: int = 3

    def value(self, model, trained, frozen, x, y, extras):
        batch_loss = lambda p: self.loss(self.predict(model, {**p, **frozen}, x, extras), y, extras)  # noqa: E731
        theta = inner_solve(batch_loss, trained, self.lam, self.inner_lr, self.inner_steps)
        return 0.5 * self.lam * sum(((trained[n] - theta[n]) ** 2).sum() for n in trained)


@dataclass
class PFedMeHparams(ServerHparams):
    """``lam``: the Moreau-envelope strength (the partial-personalization code's reg 0.1); ``inner_steps``: K = 3
    (the code); ``inner_lr``: the inner step (null = ``lr``, as the code); ``finetune_epochs``/``finetune_lr``: the
    personalized model at evaluation (5 epochs, as the paper's fine-tune; 0 = evaluate w) at the inner step (null =
    ``inner_lr``). Dinh et al.'s MNIST values: lr 0.005, inner_lr 0.1, lam 15, inner_steps 5 (see above)."""

    lr: float = param(0.01, gt=0)
    lam: float = param(0.1, gt=0)
    inner_steps: int = param(3, ge=1)
    inner_lr: float | None = param(None, gt=0)
    finetune_epochs: float = param(5.0, ge=0)
    finetune_lr: float | None = param(None, gt=0)


@register("pfedme")
class PFedMe(ServerRound):
    Hparams = PFedMeHparams

    @property
    def inner_lr(self) -> float:
        return self.hp.lr if self.hp.inner_lr is None else self.hp.inner_lr

    def local_update(self, params, clients, state):
        hp = self.hp
        step = PFedMeStep(lam=hp.lam, inner_lr=self.inner_lr, inner_steps=hp.inner_steps)
        return self.ctx.local_train(params, clients, hp, objective=step)

    def personalized(self, state: dict) -> Params:
        w = self.ctx.broadcast(state["global"])
        if not self.hp.finetune_epochs:
            return w
        everyone = torch.arange(self.ctx.num_clients)
        objective = Objective() + Prox("anchor", self.hp.lam, exact=False)  # eq. 2, differentiated as eq. 7
        lr = self.inner_lr if self.hp.finetune_lr is None else self.hp.finetune_lr
        return self.ctx.local_train(w, everyone, self.hp, objective=objective, extras={"anchor": w}, purpose="finetune",
                                    local_epochs=self.hp.finetune_epochs, local_steps=None, lr=lr)
