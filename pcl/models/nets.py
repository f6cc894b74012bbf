"""Linear, MLP and LeNet-style CNN models with declared parameter groups.

Groups follow Pillutla et al. (2022, partial personalization): ``input`` (first layer), ``head`` (output
layer), ``adapter`` (residual bottleneck adapters, zero-initialised so they start as the identity) and
``norm`` (the affine parameters of the optional normalization layers, which FedBN keeps local) and ``body``
(everything not in another group). FedPer/FedRep-style methods personalize ``head``.

Models carry no buffers, so that client state is exactly the stacked parameters: the engine trains and evaluates
through ``torch.func.functional_call`` under ``vmap`` and carries parameters only. That is why ``norm`` offers
GroupNorm and LayerNorm but not BatchNorm. BatchNorm's running statistics are buffers updated in place, which vmap
refuses for a buffer shared by all clients, and the engine would not carry them anyway. Without running statistics
(``track_running_stats=False``), BatchNorm would normalise each evaluation call by the statistics of the whole
padded split: the padding rows and the other test samples would change every prediction.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class Adapter(nn.Module):
    """Residual bottleneck adapter x + up(relu(down(x))); ``up`` starts at zero, so it starts as the identity."""

    def __init__(self, dim: int, bottleneck: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        self.zero_init()

    def zero_init(self) -> None:
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(F.relu(self.down(x)))


class ConvAdapter(nn.Module):
    """Residual 1x1-conv adapter, as the ResNet adapters of Pillutla et al. (zero-initialised)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)
        self.zero_init()

    def zero_init(self) -> None:
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


NORMS = ("none", "group", "layer")


