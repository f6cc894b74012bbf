"""The algorithm interface, the context algorithms are written against, and the registry.

An algorithm reads like its paper's pseudo-code (FedJAX's ``init``/``apply`` over explicit state): ``init``
builds the state, ``round`` advances it by one communication round, ``personalized`` returns the model each
client would use now. The engine decides how clients execute (vectorized or the reference loop); the runner
owns the round loop, evaluation, checkpoints and files. Adding an algorithm = one file + one import line in
``pcl/algorithms/__init__.py``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from pcl.engine import LocalSpec, Params, evaluate

if TYPE_CHECKING:
    from pcl.algorithms.context import Context

ALGORITHMS: dict[str, type["Algorithm"]] = {}


def register(name: str):
    """Class decorator: make an algorithm available by ``name`` in configs and the CLI."""
    def deco(cls):
        if name in ALGORITHMS:
            raise ValueError(f"algorithm {name!r} registered twice")
        cls.name = name
        ALGORITHMS[name] = cls
        return cls
    return deco


@dataclass
class LocalSGD:
    """Local-training hyperparameters shared by most algorithms (each algorithm may change the defaults)."""

    lr: float = 0.05
    local_epochs: float = 1.0
    batch_size: int = 16
    optimizer: str = "sgd"
    weight_decay: float = 0.0

    def local_spec(self, **override) -> LocalSpec:
        return LocalSpec(**{**dict(lr=self.lr, batch_size=self.batch_size, local_epochs=self.local_epochs,
                                   optimizer=self.optimizer, weight_decay=self.weight_decay), **override})


def make_hparams(cls: type, values: dict | None) -> Any:
    """Build a hyperparameter dataclass, naming any unknown key and the fields that exist."""
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {unknown} for {cls.__qualname__}; known: {sorted(fields)}")
    hp = cls(**values)
    for name, f in fields.items():
        v = getattr(hp, name)
        if f.type in ("float", float) and isinstance(v, int) and not isinstance(v, bool):
            setattr(hp, name, float(v))
    return hp


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

    def finish(self, state: dict) -> dict:
        """Post-training step (e.g. a final fine-tune); the default changes nothing."""
        return state
