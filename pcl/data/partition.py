"""Deal a ``Pool``'s samples to clients: label and quantity skew, planted clusters, covariate shift, splits.

``partition(pool, spec)`` looks up ``spec["scheme"]`` in ``SCHEMES``; the other keys are either common
(``seed``, ``val_frac``, ``test_frac``, ``per_client``, ``rotation``, ``noise``) or the scheme function's keyword
arguments, checked against its signature. Every scheme returns an *owner* array (the client of each sample, -1
when unused), so no sample can reach two clients, and all randomness comes from one
``numpy.random.default_rng(spec["seed"])``. Each client's own samples are then split at random into
train/val/test, either by ``val_frac``/``test_frac`` or, with ``per_client: {train: a, val: b, test: c}``, into
exactly a/b/c samples with the client's remaining samples left unused (DAC's ``n_data_train``/``n_data_val``,
dac.md section 1.2). ``pool.is_test`` is ignored by default, so a client's test data follows its own label
distribution and, since the shift is per client, its own rotation and noise; with ``source_test: true`` a client's
test split is exactly its samples from the source's own test split (TFF's per-writer test examples of federated
EMNIST, partial-personalization.md §2.3) and val is drawn from the rest by ``val_frac``.
"""
from __future__ import annotations

import inspect
from typing import Callable, NamedTuple, NoReturn

import numpy as np

from pcl.data.types import Partition, Pool

COMMON_KEYS = ("scheme", "seed", "val_frac", "test_frac", "per_client", "source_test", "rotation", "noise")
SPLITS = ("train", "val", "test")


class Deal(NamedTuple):
    """What a scheme returns: the client of each sample (-1 = unused) and, if planted, each client's cluster."""

    owner: np.ndarray
    num_clients: int
    cluster: np.ndarray | None = None


# --- argument checks ---------------------------------------------------------------------------------

def _fail(key: str, value, what: str) -> NoReturn:
    raise ValueError(f"partition: {key}={value!r} is invalid; it must be {what}")


