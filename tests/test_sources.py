"""Data sources: the registry, digits, the synthetic generators' knobs, the source hash and the schema."""
from __future__ import annotations

import inspect

import jsonschema
import numpy as np
import pytest
import yaml
from scipy.stats import kurtosis
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from pcl.data import synthetic
from pcl.data.sources import SCHEMA_PATH, SOURCES, load_source, source_keys, source_sha256
from pcl.data.types import Pool

SYNTHETIC = ["synthetic_regression", "synthetic_mean", "synthetic_mixture", "synthetic_fedprox"]


@pytest.fixture(scope="module")
def schema():
    return yaml.safe_load(SCHEMA_PATH.read_text())


def schema_errors(schema, spec):
    return list(jsonschema.Draft202012Validator(schema).iter_errors(spec))


def per_client(pool, values):
    return [values[pool.group == k] for k in range(pool.group.max() + 1)]


# --- registry ---------------------------------------------------------------------------------------------

def test_digits():
    pool = load_source({"name": "digits"})
    assert pool.x.shape == (1797, 1, 8, 8) and pool.x.dtype == np.float32
    assert pool.x.min() == 0 and pool.x.max() == 1  # 16 / 16
    assert pool.y.dtype == np.int64 and pool.num_classes == 10
    assert np.bincount(pool.y).min() > 170  # about 180 of each digit
    assert pool.group is None and pool.is_test is None


def test_unknown_name_and_key_are_named():
    with pytest.raises(ValueError, match="unknown data source 'digitz'"):
        load_source({"name": "digitz"})
    with pytest.raises(ValueError, match=r"\['zetta'\].*'synthetic_regression'"):
        load_source({"name": "synthetic_regression", "zetta": 0.1})
    with pytest.raises(ValueError, match=r"\['root'\]"):
        load_source({"name": "mnist", "root": "/elsewhere"})
    with pytest.raises(ValueError, match="'name'"):
        load_source({"num_clients": 3})


@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_shapes_and_determinism(name):
    a, b = load_source({"name": name, "seed": 3}), load_source({"name": name, "seed": 3})
    c = load_source({"name": name, "seed": 4})
    assert a.x.dtype == np.float32 and len(a.x) == len(a.y) == len(a.group)
    assert a.y.dtype == (np.int64 if a.num_classes else np.float32)
    assert a.group.dtype == np.int64 and np.all(np.diff(a.group) >= 0)
    assert source_sha256(a) == source_sha256(b) != source_sha256(c)
    np.testing.assert_array_equal(a.x, b.x)


def test_source_sha256_covers_every_array():
    pool = load_source({"name": "synthetic_mixture", "num_clients": 4, "num_clusters": 2})
    base = source_sha256(pool)
    for field in ("x", "y", "group", "group_cluster"):
        changed = getattr(pool, field).copy()
        changed.flat[0] += 1
        assert source_sha256(_replace(pool, **{field: changed})) != base, field
    assert source_sha256(_replace(pool, is_test=np.zeros(len(pool.y), bool))) != base
    assert source_sha256(_replace(pool, x=pool.x.reshape(len(pool.x), 4, 5))) != base  # same bytes, new shape


def _replace(pool, **fields):
    from dataclasses import replace
    return replace(pool, **fields)


# --- linear regression --------------------------------------------------------------------------------------

def test_regression_optima_spread_is_zeta_and_data_follow_them():
    pool = synthetic.linear_regression(num_clients=6, samples_per_client=4000, dim=5, zeta=0.7, sigma=0.5, seed=1)
    optima = pool.meta["optima"]
    np.testing.assert_allclose(np.linalg.norm(optima[1:] - optima[0], axis=1), 0.7)
    fits, residual_std = [], []
    for x, y in zip(per_client(pool, pool.x), per_client(pool, pool.y)):
        w = np.linalg.lstsq(x, y, rcond=None)[0]
        fits.append(w)
        residual_std.append(np.std(y - x @ w))
    np.testing.assert_allclose(fits, optima, atol=5 * 0.5 / np.sqrt(4000))  # 5 standard errors
    np.testing.assert_allclose(np.linalg.norm(np.array(fits[1:]) - fits[0], axis=1), 0.7, atol=0.05)
    np.testing.assert_allclose(residual_std, 0.5, rtol=0.03)
    directions = (optima[1:] - optima[0]) / 0.7
    assert np.abs(directions @ directions.T - np.eye(5)).max() > 0.1  # independent directions


def test_regression_shared_direction_and_curvature():
    pool = synthetic.linear_regression(
        num_clients=4, samples_per_client=20000, dim=3, zeta=0.3, delta=1.0, shared_direction=True, seed=2
    )
    shifts = pool.meta["optima"][1:] - pool.meta["optima"][0]
    np.testing.assert_allclose(shifts, np.broadcast_to(shifts[0], shifts.shape))
    np.testing.assert_allclose(pool.meta["curvature"], [1, 2, 2, 2])
    second_moments = [np.mean(x**2) for x in per_client(pool, pool.x)]  # E x x^T = h_i I
    np.testing.assert_allclose(second_moments, [1, 2, 2, 2], rtol=0.03)


