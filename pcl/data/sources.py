"""The registry of data sources: ``data.source`` of an experiment config names one and sets its keys.

``load_source({"name": "synthetic_mixture", "num_clusters": 4}, root)`` calls the registered loader with
the other keys as keyword arguments. The keys a source accepts are exactly its loader's parameters (the
download root comes from the caller, not the spec), and pcl/schemas/source.schema.yaml states the same
keys for config validation; a test keeps the two in step.
"""
from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pcl.data import download
from pcl.data.types import Pool
from pcl.registry import Registry

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "source.schema.yaml"


def digits() -> Pool:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes, no download): x in [0, 1] (pixels / 16)."""
    from sklearn.datasets import load_digits  # ~0.7 s: not on the path of `pcl list` and config validation

    d = load_digits()
    return Pool("digits", (d.images[:, None] / 16).astype(np.float32), d.target.astype(np.int64), num_classes=10)


def _images(name: str, splits: tuple[download.Split, download.Split], num_classes: int) -> Pool:
    """Concatenate (train, test) uint8 images into one pool ([n, C, H, W] in [0, 1]), marking the test part."""
    (x_train, y_train), (x_test, y_test) = splits
    x = np.concatenate([x_train, x_test])
    if x.ndim == 3:
        x = x[:, None]
    return Pool(
        name, x.astype(np.float32) / 255, np.concatenate([y_train, y_test]), num_classes=num_classes,
        is_test=np.r_[np.zeros(len(x_train), bool), np.ones(len(x_test), bool)],
    )


def mnist(*, root: str | Path) -> Pool:
    """MNIST (LeCun et al. 1998): 70,000 28x28 digits, 10 classes; the official 10,000 test images marked."""
    return _images("mnist", download.load_mnist_like("mnist", root), 10)


def fashion_mnist(*, root: str | Path) -> Pool:
    """Fashion-MNIST (Xiao et al. 2017): 70,000 28x28 clothing images, 10 classes."""
    return _images("fashion_mnist", download.load_mnist_like("fashion_mnist", root), 10)


def cifar10(*, root: str | Path) -> Pool:
    """CIFAR-10 (Krizhevsky 2009): 60,000 32x32 colour images [n, 3, 32, 32], 10 classes."""
    return _images("cifar10", download.load_cifar10(root), 10)


def emnist(*, root: str | Path, subsample: float = 1.0, seed: int = 0) -> Pool:
    """EMNIST byclass (Cohen et al. 2017): 814,255 28x28 characters, 62 classes (digits, A-Z, a-z). ``subsample``
    keeps a uniformly random share of it (seeded): FedEM's and PDBO's EMNIST is 10% of byclass
    (decentralized-bilevel.md §3.6)."""
    return subsampled(_images("emnist", download.load_emnist(root), 62), subsample, seed)


def subsampled(pool: Pool, fraction: float, seed: int) -> Pool:
    """``pool`` restricted to round(fraction x n) samples drawn without replacement (kept in their order)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"source: subsample must be in (0, 1], got {fraction!r}")
    if fraction == 1:
        return pool
    keep = np.sort(np.random.default_rng(seed).permutation(len(pool.y))[:round(fraction * len(pool.y))])
    pick = lambda a: None if a is None else a[keep]  # noqa: E731
    return Pool(pool.name, pool.x[keep], pool.y[keep], pool.num_classes, group=pick(pool.group),
                group_cluster=pool.group_cluster, is_test=pick(pool.is_test), meta=pool.meta)