def norm_layer(kind: str, channels: int, groups: int | None = None) -> nn.Module | None:
    """The normalization after a hidden layer: ``group`` = GroupNorm (Wu & He, ECCV 2018) with ``groups`` groups,
    by default the largest divisor of ``channels`` not above ``channels // 8`` (about 8 channels per group, the
    official partial-personalization ResNet's choice up to 64 channels); ``layer`` = LayerNorm over all features of
    a sample (one group: over C x H x W for a convolution map); both with a per-channel affine."""
    if kind not in NORMS:
        why = " (BatchNorm needs running statistics the engine does not carry; see the module docstring)"
        raise ValueError(f"model.norm: unknown {kind!r}; choose one of {list(NORMS)}" + (why * (kind == "batch")))
    if groups is not None and kind != "group":
        raise ValueError(f"model.norm_groups: only for norm 'group', not {kind!r}")
    if kind == "none":
        return None
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if groups is None:
        groups = max(d for d in range(1, max(1, channels // 8) + 1) if channels % d == 0)
    if int(groups) < 1 or channels % int(groups):
        raise ValueError(f"model.norm_groups: {groups} groups do not divide a layer of {channels} channels")
    return nn.GroupNorm(int(groups), channels)


class _Grouped(nn.Module):
    """Derives the parameter groups from module-name prefixes declared by each model (a class attribute, or set
    per instance where the names depend on the options). Groups may overlap where a paper's split does (the
    ResNet's stem norm is both ``input`` and ``adapter``, as in the official code); ``body`` is the rest."""

    group_prefixes: dict[str, tuple[str, ...]] = {}

    def param_groups(self) -> dict[str, list[str]]:
        names = [n for n, _ in self.named_parameters()]
        groups = {g: [n for n in names if n.startswith(p)] for g, p in self.group_prefixes.items()}
        taken = {n for members in groups.values() for n in members}
        groups["body"] = [n for n in names if n not in taken]
        return groups


class Linear(_Grouped):
    """Logistic (classification) or linear (regression, one output) model: a single layer, all of it 'head'."""

    group_prefixes = {"head": ("fc",)}

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int, bias: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(math.prod(input_shape), num_outputs, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class MLP(_Grouped):
    """Fully connected net: input layer, hidden layers (body), optional norms (``norm``, before each ReLU) and
    adapters (after it), output head."""

    group_prefixes = {"input": ("layers.0.",), "head": ("head.",), "adapter": ("adapters.",), "norm": ("norms.",)}

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int, hidden: list[int] | tuple[int, ...] = (64,),
                 adapter_dim: int = 0, norm: str = "none", norm_groups: int | None = None) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("model.hidden: an MLP needs at least one hidden layer (use 'linear' otherwise)")
        dims = [math.prod(input_shape), *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        norms = [norm_layer(norm, h, norm_groups) for h in hidden]
        self.norms = nn.ModuleList(norms) if norm != "none" else None
        self.adapters = nn.ModuleList(Adapter(h, adapter_dim) for h in hidden) if adapter_dim else None
        self.head = nn.Linear(dims[-1], num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if self.norms is not None:
                h = self.norms[i](h)
            h = F.relu(h)
            if self.adapters is not None:
                h = self.adapters[i](h)
        return self.head(h)


class CNN(_Grouped):
    """LeNet-style CNN: ``len(channels)`` blocks conv-ReLU-maxpool(2), then ``len(hidden)`` ReLU linear layers, then
    the output head. The default (channels (6, 16), hidden (120, 84)) is DAC's CIFAR model,
    conv-pool-conv-pool-fc-fc-fc.

    ``kernel``/``padding`` default to a choice by input size: 8x8 digits (smaller than 16) use 3x3 convolutions with
    padding 1 (``kernel // 2``) so that two poolings still leave a 2x2 map; larger inputs use 5x5 without padding.
    Modules are named ``conv1..``, ``adapter1..`` (optional zero-initialised residual 1x1 adapters after each
    conv's ReLU), ``norm1..``/``norm_fc1..`` (optional ``norm`` before the ReLU of every conv and hidden linear layer,
    where FedBN's CNN has BatchNorm), ``fc1..`` and ``head``; groups: ``input`` = conv1, ``head`` = head,
    ``adapter`` = the adapters, ``norm`` = the norms.

    PFLlib's MNIST ``FedAvgCNN`` (582,026 parameters on 1x28x28) is the config
    ``{name: cnn, channels: [32, 64], hidden: [512], kernel: 5, padding: 0}``.
    """

    group_prefixes = {"input": ("conv1.",), "head": ("head.",), "adapter": ("adapter",), "norm": ("norm",)}

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int, channels: list[int] | tuple[int, ...] = (6, 16),
                 hidden: list[int] | tuple[int, ...] = (120, 84), kernel: int | None = None, padding: int | None = None,
                 adapter: bool = False, norm: str = "none", norm_groups: int | None = None) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"model 'cnn' needs image inputs [C, H, W], got shape {tuple(input_shape)}")
        if len(channels) < 1:
            raise ValueError("model.channels: a CNN needs at least one convolution (use 'mlp' otherwise)")
        if any(int(v) < 1 for v in [*channels, *hidden]):
            raise ValueError(f"model: channels and hidden widths must be >= 1, got {list(channels)}, {list(hidden)}")
        c, h, w = input_shape
        small = min(h, w) < 16
        k = kernel if kernel is not None else (3 if small else 5)
        pad = padding if padding is not None else (k // 2 if small else 0)
        if k < 1 or pad < 0:
            raise ValueError(f"model: kernel must be >= 1 and padding >= 0, got kernel {k}, padding {pad}")
        self.num_convs, self.num_hidden = len(channels), len(hidden)
        dims = [c, *channels]
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:]), 1):  # registration order = parameter order (as before)
            self.add_module(f"conv{i}", nn.Conv2d(a, b, k, padding=pad))
            h, w = (h + 2 * pad - k + 1) // 2, (w + 2 * pad - k + 1) // 2
            if min(h, w) < 1:
                raise ValueError(f"model 'cnn': input {tuple(input_shape)} is too small for {len(channels)} "
                                 f"conv(kernel {k}, padding {pad}) + pool(2) blocks")
        for i, ch in enumerate(channels, 1):
            self.add_module(f"adapter{i}", ConvAdapter(ch) if adapter else None)
        for i, ch in enumerate(channels, 1):
            self.add_module(f"norm{i}", norm_layer(norm, ch, norm_groups))
        for i, width in enumerate(hidden, 1):
            self.add_module(f"norm_fc{i}", norm_layer(norm, width, norm_groups))
        widths = [channels[-1] * h * w, *hidden]
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]), 1):
            self.add_module(f"fc{i}", nn.Linear(a, b))
        self.head = nn.Linear(widths[-1], num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i in range(1, self.num_convs + 1):
            h = F.relu(self._norm(f"norm{i}", getattr(self, f"conv{i}")(h)))
            adapter = getattr(self, f"adapter{i}")
            if adapter is not None:
                h = adapter(h)
            h = F.max_pool2d(h, 2)
        h = h.flatten(1)
        for i in range(1, self.num_hidden + 1):
            h = F.relu(self._norm(f"norm_fc{i}", getattr(self, f"fc{i}")(h)))
        return self.head(h)

    def _norm(self, name: str, h):
        norm = getattr(self, name)
        return h if norm is None else norm(h)
