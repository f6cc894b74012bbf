"""Synthetic federated tasks whose ground truth is known, so that tests and reports can compare with theory.

Every generator draws all of its randomness from ``numpy.random.default_rng(seed)`` and returns a ``Pool``
whose ``group`` is the owning client of each sample; ``meta`` holds the ground truth (optima, means,
class means) as numpy arrays. Client 0 is the reference client ("the user" of WGA/OMA, task 0 in
docs/papers/wga-bias-correction.md and docs/papers/optimal-model-averaging.md); the heterogeneity knobs measure
how far every other client (a "collaborator") is from it.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import special_ortho_group

from pcl.data.types import Pool

Sizes = int | Sequence[int]


def linear_regression(
    *,
    num_clients: int = 10,
    samples_per_client: Sizes = 100,
    dim: int = 10,
    zeta: float = 0.0,
    sigma: float = 1.0,
    delta: float = 0.0,
    shared_direction: bool = False,
    seed: int = 0,
) -> Pool:
    """Per-client least squares y = <w_i, x> + N(0, sigma^2), x ~ N(0, h_i I): quadratics with known optima.

    The heterogeneity knobs are those of the WGA/BC reproduction (wga-bias-correction.md §4.2, "our
    design"): shift of optima w_i = w_0 + zeta * u_i with u_i a random unit vector (one shared direction
    when ``shared_direction``, as in §1.5 where b_i = zeta for every collaborator), so ||w_i - w_0|| = zeta
    exactly; curvature h_0 = 1, h_i = 1 + delta, so the population Hessians differ by exactly delta
    (§1.5 uses h_i = 1.2 and 2); label noise sigma. ``w_0 ~ N(0, I/dim)`` has norm about 1.
    """
    rng = np.random.default_rng(seed)
    sizes = _sizes(samples_per_client, num_clients)
    _positive_int("dim", dim)
    _non_negative(zeta=zeta, sigma=sigma, delta=delta)
    w0 = rng.standard_normal(dim) / np.sqrt(dim)
    optima = w0 + zeta * _collaborator_directions(rng, num_clients, dim, shared_direction)
    curvature = np.r_[1.0, np.full(num_clients - 1, 1.0 + delta)]
    group = np.repeat(np.arange(num_clients), sizes)
    x = rng.standard_normal((len(group), dim)) * np.sqrt(curvature[group])[:, None]
    y = np.einsum("nd,nd->n", x, optima[group]) + sigma * rng.standard_normal(len(group))
    return Pool(
        "synthetic_regression", x.astype(np.float32), y.astype(np.float32), num_classes=0, group=group,
        meta={"optima": optima, "curvature": curvature, "sigma": sigma},
    )


def mean_estimation(
    *,
    num_clients: int = 10,
    samples_per_client: Sizes = 10,
    mu0: float = 0.0,
    zeta: float = 0.0,
    distribution: str = "gaussian",
    sigma: float | None = None,
    nu: float | None = None,
    shared_direction: bool = False,
    seed: int = 0,
) -> Pool:
    """Scalar mean estimation (optimal-model-averaging.md §2): client i observes samples with mean mu_i.

    mu_0 = ``mu0`` and mu_i = mu0 + zeta * s_i with s_i = +-1 (random, or one shared sign, which gives the
    common bias Delta = zeta of that paper's Monte Carlo table), so |mu_i - mu_0| = zeta exactly.
    ``distribution``: "gaussian" (std ``sigma``, default 1), "student_t" (``nu`` > 2 degrees of freedom,
    rescaled to std ``sigma`` so only the tails differ from the Gaussian) or "bernoulli" (p_i = mu_i, std
    sqrt(p_i(1-p_i)); ``sigma`` must not be given) -- the three families of that paper's universal plot.

    Representation: x = ones [n, 1] and y = the sample (float32, ``num_classes == 0``), so the mean is the
    least-squares fit of a constant and every regression model/engine path applies unchanged.
    """
    rng = np.random.default_rng(seed)
    sizes = _sizes(samples_per_client, num_clients)
    _non_negative(zeta=zeta)
    means = mu0 + zeta * _collaborator_directions(rng, num_clients, 1, shared_direction)[:, 0]
    group = np.repeat(np.arange(num_clients), sizes)
    if distribution == "bernoulli":
        if sigma is not None or nu is not None:
            raise ValueError("distribution 'bernoulli' takes neither sigma nor nu (its std is sqrt(p(1-p)))")
        if means.min() < 0 or means.max() > 1:
            raise ValueError(f"bernoulli means mu0 +- zeta must lie in [0, 1], got [{means.min()}, {means.max()}]")
        y = rng.random(len(group)) < means[group]
        std = np.sqrt(means * (1 - means))
    elif distribution in ("gaussian", "student_t"):
        sigma = 1.0 if sigma is None else sigma
        _non_negative(sigma=sigma)
        if distribution == "gaussian":
            if nu is not None:
                raise ValueError("nu is only used by distribution 'student_t'")
            noise = rng.standard_normal(len(group))
        else:
            if nu is None or nu <= 2:
                raise ValueError(f"distribution 'student_t' needs nu > 2 (finite variance), got nu={nu}")
            noise = rng.standard_t(nu, len(group)) * np.sqrt((nu - 2) / nu)
        y = means[group] + sigma * noise
        std = np.full(num_clients, sigma)
    else:
        raise ValueError(f"unknown distribution {distribution!r}; expected gaussian, student_t or bernoulli")
    return Pool(
        "synthetic_mean", np.ones((len(group), 1), np.float32), np.asarray(y, np.float32), num_classes=0,
        group=group, meta={"means": means, "std": std, "distribution": distribution},
    )


def gaussian_mixture(
    *,
    num_clients: int = 20,
    samples_per_client: Sizes = 100,
    num_classes: int = 10,
    dim: int = 20,
    num_clusters: int = 4,
    shares: Sequence[float] | None = None,
    separation: float = 3.0,
    seed: int = 0,
) -> Pool:
    """Classification with planted client clusters: one task per cluster, clients of a cluster share it.

    A shared set of class means M (num_classes x dim, rows of norm about ``separation``; unit-variance
    Gaussian noise around them) is rotated by a random rotation per cluster, so every cluster is equally
    hard but a single model fits them badly: the analogue of DAC's rotated clusters (dac.md). Clients are
    dealt to clusters in index order by ``shares`` (default equal; e.g. DAC's 0.7/0.2/0.05/0.05), counts
    rounded by largest remainder. Labels are uniform within every client.
    """
    rng = np.random.default_rng(seed)
    sizes = _sizes(samples_per_client, num_clients)
    _positive_int("num_clusters", num_clusters)
    if num_classes < 2 or dim < 2:
        raise ValueError(f"num_classes and dim must be >= 2, got num_classes={num_classes}, dim={dim}")
    _non_negative(separation=separation)
    cluster = np.repeat(np.arange(num_clusters), _client_counts(shares, num_clusters, num_clients))
    base = rng.standard_normal((num_classes, dim)) * separation / np.sqrt(dim)
    class_means = np.stack([base @ special_ortho_group.rvs(dim, random_state=rng) for _ in range(num_clusters)])
    group = np.repeat(np.arange(num_clients), sizes)
    y = rng.integers(num_classes, size=len(group))
    x = class_means[cluster[group], y] + rng.standard_normal((len(group), dim))
    return Pool(
        "synthetic_mixture", x.astype(np.float32), y.astype(np.int64), num_classes=num_classes, group=group,
        group_cluster=cluster, meta={"class_means": class_means},
    )


def fedprox_synthetic(*, alpha: float = 0.0, beta: float = 0.0, num_clients: int = 30, seed: int = 0) -> Pool:
    """Synthetic(alpha, beta) of FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks").

    As in the official generator (litian96/FedProx, data/synthetic_*/generate_synthetic.py): d = 60,
    10 classes; client k has u_k ~ N(0, alpha), W_k ~ N(u_k, 1) [60 x 10], b_k ~ N(u_k, 1);
    B_k ~ N(0, beta), v_k ~ N(B_k, 1); x ~ N(v_k, Sigma) with Sigma_jj = j^-1.2; y = argmax(x W_k + b_k);
    n_k = int(lognormal(4, 2)) + 50 samples. alpha and beta are standard deviations, as in that code
    (the paper writes N(0, alpha)). alpha controls how much the local models differ, beta the inputs.
    """
    dim, num_classes = 60, 10
    rng = np.random.default_rng(seed)
    _positive_int("num_clients", num_clients)
    _non_negative(alpha=alpha, beta=beta)
    sizes = rng.lognormal(4, 2, num_clients).astype(np.int64) + 50
    u, b_mean = rng.normal(0, alpha, num_clients), rng.normal(0, beta, num_clients)
    v = rng.normal(b_mean[:, None], 1, (num_clients, dim))
    w = rng.normal(u[:, None, None], 1, (num_clients, dim, num_classes))
    b = rng.normal(u[:, None], 1, (num_clients, num_classes))
    scale = np.arange(1, dim + 1) ** -0.6  # sqrt of Sigma_jj = j^-1.2
    xs = [v[k] + scale * rng.standard_normal((n, dim)) for k, n in enumerate(sizes)]
    ys = [np.argmax(xk @ w[k] + b[k], axis=1) for k, xk in enumerate(xs)]
    return Pool(
        "synthetic_fedprox", np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64),
        num_classes=num_classes, group=np.repeat(np.arange(num_clients), sizes),
        meta={"u": u, "B": b_mean, "v": v, "W": w, "b": b},
    )


def _collaborator_directions(rng: np.random.Generator, num_clients: int, dim: int, shared: bool) -> np.ndarray:
    """Unit vectors [num_clients, dim]: zero for client 0, random (or one shared) for the others."""
    g = rng.standard_normal((1 if shared else num_clients - 1, dim))
    u = g / np.linalg.norm(g, axis=1, keepdims=True)
    return np.vstack([np.zeros((1, dim)), np.broadcast_to(u, (num_clients - 1, dim))])


def _client_counts(shares: Sequence[float] | None, num_groups: int, total: int) -> np.ndarray:
    """Split ``total`` clients by ``shares`` with the largest-remainder rule (ties to the lower index)."""
    p = np.full(num_groups, 1 / num_groups) if shares is None else np.asarray(shares, float)
    if p.shape != (num_groups,) or p.min() < 0 or not np.isclose(p.sum(), 1):
        raise ValueError(f"shares must be {num_groups} non-negative numbers summing to 1, got {shares}")
    counts = np.floor(p * total).astype(np.int64)
    order = np.argsort(-(p * total - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts


def _sizes(samples_per_client: Sizes, num_clients: int) -> np.ndarray:
    _positive_int("num_clients", num_clients)
    sizes = np.asarray(samples_per_client)
    if sizes.ndim == 0:
        sizes = np.full(num_clients, sizes)
    if sizes.shape != (num_clients,) or not np.issubdtype(sizes.dtype, np.integer) or sizes.min() < 1:
        raise ValueError(
            f"samples_per_client must be a positive integer or {num_clients} of them, got {samples_per_client}"
        )
    return sizes.astype(np.int64)


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _non_negative(**values: float) -> None:
    for name, value in values.items():
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")
