"""Nets that declare their parameter groups, so personalization selects parameters by group name."""
from __future__ import annotations

from typing import TYPE_CHECKING

from pcl.registry import Registry

if TYPE_CHECKING:
    from torch import nn

# the nets import torch: each only when first built
MODELS = Registry("model", {"linear": "pcl.models.nets:Linear", "mlp": "pcl.models.nets:MLP",
                            "cnn": "pcl.models.nets:CNN", "resnet18_gn": "pcl.models.resnet:ResNet18GN"})


def build_model(spec: dict, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """Instantiate ``spec['name']`` with the remaining keys as keyword arguments.

    The model's parameters are only a template: engines keep the real values stacked per client.
    """
    spec = dict(spec)
    name = spec.pop("name", None)
    if name not in MODELS:
        raise ValueError(f"model.name: unknown model {name!r}; choose one of {sorted(MODELS)}")
    cls = MODELS[name]
    try:
        return cls(tuple(input_shape), num_outputs, **spec)
    except TypeError as err:
        raise ValueError(f"model: bad option for {name!r}: {err}") from None


def param_names(model: nn.Module, group: str | list[str] | None) -> list[str]:
    """Names of the parameters in one or several declared groups ('all' or None = every parameter)."""
    names = [n for n, _ in model.named_parameters()]
    if group in (None, "all"):
        return names
    groups = model.param_groups()
    wanted = [group] if isinstance(group, str) else list(group)
    unknown = [g for g in wanted if g not in groups and g != "all"]
    if unknown:
        raise ValueError(f"unknown parameter group(s) {unknown} for {type(model).__name__}; it declares {sorted(groups)}")
    chosen = {n for g in wanted for n in (names if g == "all" else groups[g])}
    return [n for n in names if n in chosen]


def num_params(model: nn.Module, names: list[str]) -> int:
    params = dict(model.named_parameters())
    return sum(params[n].numel() for n in names)


__all__ = ["MODELS", "build_model", "param_names", "num_params"]