def test_regression_zero_zeta_means_one_task():
    pool = synthetic.linear_regression(num_clients=5, zeta=0.0, seed=0)
    assert np.ptp(pool.meta["optima"], axis=0).max() == 0


@pytest.mark.parametrize(
    "kwargs,key",
    [({"zeta": -1}, "zeta"), ({"sigma": float("nan")}, "sigma"), ({"num_clients": 0}, "num_clients"),
     ({"samples_per_client": [5, 5]}, "samples_per_client"),
     ({"samples_per_client": 2.5}, "samples_per_client")],
)
def test_regression_bad_values_are_named(kwargs, key):
    with pytest.raises(ValueError, match=key):
        synthetic.linear_regression(num_clients=kwargs.pop("num_clients", 3), **kwargs)


def test_unequal_client_sizes():
    pool = synthetic.linear_regression(num_clients=3, samples_per_client=[2, 5, 1])
    assert np.bincount(pool.group).tolist() == [2, 5, 1]


# --- mean estimation ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("distribution,kw", [("gaussian", {"sigma": 2.0}), ("student_t", {"sigma": 2.0, "nu": 5.0})])
def test_mean_estimation_means_and_std(distribution, kw):
    pool = synthetic.mean_estimation(
        num_clients=5, samples_per_client=40000, mu0=1.0, zeta=0.5, distribution=distribution, seed=3, **kw
    )
    assert pool.x.shape == (200000, 1) and np.all(pool.x == 1) and pool.num_classes == 0
    means = pool.meta["means"]
    assert means[0] == 1.0 and np.allclose(np.abs(means[1:] - 1.0), 0.5)
    samples = per_client(pool, pool.y)
    np.testing.assert_allclose([s.mean() for s in samples], means, atol=0.05)
    np.testing.assert_allclose([s.std() for s in samples], 2.0, rtol=0.05)
    excess = kurtosis(samples[0])  # Student-t(5): 6; Gaussian: 0
    assert excess > 2 if distribution == "student_t" else abs(excess) < 0.1


def test_mean_estimation_bernoulli_and_shared_sign():
    pool = synthetic.mean_estimation(
        num_clients=4, samples_per_client=20000, mu0=0.3, zeta=0.2, distribution="bernoulli",
        shared_direction=True, seed=4,
    )
    assert set(np.unique(pool.y)) == {0.0, 1.0}
    means = pool.meta["means"]
    assert np.ptp(means[1:]) == 0 and np.isclose(abs(means[1] - 0.3), 0.2)
    np.testing.assert_allclose([s.mean() for s in per_client(pool, pool.y)], means, atol=0.015)
    np.testing.assert_allclose(pool.meta["std"], np.sqrt(means * (1 - means)))


@pytest.mark.parametrize(
    "kwargs,message",
    [({"distribution": "bernoulli", "sigma": 1.0}, "sigma"), ({"distribution": "student_t"}, "nu > 2"),
     ({"distribution": "student_t", "nu": 2.0}, "nu=2.0"), ({"distribution": "gaussian", "nu": 3.0}, "nu"),
     ({"distribution": "bernoulli", "mu0": 0.9, "zeta": 0.2}, r"\[0, 1\]"),
     ({"distribution": "cauchy"}, "'cauchy'")],
)
def test_mean_estimation_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthetic.mean_estimation(num_clients=3, **kwargs)


# --- gaussian mixture -------------------------------------------------------------------------------------

def test_mixture_planted_clusters_are_recoverable():
    pool = synthetic.gaussian_mixture(
        num_clients=20, samples_per_client=200, num_classes=5, dim=10, num_clusters=4,
        shares=[0.4, 0.3, 0.2, 0.1], seed=5,
    )
    assert np.bincount(pool.group_cluster).tolist() == [8, 6, 4, 2]
    features = np.stack([  # each client's class-conditional input means
        np.concatenate([x[y == c].mean(0) for c in range(5)])
        for x, y in zip(per_client(pool, pool.x), per_client(pool, pool.y))
    ])
    found = KMeans(n_clusters=4, n_init=10, random_state=0).fit_predict(features)
    assert adjusted_rand_score(pool.group_cluster, found) == 1.0


def test_mixture_clusters_are_rotations_of_one_task():
    means = synthetic.gaussian_mixture(num_clusters=3, num_classes=4, dim=6, seed=6).meta["class_means"]
    gram = np.einsum("kcd,ked->kce", means, means)  # rotations keep every inner product
    np.testing.assert_allclose(gram, np.broadcast_to(gram[0], gram.shape), atol=1e-10)
    assert np.abs(means[1] - means[0]).max() > 0.5


def test_mixture_shares_rounding_and_errors():
    pool = synthetic.gaussian_mixture(num_clients=5, num_clusters=2, shares=[0.5, 0.5], samples_per_client=2)
    assert pool.group_cluster.tolist() == [0, 0, 0, 1, 1]  # largest remainder, ties to the lower index
    pool = synthetic.gaussian_mixture(num_clients=100, num_clusters=4, shares=[0.7, 0.2, 0.05, 0.05])
    assert np.bincount(pool.group_cluster).tolist() == [70, 20, 5, 5]  # DAC's covariate-shift clusters
    with pytest.raises(ValueError, match="shares"):
        synthetic.gaussian_mixture(num_clusters=2, shares=[0.7, 0.7])
    with pytest.raises(ValueError, match="dim"):
        synthetic.gaussian_mixture(dim=1)


