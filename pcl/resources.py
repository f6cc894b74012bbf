"""Memory one ``pcl train`` job needs, estimated from what the run holds (the Snakemake train rule's ``mem_mb``).

A run holds, besides Python + torch + pcl (``OVERHEAD_MB``, measured): the stacked per-client parameters in several
copies (parameters, gradients, optimizer state, an algorithm's second model, the checkpoint's serialized bytes), the
source pool and its padded per-client splits, the vectorized local-training working set (bounded by the
``LocalTrainer`` budget), the batched evaluation's activations, and for WGA the pairwise gradient table chunk
(bounded by ``pair_grad_stats``' element budget). Each term is an upper bound of what those components allocate, so
the sum is meant to be >= the measured peak and within a small factor of it (tests/test_resources.py checks both
against ``/usr/bin/time -v`` max RSS of real runs).
"""
from __future__ import annotations

import functools
import inspect
import json
import math
from pathlib import Path

import numpy as np
import torch

from pcl.algorithms import ALGORITHMS, make_hparams
from pcl.config import split_setting
from pcl.engine.evaluate import outputs
from pcl.engine.local import LocalTrainer, _forward_stats
from pcl.engine.pairwise import mixed_grads, pair_grad_stats
from pcl.models import build_model

MB = 2**20
# Max RSS of the smallest run (digits, 2-6 clients, an 8-unit MLP, 1 round; `/usr/bin/time -v pcl train`), nearly
# all of it imported libraries, with torch 2.13 CPU on Linux: 487 MiB in one virtual environment, 595 MiB in a fresh
# `pip install -e .[dev]` of the same versions (CI). Rounded up for other builds and platforms.
OVERHEAD_MB = 800
# Copies of the stacked trained parameters alive at once: parameters, gradient, optimizer state, an algorithm's
# second stacked model (Ditto's personal models, FedAvg's broadcast), the evaluated personalized copy, and the
# checkpoint (torch.save into a buffer, then its bytes).
STATE_COPIES = 8
WORKSET_COPIES = 3  # activations kept for the backward pass / vmap temporaries, as LocalTrainer._chunk_size assumes
PAIRWISE = ("wga",)  # algorithms with a pairwise (clients x clients) gradient table, processed in bounded chunks


def _default(fn, name: str) -> int:
    """A budget argument's default, read from the engine function itself so the estimate follows it."""
    return int(inspect.signature(fn).parameters[name].default)


@functools.lru_cache(maxsize=8)
def _federation(path: str, data_root: str) -> tuple[np.ndarray, tuple[int, ...], int, int, int]:
    """Per split and client sample counts ``[3, K]``, the input shape, classes, and bytes of the pool's x and y.

    The file is read, not verified: ``pcl train`` verifies it (``Federation.load``) before anything trains."""
    from pcl.data.federation import SPLITS
    from pcl.data.sources import load_source

    with np.load(path, allow_pickle=False) as z:
        sizes = np.stack([np.diff(z[f"{s}_ptr"]) for s in SPLITS])
        spec = json.loads(z["spec"].tobytes().decode())
    pool = load_source(spec["source"], data_root)
    return sizes, tuple(pool.x.shape[1:]), max(pool.num_classes, 1), pool.x.nbytes, pool.y.nbytes


def train_mem_mb(config: dict, algorithm: str, setting: str, federation: str | Path,
                 data_root: str | Path = "data/raw") -> int:
    """Estimated peak memory (MiB) of ``pcl train`` for one (algorithm, setting) of ``config`` on ``federation``
    (a ``federation.npz`` or its folder). Reads the federation's index pointers and loads its source (cached).

    On a GPU (``train.device``) the tensors live in device memory instead: the estimate then over-asks for host
    memory, which is the safe side."""
    path = Path(federation)
    path = path / "federation.npz" if path.is_dir() else path
    sizes, input_shape, classes, pool_x, pool_y = _federation(str(path), str(data_root))
    k = sizes.shape[1]
    model = build_model(config["model"], input_shape, classes)
    per_model = sum(p.numel() for p in model.parameters())
    acts, _ = _forward_stats(model, torch.zeros(1, *input_shape))
    hp = make_hparams(ALGORITHMS[algorithm].Hparams, split_setting(config["algorithms"][algorithm][setting])[1])
    batch = int(getattr(hp, "batch_size", 32))
    floats = 4  # float32 parameters and activations
    sample = floats * math.prod(input_shape) + 8  # one padded sample: x (float32) and y (int64)

    state = STATE_COPIES * k * per_model * floats
    data = 2 * pool_x + pool_y + sum(k * max(int(s.max()), 1) * sample for s in sizes)  # pool (and its tensor
    # copy while materializing), then the padded splits
    per_client = floats * (6 * per_model + WORKSET_COPIES * batch * acts)  # LocalTrainer._chunk_size's model
    train = min(k * per_client, max(_default(LocalTrainer, "memory_mb") * MB, per_client))
    rows = min(_default(outputs, "max_rows"), k * max(int(sizes.max()), 1))
    evaluate = WORKSET_COPIES * rows * acts * floats + k * max(int(sizes.max()), 1) * classes * floats
    pairwise = 0
    if algorithm in PAIRWISE:
        groups = int(getattr(hp, "estimate_groups", batch))
        table = k * k * groups * per_model  # numbers in the whole [K, K, groups, P] table
        chunk = max(min(table, _default(pair_grad_stats, "max_elements")), k * groups * per_model)
        mixed = _default(mixed_grads, "max_rows") * acts + k * per_model
        # a chunk of per-group gradients, then their means, spreads and vmap temporaries: 4 chunks (the 60-client
        # WGA run of tests/test_resources.py peaks about 3 chunks above the estimate's other terms)
        pairwise = 4 * chunk * floats + WORKSET_COPIES * mixed * floats
    return int(math.ceil(OVERHEAD_MB + (state + data + train + evaluate + pairwise) / MB))
