"""Registries of named objects whose modules are imported on first use of an entry.

The names of every algorithm, model and data source are known without importing anything heavy, so `pcl list`,
`pcl validate` and the Snakefile's checks of names do not import torch; an entry's module is imported when the
entry itself is first looked up (``REGISTRY[name]``, ``.items()``).
"""
from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any


class Registry(Mapping):
    """``name -> object``, declared as ``{name: "module:attribute"}``; ``in``, ``len``, iteration and ``sorted``
    never import. ``add`` registers an object at run time (``@register`` of an algorithm module that has no
    registry line yet, e.g. one loaded as a pytest plugin); an object declared here and added by its module must be
    the declared one, so the registry line and the module cannot disagree."""

    def __init__(self, kind: str, targets: dict[str, str]) -> None:
        self.kind = kind
        self._targets = dict(targets)
        self._loaded: dict[str, Any] = {}

    def add(self, name: str, obj: Any) -> None:
        target = f"{obj.__module__}:{obj.__qualname__}"
        declared = self._targets.setdefault(name, target)
        if name in self._loaded or declared != target:
            where = "" if declared == target else f" (the registry line names {declared}, not {target})"
            raise ValueError(f"{self.kind} {name!r} registered twice{where}")
        self._loaded[name] = obj

    def target(self, name: str) -> str:
        """The ``module:attribute`` an entry is declared as, without importing it."""
        return self._targets[name]

    def __getitem__(self, name: str) -> Any:
        if name not in self._loaded:
            module, attr = self._targets[name].split(":")
            self._loaded[name] = getattr(importlib.import_module(module), attr)
        return self._loaded[name]

    def __contains__(self, name: object) -> bool:
        return name in self._targets  # Mapping's default would look the entry up, importing its module

    def __iter__(self) -> Iterator[str]:
        return iter(self._targets)

    def __len__(self) -> int:
        return len(self._targets)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._targets)})"
