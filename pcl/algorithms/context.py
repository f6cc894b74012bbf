"""What an algorithm sees of a run: the model template, every client's data, the trainer, the topology, the run's
RNG tree and a place for per-round diagnostics."""
from __future__ import annotations

import torch
from torch import nn

from pcl.data.federation import Federation
from pcl.data.types import ClientData
from pcl.engine import LocalTrainer, Objective, Params, broadcast
from pcl.engine.objective import Extras
from pcl.engine.scores import scores
from pcl.models import param_names
from pcl.rng import RNGTree

Trainable = str | list[str] | None


class Context:
    def __init__(self, model: nn.Module, federation: Federation, trainer: LocalTrainer, seed: int = 0,
                 topology=None, device: torch.device | str = "cpu") -> None:
        self.model = model
        self.federation = federation
        self.trainer = trainer
        self.rngs = RNGTree(seed)
        self.graph = topology
        self.num_clients = federation.num_clients
        self.device = torch.device(device)
        self.train = federation.client_data("train", self.device)
        self._diagnostics: dict[str, torch.Tensor] = {}

    # --- randomness and diagnostics --------------------------------------------------------------------------
    def rng(self, purpose: str) -> torch.Generator:
        """A fresh generator for one use, from the run's RNG tree (see ``pcl.rng``)."""
        return self.rngs.torch(purpose)

    def diagnose(self, name: str, value) -> None:
        """Record a per-round diagnostic (a scalar, a per-client vector or a K x K matrix) for diagnostics.csv."""
        self._diagnostics[name] = torch.as_tensor(value).detach().cpu()

    def take_diagnostics(self) -> dict[str, torch.Tensor]:
        out, self._diagnostics = self._diagnostics, {}
        return out

    # --- data, models, clients -------------------------------------------------------------------------------
    def data(self, split: str) -> ClientData:
        return self.federation.client_data(split, self.device)

    def init_params(self, independent: int = 0) -> Params:
        """A fresh model initialisation from the RNG tree: unstacked by default (one shared init), or stacked with
        ``independent`` different inits (DAC starts every client from its own)."""
        def one() -> Params:
            seed = int(torch.randint(0, 2**62, (1,), generator=self.rng("init")))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                for m in self.model.modules():
                    if hasattr(m, "reset_parameters"):
                        m.reset_parameters()
                for m in self.model.modules():  # after the layers, so adapters start as the identity again
                    if hasattr(m, "zero_init"):
                        m.zero_init()
                return {n: p.detach().to(self.device, copy=True) for n, p in self.model.named_parameters()}
        if not independent:
            return one()
        inits = [one() for _ in range(independent)]
        return {n: torch.stack([p[n] for p in inits]) for n in inits[0]}

    def sample_clients(self, fraction: float = 1.0, count: int | None = None) -> torch.Tensor:
        """Uniform client sampling without replacement (sorted), as FedAvg's server does."""
        m = count if count is not None else max(1, round(fraction * self.num_clients))
        if not 0 < m <= self.num_clients:
            raise ValueError(f"cannot sample {m} of {self.num_clients} clients")
        if m == self.num_clients:
            return torch.arange(self.num_clients)
        return torch.randperm(self.num_clients, generator=self.rng("clients"))[:m].sort().values

    def broadcast(self, p: Params, k: int | None = None) -> Params:
        return broadcast(p, self.num_clients if k is None else k)

    def trainable(self, spec: Trainable) -> list[str] | None:
        """Parameter names from a group ('head'), all but a group ('-head'), or a list of groups, '-groups' and
        parameter names; None or 'all' means every parameter."""
        if spec in (None, "all"):
            return None
        items = [spec] if isinstance(spec, str) else list(spec)
        names = [n for n, _ in self.model.named_parameters()]
        expand = lambda item: {item} if item in names else set(param_names(self.model, item))  # noqa: E731
        keep = [i for i in items if not i.startswith("-")] or ["all"]
        drop = [i[1:] for i in items if i.startswith("-")]
        chosen = set().union(*map(expand, keep)) - set().union(*map(expand, drop))
        if not chosen:
            raise ValueError(f"trainable {spec!r} selects no parameter")
        return [n for n in names if n in chosen]

    # --- the engine ------------------------------------------------------------------------------------------
    def local_train(self, params: Params, clients: torch.Tensor, hp, *, objective: Objective | None = None,
                    trainable: Trainable = None, extras: Extras | None = None,
                    group_lr: dict[str, float] | None = None, purpose: str = "batches", **spec_override) -> Params:
        """Train the stacked ``params`` (row j = client ``clients[j]``) on those clients' training data with
        ``objective`` (default: the task loss), moving only ``trainable``; ``group_lr`` gives a step size per
        parameter group; ``spec_override`` changes fields of ``hp``'s local-SGD spec for this call."""
        lrs = {n: lr for g, lr in (group_lr or {}).items() for n in param_names(self.model, g)}
        return self.trainer.train(params, self.train, clients, hp.local_spec(**spec_override),
                                  generator=self.rng(purpose), objective=objective,
                                  trainable=self.trainable(trainable), extras=extras, lrs=lrs)

    def scores(self, params: Params, split: str, pairs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss/accuracy of model j (row of ``params``) on client i's ``split``, for (i, j) ``pairs`` or a mask."""
        return scores(self.model, params, self.data(split), pairs)
