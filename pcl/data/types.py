"""The two in-memory shapes every data path goes through: a source's ``Pool`` and a ``Partition`` of it."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Pool:
    """All samples of one source, before they are dealt to clients.

    ``x`` is float32 with the sample axis first (images as ``[n, C, H, W]`` scaled to [0, 1]);
    ``y`` is int64 class ids (classification) or float32 targets (regression, ``num_classes == 0``).
    Synthetic sources that generate data per client set ``group`` (the owning client of each sample)
    and ``group_cluster`` (the planted cluster of each client); the ``natural`` partition uses them.
    ``is_test`` marks samples from a source's official test split, where it has one.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    num_classes: int
    group: np.ndarray | None = None
    group_cluster: np.ndarray | None = None
    is_test: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"pool {self.name!r}: {len(self.x)} inputs but {len(self.y)} targets")

    @property
    def task(self) -> str:
        return "classification" if self.num_classes > 0 else "regression"


@dataclass
class Partition:
    """Per-client index arrays (into a ``Pool``) for each split, plus each client's covariate shift.

    ``rotation`` (degrees) and ``noise`` (std of additive Gaussian noise) are applied to every split of
    a client, so its test data follows its own distribution. ``cluster`` is the planted cluster id of
    each client (-1 where the scheme has none); reports use it to score clustering methods.
    """

    train: list[np.ndarray]
    val: list[np.ndarray]
    test: list[np.ndarray]
    rotation: np.ndarray
    noise: np.ndarray
    cluster: np.ndarray

    @property
    def num_clients(self) -> int:
        return len(self.train)

    def split(self, name: str) -> list[np.ndarray]:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


@dataclass
class ClientData:
    """One split of every client as padded tensors, the shape the engine trains and evaluates on.

    ``x`` is ``[K, n_max, *feature_shape]``, ``y`` is ``[K, n_max]``; client k owns the first ``n[k]`` rows.
    Padding lets all clients be processed by one vectorized call; ``n`` keeps the true sizes.
    """

    x: "torch.Tensor"
    y: "torch.Tensor"
    n: "torch.Tensor"

    @property
    def num_clients(self) -> int:
        return int(self.n.shape[0])

    @property
    def device(self) -> "torch.device":
        return self.x.device

    def to(self, device: "str | torch.device") -> "ClientData":
        """The same data with ``x``, ``y`` and ``n`` on ``device`` (``self`` when they are all there already)."""
        import torch

        device = torch.device(device)
        if all(t.device == device for t in (self.x, self.y, self.n)):
            return self
        return ClientData(x=self.x.to(device), y=self.y.to(device), n=self.n.to(device))

    def mask(self) -> "torch.Tensor":
        """``[K, n_max]`` bool, True on each client's real rows; on the data's device."""
        import torch

        return torch.arange(self.x.shape[1], device=self.n.device) < self.n[:, None]
