"""ResNet-18 with GroupNorm and residual adapters: the EMNIST model of Pillutla et al. (ICML 2022, "Federated
Learning with Partial Model Personalization"), following the official code (facebookresearch/FL_partial_personalization,
``pfl/models/resnet_utils.py``, ``emnist_resnet.py``).

The architecture is torchvision's ResNet-18 with every BatchNorm replaced by GroupNorm (the official group counts:
8, 8, 16, 32 groups for 64, 128, 256, 512 channels) and, for 1x28x28 inputs, a 3x3 stride-1 stem without max-pool.
Module names are the official ones (``conv1``, ``bn1``, ``layer{1-4}.{0,1}.{conv,bn}{1,2}``, ``downsample``,
``adapter{1,2}``, ``fc``), so the parameter groups below read like its ``split_server_and_client_params``.

Groups (parameter counts for 1x28x28 and 62 classes, the paper's table; tests/test_models.py):
- ``input`` = ``conv1`` + the stem GroupNorm ``bn1`` (704);
- ``head`` = ``fc`` (31,806);
- ``adapter`` = the adapters and every GroupNorm named ``bn1``/``bn2`` (1,408,128). The official predicate is
  ``'adapter' in name or 'bn1' in name or 'bn2' in name``, which also matches the stem's ``bn1`` (128 parameters),
  so ``adapter`` and ``input`` overlap there, as in the official code; empty without adapters;
- ``norm`` = every GroupNorm's affine parameters (FedBN keeps them local);
- ``body`` = the rest. The full model without adapters has 11,199,486 parameters.

Two deliberate differences from the official code, both so that the model starts as the identity-adapted network:
- The official block computes ``out + Adapter(out)`` with ``Adapter(x) = x + conv1x1(GN(x))``, i.e.
  ``2 out + conv1x1(GN(out))``, with the 1x1 weights drawn from N(0, 1e-4). Here the adapter is
  ``out + conv1x1(GN(out))`` with zero weights (``zero_init``), so with adapters on the network computes exactly the
  network without them. The GroupNorm that follows each adapter is invariant to the factor 2 up to its epsilon, so
  both parametrize the same functions; the official 1x1 weights act at half the scale of these.
- No dropout (the official default is 0): dropout would need random draws inside the engine's vmap.
"""
from __future__ import annotations

from torch import nn
from torch.nn import functional as F

from pcl.models.nets import _Grouped

GROUPS_BY_CHANNELS = {64: 8, 128: 8, 256: 16, 512: 32}  # official GROUP_NORM_LOOKUP for the widths used here
WIDTHS = (64, 128, 256, 512)


class _Conv(nn.Conv2d):
    """Bias-free convolution initialised as the official ResNet (Kaiming normal, fan-out, ReLU gain)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")


class GNAdapter(nn.Module):
    """Residual adapter x + conv1x1(GN(x)); the 1x1 weights start at zero, so it starts as the identity."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.bn = nn.GroupNorm(groups, channels)
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)
        self.zero_init()

    def zero_init(self) -> None:
        nn.init.zeros_(self.conv.weight)

    def forward(self, x):
        return x + self.conv(self.bn(x))


class BasicBlock(nn.Module):
    """conv3x3-GN-ReLU-conv3x3-GN plus the (projected) input, then ReLU; an adapter after each 3x3 conv."""

    def __init__(self, cin: int, cout: int, stride: int, groups, adapter: bool) -> None:
        super().__init__()
        self.conv1 = _Conv(cin, cout, 3, stride)
        self.bn1 = nn.GroupNorm(groups(cout), cout)
        self.conv2 = _Conv(cout, cout, 3)
        self.bn2 = nn.GroupNorm(groups(cout), cout)
        project = stride != 1 or cin != cout
        self.downsample = (nn.Sequential(_Conv(cin, cout, 1, stride), nn.GroupNorm(groups(cout), cout))
                           if project else None)
        self.adapter1 = GNAdapter(cout, groups(cout)) if adapter else None
        self.adapter2 = GNAdapter(cout, groups(cout)) if adapter else None

    def forward(self, x):
        out = self.conv1(x)
        if self.adapter1 is not None:
            out = self.adapter1(out)
        out = F.relu(self.bn1(out))
        out = self.conv2(out)
        if self.adapter2 is not None:
            out = self.adapter2(out)
        out = self.bn2(out)
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNet18GN(_Grouped):
    """ResNet-18 with GroupNorm (see the module docstring). ``adapter``: add the residual adapters;
    ``norm_groups``: one group count for every GroupNorm (it must divide 64) instead of the official per-width one."""

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int, adapter: bool = False,
                 norm_groups: int | None = None) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"model 'resnet18_gn' needs image inputs [C, H, W], got shape {tuple(input_shape)}")
        if norm_groups is not None and (int(norm_groups) < 1 or 64 % int(norm_groups)):
            raise ValueError(f"model.norm_groups: {norm_groups} must be >= 1 and divide every width {WIDTHS}")
        groups = (lambda c: GROUPS_BY_CHANNELS[c]) if norm_groups is None else (lambda c: int(norm_groups))
        self.conv1 = _Conv(input_shape[0], 64, 3)  # the 1x28x28 stem: 3x3, stride 1, no max-pool
        self.bn1 = nn.GroupNorm(groups(64), 64)
        cin = 64
        for i, width in enumerate(WIDTHS, 1):
            stride = 1 if i == 1 else 2
            self.add_module(f"layer{i}", nn.Sequential(BasicBlock(cin, width, stride, groups, adapter),
                                                       BasicBlock(width, width, 1, groups, adapter)))
            cin = width
        self.fc = nn.Linear(cin, num_outputs)
        norms = [name for name, m in self.named_modules() if isinstance(m, nn.GroupNorm)]
        personal_norms = [n for n in norms if n.split(".")[-1] in ("bn1", "bn2")] if adapter else []
        self.group_prefixes = {
            "input": ("conv1.", "bn1."),
            "head": ("fc.",),
            "adapter": tuple(f"{n}." for n in personal_norms) + tuple(
                f"{name}." for name, m in self.named_modules() if isinstance(m, GNAdapter)),
            "norm": tuple(f"{n}." for n in norms),
        }

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        for i in range(1, len(WIDTHS) + 1):
            h = getattr(self, f"layer{i}")(h)
        return self.fc(h.mean((-2, -1)))
