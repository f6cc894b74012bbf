"""What FedSim, FedAlt and pFedMe share: Pillutla et al.'s server round (ICML 2022, "Federated Learning with Partial
Model Personalization", official code ``pfl/optim/base.py::run_one_round``) and partial-personalization state.

A round samples m of n clients without replacement, each runs the algorithm's ``local_update`` from the broadcast
shared part u^(k) and its personal part v_i, the server forms the pseudo-gradient g = u^(k) - sum_i w_i u_i / sum_i w_i
over the shared names and applies ``ServerOpt`` (SGD lr 1 = FedAvg averaging, Adam = FedAdam). w_i = local batches per
epoch by default, as the code (its quirk 3: "a proxy for data size"); ``weighting: examples`` is FedAvg's n_i,
``uniform`` the paper's analysis (1/m).

State: ``global`` (the full model, unstacked: u^(k), and the personal parts' default value v^0, the initial or
pre-trained one, which stateless clients reset to), ``personal`` (stacked [n, ...] v_i over the personal names only;
absent for stateless clients) and ``server`` (the server optimizer's state).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pcl.algorithms.base import Algorithm
from pcl.algorithms.fedavg import FedAvgHparams
from pcl.algorithms.hparams import param
from pcl.engine import Objective, Params, Prox, put, take
from pcl.engine.batches import steps_for
from pcl.engine.server_opt import SERVER_OPTIMIZERS, ServerOpt, pseudo_gradient
from pcl.models import param_names


@dataclass
class ServerHparams(FedAvgHparams):
    """``clients_per_round``: m (the paper's 10 for EMNIST, 50 for StackOverflow/GLDv2; null = ``client_fraction``).
    ``server_optimizer``/``server_lr``/``server_momentum``: ServerOpt on the pseudo-gradient (EMNIST: sgd 1.0;
    StackOverflow/GLDv2: adam 5e-5). ``weighting`` of the clients' models: ``batches`` (the code), ``examples`` or
    ``uniform``. ``init_from``: a ``.pt`` file holding a dict {parameter name: tensor} (the full model, unstacked,
    loaded with ``torch.load(weights_only=True)``) to start from, e.g. a FedAvg pre-training run's final model; only
    ``adapter`` parameters may be missing from it, and they keep their identity initialisation (the
    paper's pipeline: FedAvg pre-training, then personalization)."""

    clients_per_round: int | None = param(None, ge=1)
    server_optimizer: str = param("sgd", choices=SERVER_OPTIMIZERS)
    server_lr: float = param(1.0, gt=0)
    server_momentum: float = param(0.0, ge=0, lt=1)
    weighting: str = param("batches", choices=("batches", "examples", "uniform"))
    init_from: str | None = None


def load_init(ctx, path: str) -> Params:
    """The model's initial parameters with those saved in ``path`` (see ``ServerHparams.init_from``)."""
    init = ctx.init_params()
    saved = torch.load(path, map_location=ctx.device, weights_only=True)
    if not isinstance(saved, dict) or not all(isinstance(v, torch.Tensor) for v in saved.values()):
        raise ValueError(f"init_from {path}: expected a dict of parameter name -> tensor")
    unknown = sorted(set(saved) - set(init))
    adapters = param_names(ctx.model, "adapter") if "adapter" in ctx.model.param_groups() else []
    missing = sorted(set(init) - set(saved) - set(adapters))
    bad = [n for n in saved if n in init and saved[n].shape != init[n].shape]
    if unknown or missing or bad:
        raise ValueError(f"init_from {path}: does not fit the model (unknown {unknown}, missing {missing}, "
                         f"wrong shape {bad})")
    return {n: saved[n].to(v.dtype).clone() if n in saved else v for n, v in init.items()}


class ServerRound(Algorithm):
    """The round template; a subclass sets ``self.personal`` (parameter names kept on the clients, possibly none)
    before calling ``__init__`` and implements ``local_update``."""

    Hparams = ServerHparams
    personal: list[str] = []

    def __init__(self, hp, ctx) -> None:
        super().__init__(hp, ctx)
        names = [n for n, _ in ctx.model.named_parameters()]
        self.shared = [n for n in names if n not in self.personal]
        if not self.shared:
            raise ValueError(f"{self.name}: every parameter is personal, nothing is shared (that is Local training)")
        if hp.clients_per_round is not None and hp.clients_per_round > ctx.num_clients:
            raise ValueError(f"clients_per_round={hp.clients_per_round}: the federation has {ctx.num_clients} clients")
        self.opt = ServerOpt(hp.server_optimizer, hp.server_lr, hp.server_momentum)
        self.stateful = False  # whether clients keep v_i between rounds (state['personal'])

    def local_update(self, params: Params, clients: torch.Tensor, state: dict) -> Params:
        """Stacked full models of ``clients`` after their local work (shared names: u_i, personal names: v_i)."""
        raise NotImplementedError

    def init(self) -> dict:
        w = load_init(self.ctx, self.hp.init_from) if self.hp.init_from else self.ctx.init_params()
        state = {"global": w, "server": self.opt.init({n: w[n] for n in self.shared})}
        if self.stateful:
            v0 = self.ctx.broadcast({n: w[n] for n in self.personal})
            state["personal"] = {n: v.clone() for n, v in v0.items()}
        return state

    def start(self, state: dict, clients: torch.Tensor) -> Params:
        """u^(k) for every client in ``clients``, with its stored v_i (stateful) or the default v^0 (stateless)."""
        u = state["global"]
        own = take(state["personal"], clients) if self.stateful else {}
        return {**self.ctx.broadcast(u, len(clients)), **own}

    def weights(self, clients: torch.Tensor) -> torch.Tensor:
        n = self.ctx.train.n[clients]  # on the parameters' device, as weighted_mean needs
        if self.hp.weighting == "examples":
            return n
        if self.hp.weighting == "uniform":
            return torch.ones_like(n)
        return steps_for(n, self.hp.batch_size, 1.0, None, self.hp.drop_last)  # batches per epoch, as the code

    def round(self, state: dict, t: int) -> dict:
        clients = self.ctx.sample_clients(self.hp.client_fraction, self.hp.clients_per_round)
        new = self.local_update(self.start(state, clients), clients, state)
        u = state["global"]
        g = pseudo_gradient(u, {n: new[n] for n in self.shared}, self.weights(clients))
        u, server = self.opt.step(u, g, state["server"])
        out = {**state, "global": u, "server": server}
        if self.stateful:
            out["personal"] = put(state["personal"], clients, {n: new[n] for n in self.personal})
        return out


@dataclass
class PartialHparams(ServerHparams):
    """``personal``: the parameter group kept on the clients (``head``, ``input``, ``adapter``, ``-head`` = all but
    the head, ...; ``none`` = nothing, the algorithm is then FedAvg with a server optimizer). ``personal_lr``: gamma_v
    (null = ``lr`` = gamma_u, as the code, which has one client lr). ``stateless_clients``: v_i is reset to its
    default whenever a client is sampled and the evaluated v_i comes only from the fine-tune (the code's
    ``--stateless_clients``). ``finetune_epochs``: the final local fine-tune of the personal part (5 in the paper's
    main tables; 0 = none) at step ``finetune_lr`` (null = ``lr``; the paper uses the client lr: 1e-2 EMNIST).
    ``personal_l2``: c in c ||v - v^0||^2 added to every personal update and the fine-tune, the pull to the default
    (pre-trained) value of the paper's generalization study (``--client_var_l2_reg_coef --client_var_prox_to_init``;
    grid 1000, 100, 10, 1, 0.1); applied as the exact proximal map after each step, which equals the code's
    differentiated term to first order in lr*c and stays stable for c = 1000 (where the code's step would not)."""

    lr: float = param(0.01, gt=0)
    personal: str = "head"  # a group, '-group' or 'none'; checked against the model's declared groups
    personal_lr: float | None = param(None, ge=0)
    stateless_clients: bool = False
    finetune_epochs: float = param(5.0, ge=0)
    finetune_lr: float | None = param(None, gt=0)
    personal_l2: float = param(0.0, ge=0)


class PartialPersonalization(ServerRound):
    """Shared by FedSim and FedAlt: the personal part, and evaluation after a local fine-tune of it (recomputed at
    every evaluation from the current state with the evaluation phase's generators, as ``fedavg_ft``, so how often a
    run evaluates changes nothing; the stored v_i are not overwritten by it)."""

    Hparams = PartialHparams

    def __init__(self, hp, ctx) -> None:
        names = [n for n, _ in ctx.model.named_parameters()]
        self.personal = [] if hp.personal == "none" else ctx.trainable(hp.personal) or names  # 'all' gives None
        super().__init__(hp, ctx)
        self.stateful = bool(self.personal) and not hp.stateless_clients

    @property
    def personal_lr(self) -> float:
        return self.hp.lr if self.hp.personal_lr is None else self.hp.personal_lr

    def personalized(self, state: dict) -> Params:
        everyone = torch.arange(self.ctx.num_clients)
        params = self.start(state, everyone)
        if not (self.personal and self.hp.finetune_epochs):
            return params
        lr = self.hp.lr if self.hp.finetune_lr is None else self.hp.finetune_lr
        return self.ctx.local_train(params, everyone, self.hp, trainable=self.personal, purpose="finetune", lr=lr,
                                    local_epochs=self.hp.finetune_epochs, local_steps=None,
                                    **self.regularizer(state, everyone))

    def regularizer(self, state: dict, clients: torch.Tensor) -> dict:
        """``objective``/``extras`` for ``local_train``: the pull of v to v^0 (nothing when ``personal_l2`` is 0)."""
        if not self.hp.personal_l2:
            return {}
        v0 = self.ctx.broadcast({n: state["global"][n] for n in self.personal}, len(clients))
        return {"objective": Objective() + Prox("v0", 2 * self.hp.personal_l2, exact=True), "extras": {"v0": v0}}

    def group_lr(self) -> dict[str, float]:
        """``{group: gamma_v}`` for the groups making up the personal part (empty when gamma_v = gamma_u)."""
        if self.hp.personal_lr is None or not self.personal:
            return {}
        out = {}
        for group, members in self.ctx.model.param_groups().items():
            inside = [n for n in members if n in self.personal]
            if inside and len(inside) != len(members):
                raise ValueError(f"personal {self.hp.personal!r} splits group {group!r}; a separate personal_lr "
                                 "needs whole groups")
            if inside:
                out[group] = self.hp.personal_lr
        return out
