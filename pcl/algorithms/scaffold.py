"""SCAFFOLD (Karimireddy, Kale, Mohri, Reddi, Stich, Suresh, ICML 2020, "SCAFFOLD: Stochastic Controlled Averaging
for Federated Learning"), Algorithm 1 with control-variate option II.

The server keeps the model x and a control variate c, each client i its own c_i (all start at zero). A sampled client
runs K local steps y <- y - eta_l (g_i(y) - c_i + c) from x: the correction c - c_i is the engine objective
``Linear("correction")``, whose penalty <c - c_i, y> adds exactly c - c_i to every stochastic gradient. Then
(option II) c_i+ = c_i - c + (x - y)/(K eta_l), and the server moves x <- x + eta_g mean_S(y - x) and
c <- c + sum_S p_i (c_i+ - c_i). All clients train in one vectorized ``ctx.local_train`` call.

Averages are weighted by data size as in ``fedavg`` (mean_S by n_i over the sampled clients, p_i = n_i / sum of all
n), so SCAFFOLD minimises the same objective as the other baselines and c stays the weighted mean of the c_i; with
equal client sizes these are exactly Algorithm 1's 1/|S| and 1/N. Option II's (x - y)/(K eta_l) is the mean corrected
gradient of plain SGD steps, so only ``optimizer: sgd`` is accepted; K is each client's own step count (it differs
between clients when local training is set in epochs)."""
from __future__ import annotations

from dataclasses import dataclass

from pcl.algorithms.base import Algorithm, register
from pcl.algorithms.fedavg import FedAvgHparams
from pcl.algorithms.hparams import param
from pcl.engine import Linear, Objective, put, take, weighted_mean
from pcl.engine.batches import steps_for


@dataclass
class ScaffoldHparams(FedAvgHparams):
    """``global_lr``: the server step size eta_g (1 makes x the mean of the sampled clients' models, as FedAvg);
    ``lr`` is the local step size eta_l."""

    global_lr: float = param(1.0, gt=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.optimizer != "sgd":
            raise ValueError(f"optimizer={self.optimizer!r}: SCAFFOLD's control variates (option II) assume plain "
                             "SGD local steps; use optimizer: sgd")


@register("scaffold")
class Scaffold(Algorithm):
    Hparams = ScaffoldHparams

    def init(self) -> dict:
        x = self.ctx.init_params()
        zeros = lambda *k: {n: v.new_zeros(*k, *v.shape) for n, v in x.items()}  # noqa: E731
        return {"global": x, "c": zeros(), "c_clients": zeros(self.ctx.num_clients)}

    def round(self, state: dict, t: int) -> dict:
        hp, ctx = self.hp, self.ctx
        chosen = ctx.sample_clients(hp.client_fraction)
        x, c, c_i = state["global"], state["c"], take(state["c_clients"], chosen)
        y = ctx.local_train(ctx.broadcast(x, len(chosen)), chosen, hp, objective=Objective() + Linear("correction"),
                            extras={"correction": {n: c[n] - v for n, v in c_i.items()}})
        n = ctx.train.n[chosen]
        k = steps_for(n.cpu(), hp.batch_size, hp.local_epochs, hp.local_steps, hp.drop_last).double() * hp.lr
        rows = lambda a, v: a.to(v).view(-1, *[1] * (v.dim() - 1))  # noqa: E731  per-client [m] against [m, ...]
        c_new = {p: c_i[p] - c[p] + rows(1 / k, v) * (x[p] - v) for p, v in y.items()}  # option II
        step = weighted_mean({p: v - x[p] for p, v in y.items()}, n)
        share = n.double() / ctx.train.n.sum()
        return {"global": {p: x[p] + hp.global_lr * step[p] for p in x},
                "c": {p: c[p] + (rows(share, v) * (c_new[p] - c_i[p])).sum(0) for p, v in c_new.items()},
                "c_clients": put(state["c_clients"], chosen, c_new)}

    def personalized(self, state: dict):
        return self.ctx.broadcast(state["global"])