# --- FedProx synthetic ------------------------------------------------------------------------------------

def test_fedprox_generator_follows_the_paper():
    pool = synthetic.fedprox_synthetic(alpha=0.5, beta=2.0, num_clients=300, seed=7)
    m = pool.meta
    assert pool.x.shape[1] == 60 and pool.num_classes == 10
    sizes = np.bincount(pool.group)
    assert sizes.min() >= 50 and np.median(sizes) == pytest.approx(np.exp(4) + 50, rel=0.3)
    for k in (0, 1, 2):  # labels are the argmax of the client's own linear model
        x = pool.x[pool.group == k].astype(float)
        assert np.array_equal(pool.y[pool.group == k], np.argmax(x @ m["W"][k] + m["b"][k], axis=1))
    centred = pool.x - m["v"][pool.group]
    np.testing.assert_allclose(centred.var(0), np.arange(1, 61) ** -1.2, rtol=0.05)  # Sigma_jj = j^-1.2
    # alpha and beta are standard deviations (as in litian96/FedProx), not variances
    assert np.std(m["W"].mean(axis=(1, 2))) == pytest.approx(0.5, rel=0.15)
    assert np.std(m["v"].mean(axis=1)) == pytest.approx(np.sqrt(2.0**2 + 1 / 60), rel=0.15)


# --- schema -------------------------------------------------------------------------------------------------

def test_schema_keys_match_loader_signatures(schema):
    assert schema["properties"]["name"]["enum"] == list(SOURCES)
    allowed = {}
    for rule in schema["allOf"]:
        cond = rule["if"]["properties"]["name"]
        for name in cond.get("enum", [cond.get("const")]):
            allowed[name] = set(rule["then"]["propertyNames"]["enum"]) - {"name"}
    assert allowed == {name: set(source_keys(name)) for name in SOURCES}
    assert set(schema["properties"]) == {"name"}.union(*allowed.values())


def test_schema_accepts_every_default(schema):
    for name, loader in SOURCES.items():
        spec = {"name": name, **{
            k: p.default for k, p in inspect.signature(loader).parameters.items()
            if k != "root" and p.default is not None
        }}
        assert schema_errors(schema, spec) == [], name


@pytest.mark.parametrize(
    "spec,path,fragment",
    [
        ({"name": "digits", "num_clients": 3}, [], "'num_clients'"),
        ({"name": "synthetic_fedprox", "zeta": 0.1}, [], "'zeta'"),
        ({"name": "synthetic_regression", "zeta": -0.1}, ["zeta"], "-0.1"),
        ({"name": "synthetic_mean", "distribution": "cauchy"}, ["distribution"], "'cauchy'"),
        ({"name": "synthetic_mean", "nu": 2}, ["nu"], "2"),
        ({"name": "synthetic_mixture", "samples_per_client": [3, 0]}, ["samples_per_client"], "[3, 0]"),
        ({"name": "mnsit"}, ["name"], "'mnsit'"),
        ({"name": "fed_emnist", "max_per_client": 0}, ["max_per_client"], "0"),
        ({"name": "fed_emnist", "num_clients": 3}, [], "'num_clients'"),
    ],
)
def test_schema_errors_name_the_bad_key_or_value(schema, spec, path, fragment):
    errors = schema_errors(schema, spec)
    assert len(errors) == 1
    assert list(errors[0].absolute_path) == path and fragment in errors[0].message


@pytest.mark.parametrize("key,value", [("min_train", 0), ("min_test", 1.5), ("max_per_client", True)])
def test_fed_emnist_checks_its_options_before_downloading(tmp_path, key, value):
    with pytest.raises(ValueError, match=f"{key}: must be an integer >= 1, got {value!r}"):
        load_source({"name": "fed_emnist", key: value}, root=tmp_path)
    assert not any(tmp_path.iterdir())


def test_subsample_keeps_a_seeded_random_share_with_its_test_marks():
    from pcl.data.sources import subsampled

    n = 1000
    pool = Pool("p", np.arange(n, dtype=np.float32)[:, None], np.arange(n) % 10, 10, is_test=np.arange(n) >= 800)
    kept = subsampled(pool, 0.1, seed=4)
    assert len(kept.y) == 100 and np.all(np.diff(kept.x[:, 0]) > 0)  # a subset, in pool order
    idx = kept.x[:, 0].astype(int)
    assert np.array_equal(kept.y, pool.y[idx]) and np.array_equal(kept.is_test, pool.is_test[idx])
    assert np.array_equal(subsampled(pool, 0.1, seed=4).x, kept.x)
    assert not np.array_equal(subsampled(pool, 0.1, seed=5).x, kept.x)
    assert subsampled(pool, 1.0, seed=0) is pool
    with pytest.raises(ValueError, match="subsample"):
        subsampled(pool, 0.0, seed=0)
