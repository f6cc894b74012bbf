"""The algorithm interface, the context algorithms are written against, and ``register``.

An algorithm reads like its paper's pseudo-code (FedJAX's ``init``/``apply`` over explicit state): ``init``
builds the state, ``round`` advances it by one communication round, ``personalized`` returns the model each
client would use now. The engine decides how clients execute (vectorized or the reference loop); the runner
owns the round loop, evaluation, checkpoints and files. Adding an algorithm = one file + one registry line in
``pcl/algorithms/__init__.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from pcl.algorithms import ALGORITHMS
from pcl.algorithms.hparams import build, param
from pcl.engine import LocalSpec, Params, evaluate
from pcl.engine.optim import OPTIMIZERS

if TYPE_CHECKING:
    from pcl.algorithms.context import Context


def register(name: str):
    """Class decorator: make an algorithm available by ``name`` in configs and the CLI (its registry line in
    ``pcl/algorithms/__init__.py`` makes the name known without importing the module)."""
    def deco(cls):
        ALGORITHMS.add(name, cls)
        cls.name = name
        return cls
    return deco


@dataclass
class LocalSGD:
    """Local-training hyperparameters shared by every algorithm (each algorithm may change the defaults). A round of
    local training is ``local_epochs`` passes over a client's data or ``local_steps`` steps: exactly one is set (set
    the other to null). ``drop_last``: an epoch counts only full batches (PyTorch's DataLoader drop_last, PFLlib)."""

    lr: float = param(0.05, gt=0)
    local_epochs: float | None = param(1.0, gt=0)
    local_steps: int | None = param(None, ge=1)
    batch_size: int = param(16, ge=1)
    optimizer: str = param("sgd", choices=tuple(OPTIMIZERS))
    weight_decay: float = param(0.0, ge=0)
    drop_last: bool = param(False)

    def __post_init__(self) -> None:
        if (self.local_epochs is None) == (self.local_steps is None):
            given = "both are set" if self.local_epochs is not None else "neither is set"
            raise ValueError(f"local_epochs={self.local_epochs!r}, local_steps={self.local_steps!r}: set exactly one "
                             f"of local_epochs and local_steps ({given}; set the other to null)")

    def local_spec(self, **override) -> LocalSpec:
        return LocalSpec(**{**dict(lr=self.lr, batch_size=self.batch_size, local_epochs=self.local_epochs,
                                   local_steps=self.local_steps, optimizer=self.optimizer,
                                   weight_decay=self.weight_decay, drop_last=self.drop_last), **override})


def make_hparams(cls: type, values: dict | None) -> Any:
    """Build a hyperparameter dataclass from a config's overrides, checking each value against its field's declared
    type and constraint (``pcl.algorithms.hparams.build``); raises ``HparamError`` (a ``ValueError``) naming every
    bad field and value."""
    return build(cls, values)


class Algorithm:
    """Base class. Subclasses set ``Hparams`` (a dataclass; defaults + citation in its docstring)."""

    name: ClassVar[str]
    Hparams: ClassVar[type] = LocalSGD

    def __init__(self, hp: Any, ctx: Context) -> None:
        self.hp, self.ctx = hp, ctx

    def init(self) -> dict:
        raise NotImplementedError

    def round(self, state: dict, t: int) -> dict:
        raise NotImplementedError

    def personalized(self, state: dict) -> Params:
        """The stacked ``[K, ...]`` parameters each client predicts with now (used for evaluation)."""
        raise NotImplementedError

    def evaluate(self, state: dict, splits: tuple[str, ...]) -> dict[str, dict[str, torch.Tensor]]:
        """Per-client metrics on each split; override to predict with something other than one parameter set
        per client (e.g. a mixture of a local and a global model's predictions)."""
        params = self.personalized(state)  # once for all splits: it may fine-tune
        return {s: evaluate(self.ctx.model, params, self.ctx.data(s)) for s in splits}

    def export(self, state: dict) -> Params:
        """The run's final shared model, saved as ``model.pt`` (what another run's ``init_from`` loads): the
        unstacked ``state['global']`` where the algorithm has one, else nothing (an empty file)."""
        return state.get("global", {}) if isinstance(state.get("global"), dict) else {}

    def finish(self, state: dict) -> dict:
        """Post-training step (e.g. a final fine-tune); the default changes nothing."""
        return state
