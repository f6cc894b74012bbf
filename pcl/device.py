"""Where a training run puts its tensors: ``train.device`` (cpu | cuda | auto) turned into a ``torch.device``.

CPU is the default so that results are bit-identical across machines; ``cuda`` is opt-in and fails loudly
when no GPU is visible, and ``auto`` takes the GPU only where there is one.
"""
from __future__ import annotations

import re

import torch

_CUDA = re.compile(r"cuda(?::(\d+))?")


def resolve_device(name: str | torch.device) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (cuda if available, else cpu) as a ``torch.device``.

    A cuda device always comes back with its index (``cuda`` -> the current device). Raises ValueError naming
    ``train.device`` for an unknown name, or when cuda is asked for and torch sees no (such) GPU.
    """
    text = str(name).strip().lower() if isinstance(name, (str, torch.device)) else None
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    match = _CUDA.fullmatch(text) if text is not None else None
    if match is None:
        raise ValueError(f"train.device: unknown device {name!r}; expected 'cpu', 'cuda', 'cuda:N' or 'auto'")
    if not torch.cuda.is_available():
        raise ValueError(f"train.device is {name!r} but CUDA is not available here (torch {torch.__version__}, "
                         f"built with CUDA {torch.version.cuda}); use train.device: cpu or auto")
    index = int(match.group(1)) if match.group(1) is not None else torch.cuda.current_device()
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(f"train.device is {name!r} but only {count} CUDA device(s) are visible")
    return torch.device("cuda", index)


def describe(device: torch.device) -> dict:
    """The device as recorded in run.json: type, index, torch's CUDA version, and for a GPU its name and memory."""
    device = torch.device(device)
    info = {"type": device.type, "index": device.index, "torch_cuda": torch.version.cuda}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info.update(index=index, name=props.name, total_memory_bytes=int(props.total_memory))
    return info