def _int(key: str, value, minimum: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        _fail(key, value, f"an integer >= {minimum}")
    return int(value)


def _real(key: str, value, minimum: float = 0.0, strict: bool = False) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not np.isfinite(value) or value < minimum or (strict and value == minimum):
        _fail(key, value, f"a number {'>' if strict else '>='} {minimum}")
    return float(value)


def _shares(key: str, shares, num_groups: int | None = None) -> np.ndarray:
    arr = np.asarray(shares, dtype=float) if isinstance(shares, (list, tuple)) and shares else None
    if arr is None or arr.ndim != 1 or (arr <= 0).any() or abs(arr.sum() - 1) > 1e-6:
        _fail(key, shares, "a non-empty list of positive numbers summing to 1")
    if num_groups is not None and len(arr) != num_groups:
        _fail(key, shares, f"a list of {num_groups} shares (one per group)")
    return arr / arr.sum()


def _labels(pool: Pool, scheme: str) -> np.ndarray:
    if pool.num_classes == 0:
        raise ValueError(f"partition scheme {scheme!r} deals by class label, "
                         f"but pool {pool.name!r} is a regression task (num_classes=0)")
    return np.asarray(pool.y, dtype=np.int64)


def _check_min_size(min_size, num_clients: int, pool: Pool) -> int:
    min_size = _int("min_size", min_size, 0)
    if min_size * num_clients > len(pool.y):
        raise ValueError(f"partition: min_size={min_size} x num_clients={num_clients} = {min_size * num_clients} "
                         f"exceeds the {len(pool.y)} samples of pool {pool.name!r}")
    return min_size


# --- building blocks -----------------------------------------------------------------------------------

def _random_rank(owner: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each sample's position within its owner group, in a fresh random order per group."""
    order = np.lexsort((rng.random(len(owner)), owner))
    grouped = owner[order]
    rank = np.empty(len(owner), dtype=np.int64)
    rank[order] = np.arange(len(owner)) - np.searchsorted(grouped, grouped)
    return rank


def _deal_by_counts(labels: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Owner array giving client k ``counts[c, k]`` random samples of class c; leftovers stay unused (-1)."""
    num_labels, num_clients = counts.shape
    order = np.lexsort((rng.random(len(labels)), labels))
    leftover = np.bincount(labels, minlength=num_labels) - counts.sum(1)
    owners = np.tile(np.append(np.arange(num_clients), -1), num_labels)
    owner = np.empty(len(labels), dtype=np.int64)
    owner[order] = np.repeat(owners, np.column_stack([counts, leftover]).ravel())
    return owner


def _even_counts(labels: np.ndarray, member: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``counts[c, k]`` splitting each class evenly among its holders (``member[k, c]``); +1 remainders at random."""
    sizes = np.bincount(labels, minlength=member.shape[1])
    priority = np.where(member, rng.random(member.shape), np.inf)
    rank = np.argsort(np.argsort(priority, axis=0), axis=0)
    base, extra = np.divmod(sizes, np.maximum(member.sum(0), 1))
    return (member * (base + (rank < extra))).T


def _top_up(owner: np.ndarray, min_size: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bring client k to ``min_size[k]`` samples in one pass, without resampling.

    Peers redraw the whole Dirichlet split until every client is large enough, which runs for hours or
    forever at small alpha and many clients (PFLlib #130, FL-bench #73). Here the missing samples are drawn
    uniformly from every client's surplus beyond its own minimum (so large clients give most) and handed to
    the small clients. Feasible whenever ``min_size.sum()`` <= the number of owned samples.
    """
    need = np.maximum(min_size - np.bincount(owner[owner >= 0], minlength=len(min_size)), 0)
    if need.any():
        rank = _random_rank(owner, rng)
        spare = np.flatnonzero((owner >= 0) & (rank >= min_size[np.maximum(owner, 0)]))
        owner = owner.copy()
        owner[rng.choice(spare, need.sum(), replace=False)] = np.repeat(np.arange(len(min_size)), need)
    return owner


def _dirichlet_owner(labels: np.ndarray, num_classes: int, num_owners: int, alpha: float,
                     min_size: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per class c, owner shares p_c ~ Dir(alpha 1_K) and multinomial counts, then the bounded top-up."""
    shares = rng.dirichlet(np.full(num_owners, alpha), size=num_classes)
    counts = rng.multinomial(np.bincount(labels, minlength=num_classes), shares)
    return _top_up(_deal_by_counts(labels, counts, rng), min_size, rng)


def _in_order(shares: np.ndarray, num_clients: int) -> np.ndarray:
    """Group of each client, clients 0..K-1 in index order by ``shares`` (largest-remainder rounding).

    DAC assigns its rotation clusters and label groups this way: 70/20/5/5% of 100 clients are clients
    0-69, 70-89, 90-94, 95-99 (dac.md section 1.4).
    """
    exact = shares * num_clients
    counts = np.floor(exact + 1e-9).astype(np.int64)
    counts[np.argsort(counts - exact, kind="stable")[: num_clients - counts.sum()]] += 1
    return np.repeat(np.arange(len(counts)), counts)


# --- schemes ---------------------------------------------------------------------------------------------

def iid(pool: Pool, rng: np.random.Generator, *, num_clients: int) -> Deal:
    """IID and balanced (sizes differ by at most one): the IID baseline of FedAvg (McMahan et al. 2017)."""
    num_clients = _int("num_clients", num_clients, 1)
    return Deal(rng.permutation(np.arange(len(pool.y)) % num_clients), num_clients)


def dirichlet(pool: Pool, rng: np.random.Generator, *, num_clients: int, alpha: float,
              min_size: int = 10) -> Deal:
    """Dirichlet label skew: each class is split over clients by shares p_c ~ Dir(alpha).

    Label skew by a Dirichlet concentration alpha follows Hsu et al. 2019 ("Measuring the effects of
    non-identical data distribution"); the per-class form over clients is the one of NIID-Bench
    (Li et al. 2022, ``noniid-labeldir``), FedLab ``hetero_dir_partition`` and PFLlib ``dir``. Client sizes
    therefore vary too. The minimum size (NIID-Bench's ``min_require_size`` = 10) is reached by the
    bounded-time ``_top_up`` instead of the peers' resample-until-it-fits loop.
    """
    labels = _labels(pool, "dirichlet")
    num_clients = _int("num_clients", num_clients, 1)
    alpha = _real("alpha", alpha, strict=True)
    min_size = _check_min_size(min_size, num_clients, pool)
    owner = _dirichlet_owner(labels, pool.num_classes, num_clients, alpha, np.full(num_clients, min_size), rng)
    return Deal(owner, num_clients)


def classes_per_client(pool: Pool, rng: np.random.Generator, *, num_clients: int, k: int) -> Deal:
    """k classes per client (NIID-Bench ``#label{k}``, Li et al. 2022): client i holds class i mod C plus
    k-1 other random classes; each class is split evenly at random among its holders (unheld classes unused).
    """
    labels = _labels(pool, "classes_per_client")
    num_clients = _int("num_clients", num_clients, 1)
    k = _int("k", k, 1)
    num_classes = pool.num_classes
    if k > num_classes:
        _fail("k", k, f"at most num_classes={num_classes}")
    member = np.zeros((num_clients, num_classes), dtype=bool)
    for i in range(num_clients):
        member[i, i % num_classes] = True
        member[i, rng.choice(np.delete(np.arange(num_classes), i % num_classes), k - 1, replace=False)] = True
    return Deal(_deal_by_counts(labels, _even_counts(labels, member, rng), rng), num_clients)


def shards(pool: Pool, rng: np.random.Generator, *, num_clients: int, shards_per_client: int = 2) -> Deal:
    """Pathological non-IID of FedAvg (McMahan et al. 2017): sort by label, cut into num_clients x
    shards_per_client equal shards, give each client shards_per_client random shards (2 in the paper).
    """
    labels = _labels(pool, "shards")
    num_clients = _int("num_clients", num_clients, 1)
    num_shards = num_clients * _int("shards_per_client", shards_per_client, 1)
    if num_shards > len(labels):
        _fail("shards_per_client", shards_per_client,
              f"small enough for num_clients x shards_per_client <= {len(labels)} samples")
    order = np.lexsort((rng.random(len(labels)), labels))
    shard_owner = rng.permutation(num_shards) % num_clients
    owner = np.empty(len(labels), dtype=np.int64)
    owner[order] = shard_owner[np.arange(len(labels)) * num_shards // len(labels)]
    return Deal(owner, num_clients)


def quantity(pool: Pool, rng: np.random.Generator, *, num_clients: int, sigma: float, min_size: int = 10) -> Deal:
    """Quantity skew with IID labels: client sizes proportional to log-normal(0, sigma) draws, as FedLab's
    ``lognormal_unbalance_split`` (NIID-Bench, Li et al. 2022, studies quantity skew with Dirichlet sizes).
    ``min_size`` samples are reserved per client first and the rest dealt by multinomial, so it always ends.
    """
    num_clients = _int("num_clients", num_clients, 1)
    sigma = _real("sigma", sigma)
    min_size = _check_min_size(min_size, num_clients, pool)
    weights = rng.lognormal(0.0, sigma, num_clients)
    sizes = min_size + rng.multinomial(len(pool.y) - min_size * num_clients, weights / weights.sum())
    return Deal(rng.permutation(np.repeat(np.arange(num_clients), sizes)), num_clients)


def label_groups(pool: Pool, rng: np.random.Generator, *, num_clients: int, groups: list[list[int]],
                 shares: list[float]) -> Deal:
    """Label groups of DAC's label shift (Listo Zec et al. 2022; dac.md section 1.4): clients split in index
    order by ``shares`` into groups, each restricted to its class set (CIFAR-10 vehicles {0,1,8,9} for the
    first 40%, animals {2..7} for the rest). Each class is split evenly at random among the clients whose
    group holds it, so clients of a group are IID within it. The group is the planted cluster.
    """
    labels = _labels(pool, "label_groups")
    num_clients = _int("num_clients", num_clients, 1)
    if not isinstance(groups, (list, tuple)) or not groups:
        _fail("groups", groups, "a non-empty list of class lists")
    client_group = _in_order(_shares("shares", shares, len(groups)), num_clients)
    member = np.zeros((num_clients, pool.num_classes), dtype=bool)
    for g, classes in enumerate(groups):
        if (not isinstance(classes, (list, tuple)) or not classes
                or not all(isinstance(c, (int, np.integer)) and 0 <= c < pool.num_classes for c in classes)):
            _fail(f"groups[{g}]", classes, f"a non-empty list of class ids in [0, {pool.num_classes})")
        member[np.ix_(client_group == g, classes)] = True
    return Deal(_deal_by_counts(labels, _even_counts(labels, member, rng), rng), num_clients, client_group)


def clusters(pool: Pool, rng: np.random.Generator, *, num_clients: int, num_clusters: int, alpha: float = 0.5,
             disjoint: bool = False, min_size: int = 10) -> Deal:
    """Planted clusters: C clusters with their own label distributions; clients of a cluster are IID within it.

    Labels are first dealt to clusters, either by per-class Dirichlet(alpha) shares (as ``dirichlet``, with
    ``min_size`` per member client guaranteed) or, with ``disjoint: true``, as disjoint random class sets
    (``alpha`` unused), the label-shift cluster structure of DAC and of clustered FL (IFCA, Ghosh et al.
    2020; CFL, Sattler et al. 2020). Clients are assigned to clusters in equal shares in index order and
    each cluster's samples are split evenly among its clients. This construction is pcl's own (reconstructed).
    """
    labels = _labels(pool, "clusters")
    num_clients = _int("num_clients", num_clients, 1)
    num_clusters = _int("num_clusters", num_clusters, 1)
    if num_clusters > num_clients:
        _fail("num_clusters", num_clusters, f"at most num_clients={num_clients}")
    if not isinstance(disjoint, bool):
        _fail("disjoint", disjoint, "true or false")
    client_cluster = _in_order(np.full(num_clusters, 1 / num_clusters), num_clients)
    if disjoint:
        if num_clusters > pool.num_classes:
            _fail("num_clusters", num_clusters, f"at most num_classes={pool.num_classes} when disjoint")
        member = np.zeros((num_clusters, pool.num_classes), dtype=bool)
        for g, classes in enumerate(np.array_split(rng.permutation(pool.num_classes), num_clusters)):
            member[g, classes] = True
        cluster_owner = _deal_by_counts(labels, _even_counts(labels, member, rng), rng)
    else:
        alpha = _real("alpha", alpha, strict=True)
        min_size = _check_min_size(min_size, num_clients, pool)
        cluster_min = min_size * np.bincount(client_cluster, minlength=num_clusters)
        cluster_owner = _dirichlet_owner(labels, pool.num_classes, num_clusters, alpha, cluster_min, rng)
    member = client_cluster[:, None] == np.arange(num_clusters)
    owner = _deal_by_counts(cluster_owner, _even_counts(cluster_owner, member, rng), rng)
    return Deal(owner, num_clients, client_cluster)


def natural(pool: Pool, rng: np.random.Generator, *, num_clients: int | None = None) -> Deal:
    """Natural partition: the source already says which client owns each sample (``pool.group``, as LEAF's
    writers or pcl's synthetic generators) and, if planted, each client's cluster (``pool.group_cluster``).
    ``num_clients``, if given, must match. ``rng`` is unused: nothing here is random.
    """
    if pool.group is None:
        raise ValueError(f"partition scheme 'natural' needs pool.group, which pool {pool.name!r} does not have")
    owner = np.asarray(pool.group, dtype=np.int64)
    found = int(owner.max()) + 1
    if num_clients is not None and _int("num_clients", num_clients, 1) != found:
        _fail("num_clients", num_clients, f"the {found} groups of pool {pool.name!r} (or left out)")
    cluster = None if pool.group_cluster is None else np.asarray(pool.group_cluster, dtype=np.int64)
    if cluster is not None and len(cluster) != found:
        raise ValueError(f"pool {pool.name!r}: group_cluster has {len(cluster)} entries for {found} groups")
    return Deal(owner, found, cluster)


SCHEMES: dict[str, Callable[..., Deal]] = {f.__name__: f for f in (
    iid, dirichlet, classes_per_client, shards, quantity, label_groups, clusters, natural)}


# --- covariate shift and splits --------------------------------------------------------------------------

def _keys(key: str, value, allowed: set[str]) -> dict:
    if not isinstance(value, dict):
        _fail(key, value, "a mapping")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ValueError(f"partition: unknown key(s) {unknown} in {key!r}; allowed: {sorted(allowed)}")
    return value


def _rotation(spec: dict, num_clients: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-client angle and rotation cluster: clients in index order by ``shares`` (DAC: 0/180/10/350 degrees
    at 70/20/5/5%), equal shares if omitted. Rotated clusters are also IFCA's benchmark (Ghosh et al. 2020).
    """
    spec = _keys("rotation", spec, {"angles", "shares"})
    angles = spec.get("angles")
    if not isinstance(angles, (list, tuple)) or not angles or not all(
            isinstance(a, (int, float)) and not isinstance(a, bool) for a in angles):
        _fail("rotation.angles", angles, "a non-empty list of angles in degrees")
    shares = _shares("rotation.shares", spec.get("shares", [1 / len(angles)] * len(angles)), len(angles))
    group = _in_order(shares, num_clients)
    return np.asarray(angles, dtype=np.float64)[group], group


def _noise(spec: dict, num_clients: int) -> np.ndarray:
    """Per-client std of additive Gaussian input noise: ``std`` (one value or one per client) or
    ``std_range: [lo, hi]`` spaced linearly over clients, as NIID-Bench's feature noise (party i gets
    sigma * i / (N - 1), Li et al. 2022).
    """
    spec = _keys("noise", spec, {"std", "std_range"})
    if len(spec) != 1:
        _fail("noise", spec, "exactly one of 'std' or 'std_range'")
    if "std_range" in spec:
        bounds = spec["std_range"]
        if not isinstance(bounds, (list, tuple)) or len(bounds) != 2:
            _fail("noise.std_range", bounds, "a list [low, high]")
        return np.linspace(_real("noise.std_range", bounds[0]), _real("noise.std_range", bounds[1]), num_clients)
    std = spec["std"]
    if isinstance(std, (list, tuple)):
        if len(std) != num_clients:
            _fail("noise.std", std, f"one number or a list of num_clients={num_clients} numbers")
        return np.array([_real("noise.std", s) for s in std], dtype=np.float64)
    return np.full(num_clients, _real("noise.std", std))


def _by_client(owner: np.ndarray, code: np.ndarray, num_clients: int) -> dict[str, list[np.ndarray]]:
    """Per split (``code`` 0/1/2 = train/val/test, anything else unused), each client's sorted sample indices."""
    out = {}
    for c, name in enumerate(SPLITS):
        idx = np.flatnonzero((owner >= 0) & (code == c))
        counts = np.bincount(owner[idx], minlength=num_clients)
        out[name] = np.split(idx[np.argsort(owner[idx], kind="stable")], np.cumsum(counts)[:-1])
    return out


def _split(owner: np.ndarray, num_clients: int, val_frac: float, test_frac: float,
           rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """Split each client's own samples at random: round(frac x size) to val and test, at least one each."""
    sizes = np.bincount(owner[owner >= 0], minlength=num_clients)
    n_val = np.maximum(1, np.rint(val_frac * sizes)).astype(np.int64)
    n_test = np.maximum(1, np.rint(test_frac * sizes)).astype(np.int64)
    small = sizes - n_val - n_test < 1
    if small.any():
        raise ValueError(f"partition: {small.sum()} of {num_clients} clients have too few samples for "
                         f"train/val/test splits (each needs >= 1, so >= 3 samples per client); "
                         f"their sizes: {sorted(set(sizes[small].tolist()))}; "
                         f"use fewer clients or a larger min_size")
    rank = _random_rank(owner, rng)
    safe = np.maximum(owner, 0)
    code = np.where(rank < n_val[safe], 1, np.where(rank < n_val[safe] + n_test[safe], 2, 0))
    return _by_client(owner, code, num_clients)


def _split_source_test(owner: np.ndarray, is_test: np.ndarray, num_clients: int, val_frac: float,
                       rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """Test = each client's samples of the source's test split; val = round(val_frac x the rest), at least one."""
    own_test = np.bincount(owner[(owner >= 0) & is_test], minlength=num_clients)
    rest = np.bincount(owner[(owner >= 0) & ~is_test], minlength=num_clients)
    n_val = np.maximum(1, np.rint(val_frac * rest)).astype(np.int64)
    bad = (own_test < 1) | (rest - n_val < 1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(f"partition: source_test needs every client to hold >= 1 sample of the source's test split "
                         f"and >= 2 others; {bad.sum()} of {num_clients} clients do not (client {first}: "
                         f"{own_test[first]} test, {rest[first]} other)")
    train_owner = np.where(is_test, -1, owner)
    rank = _random_rank(train_owner, rng)
    code = np.where(is_test, 2, np.where(rank < n_val[np.maximum(owner, 0)], 1, 0))
    return _by_client(owner, code, num_clients)


def _per_client(value) -> dict[str, int]:
    spec = _keys("per_client", value, set(SPLITS))
    missing = [s for s in SPLITS if s not in spec]
    if missing:
        _fail("per_client", value, f"a mapping with all of {list(SPLITS)} (sample counts per client)")
    return {s: _int(f"per_client.{s}", spec[s], 1) for s in SPLITS}


def _split_fixed(owner: np.ndarray, num_clients: int, sizes: dict[str, int], scheme: str, pool: Pool,
                 rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """Exactly ``sizes[split]`` samples per client and split, drawn at random without replacement from the
    client's own samples (so clients stay disjoint); the rest of its samples are left unused."""
    need = sum(sizes.values())
    if need * num_clients > len(pool.y):
        raise ValueError(f"partition: per_client asks for {need} samples ({sizes['train']} train + {sizes['val']} "
                         f"val + {sizes['test']} test) x num_clients={num_clients} = {need * num_clients}, more than "
                         f"the {len(pool.y)} samples of pool {pool.name!r}; use fewer clients or smaller splits")
    have = np.bincount(owner[owner >= 0], minlength=num_clients)
    short = np.flatnonzero(have < need)
    if short.size:
        raise ValueError(f"partition: per_client needs {need} samples per client, but scheme {scheme!r} dealt "
                         f"{short.size} of {num_clients} clients fewer (client {short[0]} has {have[short[0]]}, "
                         f"the smallest {have.min()}); use fewer clients or smaller splits")
    rank = _random_rank(owner, rng)
    return _by_client(owner, np.searchsorted(np.cumsum([sizes[s] for s in SPLITS]), rank, side="right"),
                      num_clients)


def _joint(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    """Cluster ids of the (a, b) pairs, so a label group and a rotation cluster compose into one cluster."""
    if a is None or b is None:
        return b if a is None else a
    return np.unique(np.column_stack([a, b]), axis=0, return_inverse=True)[1].ravel().astype(np.int64)


def partition(pool: Pool, spec: dict) -> Partition:
    """Deal ``pool`` to clients by ``spec`` (the config's ``data.partition`` mapping); deterministic in ``seed``."""
    if not isinstance(spec, dict) or "scheme" not in spec:
        raise ValueError(f"partition: the spec needs a 'scheme', one of {sorted(SCHEMES)}; got {spec!r}")
    name = spec["scheme"]
    if name not in SCHEMES:
        raise ValueError(f"partition: unknown scheme {name!r}; known: {sorted(SCHEMES)}")
    fn = SCHEMES[name]
    params = {p.name: p for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY}
    kwargs = {k: v for k, v in spec.items() if k not in COMMON_KEYS}
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ValueError(f"partition: unknown key(s) {unknown} for scheme {name!r}; "
                         f"allowed: {sorted(params)} and {list(COMMON_KEYS)}")
    missing = [p for p, par in params.items() if par.default is par.empty and p not in kwargs]
    if missing:
        raise ValueError(f"partition: scheme {name!r} needs key(s) {missing}")
    seed = _int("seed", spec.get("seed", 0), 0)
    sizes = _per_client(spec["per_client"]) if "per_client" in spec else None
    if sizes is not None and {"val_frac", "test_frac"} & set(spec):
        raise ValueError("partition: per_client fixes the size of every split; drop val_frac and test_frac")
    source_test = spec.get("source_test", False)
    if not isinstance(source_test, bool):
        _fail("source_test", source_test, "true or false")
    if source_test and ({"test_frac", "per_client"} & set(spec) or pool.is_test is None):
        raise ValueError("partition: source_test takes each client's test split from the source's own test split: "
                         f"it needs a source that has one (pool {pool.name!r} "
                         f"{'does not' if pool.is_test is None else 'does'}) and no test_frac or per_client")
    val_frac = _real("val_frac", spec.get("val_frac", 0.15), strict=True)
    test_frac = _real("test_frac", spec.get("test_frac", 0.25), strict=True)
    if val_frac + test_frac >= 1:
        _fail("val_frac + test_frac", val_frac + test_frac, "< 1 (train needs the rest)")

    rng = np.random.default_rng(seed)
    deal = fn(pool, rng, **kwargs)
    k = deal.num_clients
    rotation, rot_cluster = _rotation(spec["rotation"], k) if "rotation" in spec else (np.zeros(k), None)
    noise = _noise(spec["noise"], k) if "noise" in spec else np.zeros(k)
    cluster = _joint(deal.cluster, rot_cluster)
    if source_test:
        splits = _split_source_test(deal.owner, pool.is_test.astype(bool), k, val_frac, rng)
    elif sizes is None:
        splits = _split(deal.owner, k, val_frac, test_frac, rng)
    else:
        splits = _split_fixed(deal.owner, k, sizes, name, pool, rng)
    return Partition(**splits, rotation=rotation, noise=noise,
                     cluster=np.full(k, -1, dtype=np.int64) if cluster is None else cluster)


def partition_stats(pool: Pool, part: Partition) -> dict:
    """JSON-ready summary for ``stats.json``: per client sizes and class counts per split, shift and cluster,
    plus the label histogram of the pool and of the samples dealt out."""
    classify = pool.num_classes > 0

    def hist(idx: np.ndarray) -> list[int]:
        return np.bincount(pool.y[idx].astype(np.int64), minlength=pool.num_classes).tolist()

    clients = []
    for k in range(part.num_clients):
        entry = {"client": k, "cluster": int(part.cluster[k]), "rotation": float(part.rotation[k]),
                 "noise": float(part.noise[k]), "sizes": {s: len(part.split(s)[k]) for s in SPLITS}}
        if classify:
            entry["class_counts"] = {s: hist(part.split(s)[k]) for s in SPLITS}
        clients.append(entry)
    dealt = np.concatenate([idx for s in SPLITS for idx in part.split(s)])
    return {
        "num_clients": part.num_clients,
        "num_classes": pool.num_classes,
        "num_samples": {"pool": len(pool.y), "dealt": len(dealt),
                        **{s: int(sum(len(i) for i in part.split(s))) for s in SPLITS}},
        "label_histogram": {"pool": hist(np.arange(len(pool.y))), "dealt": hist(dealt)} if classify else None,
        "clients": clients,
    }