def fed_emnist(*, root: str | Path, min_train: int = 100, min_test: int = 25, max_per_client: int = 1000,
               standardize: bool = False) -> Pool:
    """TFF's federated EMNIST-62 (LEAF's FEMNIST writers; Caldas et al. 2018), writers as clients, as Pillutla et al.
    (ICML 2022) use it: writers with >= ``min_train`` training and >= ``min_test`` test examples (1,114 writers at
    100/25), at most ``max_per_client`` of each split per writer (their first ones in the file, as the official
    loader takes them).

    ``group`` is the writer (index into ``meta["writers"]``, sorted ids), for the ``natural`` partition; ``is_test``
    marks each writer's examples from TFF's test file. Pixels are inverted to ink = 1 on background 0 (TFF stores
    1 = background), like the other image pools. ``standardize`` subtracts the per-pixel mean and divides by the
    per-pixel std (+1e-6) of the kept training examples, as the official loader does with its precomputed
    statistics; the sign flip of the inversion is then the only difference, which a bias-free first layer absorbs.
    """
    for key, value, least in (("min_train", min_train, 1), ("min_test", min_test, 1),
                              ("max_per_client", max_per_client, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"data.source {key}: must be an integer >= {least}, got {value!r}")
    writers, data = download.read_fed_emnist(download.extract_fed_emnist(root), min_train, min_test, max_per_client)
    if not writers:
        raise ValueError(f"fed_emnist: no writer has >= {min_train} training and >= {min_test} test examples")
    xs, ys, owner, test = [], [], [], []
    for k in range(len(writers)):
        for split in download.FED_EMNIST_SPLITS:
            x, y = data[split][k]
            xs.append(x)
            ys.append(y)
            owner.append(np.full(len(y), k, np.int64))
            test.append(np.full(len(y), split == "test"))
    # in place: the paper's 1,114 writers are ~1.4 GB of float32 pixels
    x, is_test = np.concatenate(xs)[:, None], np.concatenate(test)
    np.subtract(1, x, out=x)
    if standardize:
        train = (~is_test)[:, None, None, None]
        x -= x.mean(0, dtype=np.float64, where=train)
        x /= x.std(0, dtype=np.float64, where=train) + 1e-6
    return Pool(
        "fed_emnist", x, np.concatenate(ys), num_classes=62, group=np.concatenate(owner),
        is_test=is_test,
        meta={"writers": writers},
    )


SOURCES = Registry("data source", {  # the synthetic generators import scipy: only when first used
    "digits": "pcl.data.sources:digits",
    "mnist": "pcl.data.sources:mnist",
    "fashion_mnist": "pcl.data.sources:fashion_mnist",
    "cifar10": "pcl.data.sources:cifar10",
    "emnist": "pcl.data.sources:emnist",
    "fed_emnist": "pcl.data.sources:fed_emnist",
    "synthetic_regression": "pcl.data.synthetic:linear_regression",
    "synthetic_mean": "pcl.data.synthetic:mean_estimation",
    "synthetic_mixture": "pcl.data.synthetic:gaussian_mixture",
    "synthetic_fedprox": "pcl.data.synthetic:fedprox_synthetic",
})


def source_keys(name: str) -> list[str]:
    """The keys ``data.source`` may set for source ``name`` (its loader's parameters, minus ``root``)."""
    return [p for p in inspect.signature(_loader(name)).parameters if p != "root"]


def load_source(spec: dict, root: str | Path = "data/raw") -> Pool:
    """Build the pool that ``spec`` (``{"name": ..., **keys}``) describes; downloads go under ``root``."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"data.source must be a mapping with a 'name', got {spec!r}")
    name, kwargs = spec["name"], {k: v for k, v in spec.items() if k != "name"}
    unknown = sorted(set(kwargs) - set(source_keys(name)))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} for data source {name!r}; allowed: {source_keys(name)}")
    loader = _loader(name)
    if "root" in inspect.signature(loader).parameters:
        kwargs["root"] = root
    return loader(**kwargs)


def source_sha256(pool: Pool) -> str:
    """SHA-256 of a pool's content: dtype, shape and bytes of x, y, group, group_cluster and is_test.

    Recorded with every result, so two runs can be compared only if they saw the same data.
    """
    h = hashlib.sha256()
    for field in ("x", "y", "group", "group_cluster", "is_test"):
        a = getattr(pool, field)
        if a is None:
            h.update(f"{field}:none;".encode())
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{field}:{a.dtype.str}:{a.shape};".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _loader(name: str) -> Callable[..., Pool]:
    try:
        return SOURCES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown data source {name!r}; available: {sorted(SOURCES)}") from None
