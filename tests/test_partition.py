"""Partitions: sizes, disjointness, label sets, shift parameters, determinism, bounded-time Dirichlet, errors,
stats and the config schema (pcl/data/partition.py, pcl/schemas/partition.schema.yaml)."""
from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import yaml
from sklearn.datasets import load_digits

from pcl.data.partition import COMMON_KEYS, SCHEMES, dirichlet, partition, partition_stats
from pcl.data.types import Pool

SCHEMA = yaml.safe_load((Path(__file__).parents[1] / "pcl/schemas/partition.schema.yaml").read_text())
DAC_GROUPS = {"groups": [[0, 1, 8, 9], [2, 3, 4, 5, 6, 7]], "shares": [0.4, 0.6]}

# one valid spec per scheme (natural runs on the synthetic pool)
SPECS = {
    "iid": {"num_clients": 20},
    "dirichlet": {"num_clients": 20, "alpha": 0.3},
    "classes_per_client": {"num_clients": 20, "k": 2},
    "shards": {"num_clients": 20},
    "quantity": {"num_clients": 20, "sigma": 1.0},
    "label_groups": {"num_clients": 10, **DAC_GROUPS},
    "clusters": {"num_clients": 20, "num_clusters": 4, "alpha": 0.3},
    "natural": {},
}


@pytest.fixture(scope="module")
def digits() -> Pool:
    d = load_digits()
    return Pool("digits", (d.images / 16).astype(np.float32)[:, None], d.target.astype(np.int64), 10)


@pytest.fixture(scope="module")
def synthetic() -> Pool:
    """6 clients (20..45 samples each) in 2 planted clusters, a regression task as pcl's synthetic sources."""
    group = np.repeat(np.arange(6), [20, 25, 30, 35, 40, 45])
    rng = np.random.default_rng(1)
    return Pool("toy", rng.normal(size=(len(group), 3)).astype(np.float32),
                rng.normal(size=len(group)).astype(np.float32), 0,
                group=rng.permutation(group), group_cluster=np.array([0, 0, 0, 1, 1, 1]))


def pool_for(scheme, digits, synthetic):
    return synthetic if scheme == "natural" else digits


def all_indices(part, k):
    return np.concatenate([part.train[k], part.val[k], part.test[k]])


def labels_of(pool, part, k):
    return set(np.unique(pool.y[all_indices(part, k)]).tolist())


def mean_label_entropy(pool, part):
    ent = []
    for k in range(part.num_clients):
        p = np.bincount(pool.y[all_indices(part, k)], minlength=pool.num_classes) / len(all_indices(part, k))
        p = p[p > 0]
        ent.append(-(p * np.log(p)).sum())
    return float(np.mean(ent))


@pytest.mark.parametrize("scheme", sorted(SPECS))
def test_every_sample_goes_to_at_most_one_client(scheme, digits, synthetic):
    pool = pool_for(scheme, digits, synthetic)
    part = partition(pool, {"scheme": scheme, **SPECS[scheme]})
    k = part.num_clients
    assert k == SPECS[scheme].get("num_clients", 6)
    assert part.rotation.shape == part.noise.shape == part.cluster.shape == (k,)
    dealt = np.concatenate([all_indices(part, c) for c in range(k)])
    assert len(np.unique(dealt)) == len(dealt)                      # no overlap, across clients and splits
    assert dealt.min() >= 0 and dealt.max() < len(pool.y)
    if scheme != "classes_per_client":                              # k=2 of 10 classes may leave classes unheld
        assert len(dealt) == len(pool.y)
    for split in ("train", "val", "test"):
        for idx in part.split(split):
            assert idx.dtype == np.int64 and len(idx) >= 1 and np.all(np.diff(idx) > 0)
    sizes = np.array([len(all_indices(part, c)) for c in range(k)])
    for split, frac in (("val", 0.15), ("test", 0.25)):               # the default fractions, rounded
        counts = np.array([len(idx) for idx in part.split(split)])
        assert np.all(np.abs(counts - frac * sizes) <= 0.5)


@pytest.mark.parametrize("scheme", sorted(SPECS))
def test_same_seed_same_arrays_other_seed_other_arrays(scheme, digits, synthetic):
    pool = pool_for(scheme, digits, synthetic)
    a, b, c = (partition(pool, {"scheme": scheme, **SPECS[scheme], "seed": s}) for s in (3, 3, 4))
    for split in ("train", "val", "test"):
        assert all(np.array_equal(x, y) for x, y in zip(a.split(split), b.split(split)))
    assert np.array_equal(a.cluster, b.cluster)
    assert any(not np.array_equal(x, y) for x, y in zip(a.train, c.train))
    if scheme != "natural":                                         # the deal itself is random, not only the splits
        assert any(not np.array_equal(np.sort(all_indices(a, k)), np.sort(all_indices(c, k)))
                   for k in range(a.num_clients))


def test_iid_is_balanced_and_unskewed(digits):
    part = partition(digits, {"scheme": "iid", "num_clients": 7})
    sizes = [len(all_indices(part, k)) for k in range(7)]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 1797
    assert mean_label_entropy(digits, part) > 0.95 * np.log(10)
    assert np.all(part.cluster == -1) and np.all(part.rotation == 0) and np.all(part.noise == 0)


def test_dirichlet_label_skew_grows_as_alpha_shrinks(digits):
    ent = {a: mean_label_entropy(digits, partition(digits, {"scheme": "dirichlet", "num_clients": 20, "alpha": a}))
           for a in (0.1, 1.0, 100.0)}
    iid = mean_label_entropy(digits, partition(digits, {"scheme": "iid", "num_clients": 20}))
    assert ent[0.1] < 0.6 * iid and ent[0.1] < ent[1.0] < ent[100.0]
    assert ent[100.0] > 0.95 * iid


def test_dirichlet_1000_clients_small_alpha_ends_and_meets_min_size(digits):
    # without the top-up, hundreds of the 1000 clients are empty: resampling until none is would not end
    raw = dirichlet(digits, np.random.default_rng(0), num_clients=1000, alpha=0.05, min_size=0)
    assert (np.bincount(raw.owner, minlength=1000) == 0).sum() > 100
    deal = dirichlet(digits, np.random.default_rng(0), num_clients=1000, alpha=0.05, min_size=1)
    assert np.bincount(deal.owner, minlength=1000).min() >= 1 and np.all(deal.owner >= 0)
    # the full partition with splits: 500 clients x min_size 3 = 1500 of 1797 samples
    part = partition(digits, {"scheme": "dirichlet", "num_clients": 500, "alpha": 0.05, "min_size": 3})
    assert min(len(all_indices(part, k)) for k in range(500)) >= 3
    assert mean_label_entropy(digits, part) < 0.5 * np.log(10)      # the top-up keeps the skew


def test_classes_per_client_holds_exactly_k_classes(digits):
    part = partition(digits, {"scheme": "classes_per_client", "num_clients": 20, "k": 3})
    for k in range(20):
        labels = labels_of(digits, part, k)
        assert len(labels) == 3 and k % 10 in labels               # NIID-Bench: client i holds class i mod C


def test_shards_give_two_label_sorted_shards_per_client(digits):
    part = partition(digits, {"scheme": "shards", "num_clients": 30, "shards_per_client": 2})
    sizes = np.array([len(all_indices(part, k)) for k in range(30)])
    shard = 1797 / 60
    assert np.all(sizes >= 2 * np.floor(shard)) and np.all(sizes <= 2 * np.ceil(shard))
    counts = [len(labels_of(digits, part, k)) for k in range(30)]
    assert max(counts) <= 4 and np.mean(counts) < 3                 # a shard straddles at most one class boundary


def test_quantity_spreads_sizes_keeps_labels_iid(digits):
    def cv(spec):
        part = partition(digits, {"scheme": "quantity", "num_clients": 20, **spec})
        sizes = np.array([len(all_indices(part, k)) for k in range(20)])
        assert sizes.min() >= spec["min_size"] and sizes.sum() == 1797
        return sizes.std() / sizes.mean(), part
    skewed, part = cv({"sigma": 1.5, "min_size": 10})
    flat, _ = cv({"sigma": 0.0, "min_size": 10})
    assert skewed > 0.6 and flat < 0.25
    big = max(range(20), key=lambda k: len(all_indices(part, k)))
    assert labels_of(digits, part, big) == set(range(10))


def test_label_groups_follow_dac_vehicles_and_animals(digits):
    part = partition(digits, {"scheme": "label_groups", "num_clients": 10, **DAC_GROUPS})
    assert part.cluster.tolist() == [0] * 4 + [1] * 6                  # first 40% of clients, in index order
    for k in range(10):
        assert labels_of(digits, part, k) == ({0, 1, 8, 9} if k < 4 else {2, 3, 4, 5, 6, 7})
        assert set(np.unique(digits.y[part.test[k]])) <= labels_of(digits, part, k)


def test_rotation_clusters_follow_shares_in_index_order(digits):
    part = partition(digits, {"scheme": "iid", "num_clients": 100,
                              "rotation": {"angles": [0, 180, 10, 350], "shares": [0.7, 0.2, 0.05, 0.05]}})
    assert part.rotation.tolist() == [0] * 70 + [180] * 20 + [10] * 5 + [350] * 5
    assert part.cluster.tolist() == [0] * 70 + [1] * 20 + [2] * 5 + [3] * 5
    # largest remainder: 10 clients at 70/20/5/5% -> 7, 2, 1, 0
    small = partition(digits, {"scheme": "iid", "num_clients": 10,
                               "rotation": {"angles": [0, 180, 10, 350], "shares": [0.7, 0.2, 0.05, 0.05]}})
    assert small.rotation.tolist() == [0] * 7 + [180] * 2 + [10]
    equal = partition(digits, {"scheme": "iid", "num_clients": 4, "rotation": {"angles": [0, 90]}})
    assert equal.rotation.tolist() == [0, 0, 90, 90]


def test_rotation_composes_with_label_groups_into_joint_clusters(digits):
    part = partition(digits, {"scheme": "label_groups", "num_clients": 10, **DAC_GROUPS,
                              "rotation": {"angles": [0, 180], "shares": [0.5, 0.5]}})
    # groups 0000111111 x rotations 0000011111 -> pairs (0,0)x4, (1,0)x1, (1,1)x5
    assert part.cluster.tolist() == [0] * 4 + [1] + [2] * 5


def test_noise_std_per_client(digits):
    base = {"scheme": "iid", "num_clients": 5}
    assert partition(digits, {**base, "noise": {"std": 0.3}}).noise.tolist() == [0.3] * 5
    per_client = [0, 0.1, 0.2, 0.3, 0.4]
    assert partition(digits, {**base, "noise": {"std": per_client}}).noise.tolist() == per_client
    np.testing.assert_allclose(partition(digits, {**base, "noise": {"std_range": [0, 1]}}).noise, [0, .25, .5, .75, 1])
    with pytest.raises(ValueError, match="noise.std"):
        partition(digits, {**base, "noise": {"std": [0.1, 0.2]}})


def test_planted_clusters_share_label_distributions(digits):
    part = partition(digits, {"scheme": "clusters", "num_clients": 20, "num_clusters": 4, "alpha": 0.2})
    assert part.cluster.tolist() == np.repeat(np.arange(4), 5).tolist()
    dist = np.array([np.bincount(digits.y[all_indices(part, k)], minlength=10) / len(all_indices(part, k))
                     for k in range(20)])
    tv = 0.5 * np.abs(dist[:, None] - dist[None]).sum(-1)
    same = part.cluster[:, None] == part.cluster[None]
    off_diag = ~np.eye(20, dtype=bool)
    assert tv[same & off_diag].mean() < 0.2 < tv[~same].mean()

    disjoint = partition(digits, {"scheme": "clusters", "num_clients": 8, "num_clusters": 4, "disjoint": True})
    per_cluster = [set().union(*(labels_of(digits, disjoint, k) for k in range(8) if disjoint.cluster[k] == g))
                   for g in range(4)]
    assert sum(map(len, per_cluster)) == 10 and set().union(*per_cluster) == set(range(10))


def test_natural_uses_the_pools_groups(synthetic):
    part = partition(synthetic, {"scheme": "natural", "seed": 0})
    for k in range(6):
        np.testing.assert_array_equal(np.sort(all_indices(part, k)), np.flatnonzero(synthetic.group == k))
    assert part.cluster.tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="num_clients"):
        partition(synthetic, {"scheme": "natural", "num_clients": 5})


@pytest.mark.parametrize("spec, pattern", [
    ({"num_clients": 5}, "scheme"),
    ({"scheme": "dirichelt", "num_clients": 5}, "dirichelt"),
    ({"scheme": "dirichlet", "num_clients": 5, "alpah": 0.3, "alpha": 0.3}, "alpah"),
    ({"scheme": "dirichlet", "num_clients": 5}, "alpha"),
    ({"scheme": "dirichlet", "num_clients": 5, "alpha": -1}, "alpha=-1"),
    ({"scheme": "dirichlet", "num_clients": 5.0, "alpha": 1}, "num_clients=5.0"),
    ({"scheme": "dirichlet", "num_clients": 200, "alpha": 1, "min_size": 10}, r"min_size=10 x num_clients=200 = 2000"),
    ({"scheme": "iid", "num_clients": 1000}, "1000 of 1000 clients have too few samples"),
    ({"scheme": "classes_per_client", "num_clients": 5, "k": 11}, "k=11"),
    ({"scheme": "shards", "num_clients": 5, "shards_per_client": 1000}, "shards_per_client=1000"),
    ({"scheme": "quantity", "num_clients": 5, "sigma": -0.5}, "sigma=-0.5"),
    ({"scheme": "label_groups", "num_clients": 5, "groups": [[0, 1], [2, 10]], "shares": [.5, .5]}, r"groups\[1\]"),
    ({"scheme": "label_groups", "num_clients": 5, "groups": [[0, 1], [2, 3]], "shares": [.5, .6]}, "shares"),
    ({"scheme": "clusters", "num_clients": 5, "num_clusters": 11, "disjoint": True}, "num_clusters=11"),
    ({"scheme": "iid", "num_clients": 5, "val_frac": 0.5, "test_frac": 0.5}, "val_frac"),
    ({"scheme": "iid", "num_clients": 5, "rotation": {"angles": [0, 90], "share": [.5, .5]}}, "share"),
    ({"scheme": "iid", "num_clients": 5, "rotation": {"angles": [0, 90], "shares": [1.0]}}, "rotation.shares"),
    ({"scheme": "iid", "num_clients": 5, "noise": {"sd": 0.1}}, "sd"),
    ({"scheme": "natural"}, "pool.group"),
])
def test_bad_specs_raise_naming_the_culprit(digits, spec, pattern):
    with pytest.raises(ValueError, match=pattern):
        partition(digits, spec)


def test_label_schemes_refuse_regression_pools(synthetic):
    with pytest.raises(ValueError, match="regression"):
        partition(synthetic, {"scheme": "dirichlet", "num_clients": 2, "alpha": 1.0})


def test_stats_are_json_and_add_up(digits):
    part = partition(digits, {"scheme": "label_groups", "num_clients": 10, **DAC_GROUPS, "noise": {"std": 0.1}})
    stats = json.loads(json.dumps(partition_stats(digits, part)))
    assert stats["num_clients"] == 10 and stats["num_samples"]["dealt"] == 1797
    assert stats["label_histogram"]["dealt"] == np.bincount(digits.y).tolist()
    total = np.zeros(10, dtype=int)
    for entry, k in zip(stats["clients"], range(10)):
        assert entry["cluster"] == part.cluster[k] and entry["noise"] == 0.1 and entry["rotation"] == 0.0
        for split in ("train", "val", "test"):
            counts = entry["class_counts"][split]
            assert counts == np.bincount(digits.y[part.split(split)[k]], minlength=10).tolist()
            assert sum(counts) == entry["sizes"][split]
            total += counts
    assert total.tolist() == stats["label_histogram"]["dealt"]


def test_stats_of_regression_pool_have_no_class_counts(synthetic):
    stats = partition_stats(synthetic, partition(synthetic, {"scheme": "natural"}))
    assert stats["label_histogram"] is None and "class_counts" not in stats["clients"][0]
    assert [sum(c["sizes"].values()) for c in stats["clients"]] == [20, 25, 30, 35, 40, 45]


# --- the config schema -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def validator():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    return jsonschema.Draft202012Validator(SCHEMA)


def schema_error(validator, spec) -> str | None:
    err = jsonschema.exceptions.best_match(validator.iter_errors(spec))
    return None if err is None else f"{list(err.absolute_path)} {err.message}"


def test_schema_keys_match_scheme_signatures():
    assert set(SCHEMA["properties"]["scheme"]["enum"]) == set(SCHEMES)
    for rule in SCHEMA["allOf"]:
        scheme = rule["if"]["properties"]["scheme"]["const"]
        params = inspect.signature(SCHEMES[scheme]).parameters.values()
        kwargs = {p.name for p in params if p.kind is p.KEYWORD_ONLY}
        required = {p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty}
        assert set(rule["then"]["propertyNames"]["enum"]) == kwargs | set(COMMON_KEYS), scheme
        assert set(rule["then"].get("required", [])) == required, scheme
        assert kwargs <= set(SCHEMA["properties"]), scheme


def test_schema_accepts_every_valid_spec(validator):
    for scheme, spec in SPECS.items():
        assert schema_error(validator, {"scheme": scheme, **spec, "seed": 1, "val_frac": 0.1, "test_frac": 0.2,
                                        "rotation": {"angles": [0, 180], "shares": [0.5, 0.5]},
                                        "noise": {"std_range": [0, 0.5]}}) is None


@pytest.mark.parametrize("spec, pattern", [
    ({"scheme": "dirichlet", "num_clients": 20, "alpah": 0.3, "alpha": 0.3}, "'alpah' is not one of"),
    ({"scheme": "iid", "num_clients": 20, "alpha": 0.3}, "'alpha' is not one of"),
    ({"scheme": "dirichlet", "num_clients": 20, "alpha": 0}, r"\['alpha'\] 0 is less than or equal"),
    ({"scheme": "dirichlet", "num_clients": 20}, "'alpha' is a required property"),
    ({"scheme": "dirichelt", "num_clients": 20}, r"\['scheme'\] 'dirichelt' is not one of"),
    ({"scheme": "iid", "num_clients": 0}, r"\['num_clients'\]"),
    ({"scheme": "iid", "num_clients": 5, "rotation": {"angles": [0], "sharez": [1]}}, "'sharez' was unexpected"),
    ({"scheme": "iid", "num_clients": 5, "noise": {"std": -1}}, r"\['noise', 'std'\]"),
    ({"scheme": "clusters", "num_clients": 5, "num_clusters": 2, "disjoint": "yes"}, r"\['disjoint'\]"),
])
def test_schema_rejects_naming_the_key(validator, spec, pattern):
    err = schema_error(validator, spec)
    assert err is not None and re.search(pattern, err), err


# --- fixed per-client split sizes (DAC's n_data_train / n_data_val) ----------------------------------------

FIXED = {"train": 5, "val": 2, "test": 2}
DAC_ROTATION = {"angles": [0, 180, 10, 350], "shares": [0.7, 0.2, 0.05, 0.05]}


@pytest.mark.parametrize("scheme", sorted(SPECS))
def test_per_client_gives_exact_sizes_from_the_clients_own_samples(scheme, digits, synthetic):
    pool = pool_for(scheme, digits, synthetic)
    spec = {"scheme": scheme, **SPECS[scheme], "seed": 5}
    fixed = partition(pool, {**spec, "per_client": FIXED})
    dealt = partition(pool, spec)                     # same seed, same deal: only the split differs
    for split, size in FIXED.items():
        assert [len(idx) for idx in fixed.split(split)] == [size] * fixed.num_clients
    used = np.concatenate([all_indices(fixed, k) for k in range(fixed.num_clients)])
    assert len(np.unique(used)) == len(used) == fixed.num_clients * sum(FIXED.values())  # no sample twice
    for k in range(fixed.num_clients):
        assert set(all_indices(fixed, k)) <= set(all_indices(dealt, k))                  # drawn from its own deal
    np.testing.assert_array_equal(fixed.cluster, dealt.cluster)
    again = partition(pool, {**spec, "per_client": FIXED})
    other = partition(pool, {**spec, "seed": 6, "per_client": FIXED})
    assert all(np.array_equal(a, b) for a, b in zip(fixed.train, again.train))
    assert any(not np.array_equal(a, b) for a, b in zip(fixed.train, other.train))


def test_per_client_dac_covariate_shift(digits):
    # the spec's setting scaled to digits: 40 clients in 4 rotation clusters of 70/20/5/5% in index order
    part = partition(digits, {"scheme": "iid", "num_clients": 40, "rotation": DAC_ROTATION,
                              "per_client": {"train": 25, "val": 8, "test": 10}})
    assert part.rotation.tolist() == [0] * 28 + [180] * 8 + [10] * 2 + [350] * 2
    assert part.cluster.tolist() == [0] * 28 + [1] * 8 + [2] * 2 + [3] * 2
    stats = partition_stats(digits, part)
    assert {tuple(c["sizes"].values()) for c in stats["clients"]} == {(25, 8, 10)}
    assert stats["num_samples"]["dealt"] == 40 * 43                  # the rest of each client's deal is unused


def test_per_client_dac_label_shift_restricts_every_split(digits):
    part = partition(digits, {"scheme": "label_groups", "num_clients": 10, **DAC_GROUPS,
                              "per_client": {"train": 40, "val": 10, "test": 20}})
    for k in range(10):
        classes = {0, 1, 8, 9} if k < 4 else {2, 3, 4, 5, 6, 7}
        for split in ("train", "val", "test"):
            assert set(digits.y[part.split(split)[k]].tolist()) <= classes
        assert labels_of(digits, part, k) == classes    # 70 samples over 4 or 6 classes: all of them appear


def test_per_client_test_data_is_rotated_like_train(tmp_path):
    from pcl.data.federation import Federation

    fed = Federation.build({"source": {"name": "digits"},
                            "partition": {"scheme": "iid", "num_clients": 10, "seed": 2,
                                          "rotation": {"angles": [0, 180], "shares": [0.5, 0.5]},
                                          "per_client": {"train": 20, "val": 5, "test": 10}}}, root=tmp_path)
    raw = fed.pool.x
    for split in ("train", "val", "test"):
        data = fed.client_data(split)
        assert data.n.tolist() == [{"train": 20, "val": 5, "test": 10}[split]] * 10
        for k, idx in enumerate(fed.part.split(split)):
            upright = raw[idx]
            expected = upright[..., ::-1, ::-1] if k >= 5 else upright   # 180 degrees = both axes reversed
            np.testing.assert_array_equal(data.x[k, :len(idx)].numpy(), expected)


@pytest.mark.parametrize("extra, pattern", [
    ({"scheme": "iid", "num_clients": 100, "per_client": {"train": 10, "val": 5, "test": 5}},
     r"20 samples .* x num_clients=100 = 2000, more than the 1797 samples"),
    ({"scheme": "label_groups", "num_clients": 10, "groups": DAC_GROUPS["groups"], "shares": [0.8, 0.2],
      "per_client": {"train": 60, "val": 20, "test": 20}},     # 714 vehicle digits for 8 clients: about 89 each
     r"needs 100 samples per client, but scheme 'label_groups' dealt 8 of 10 clients fewer \(client 0 has 8\d,"),
    ({"scheme": "iid", "num_clients": 5, "per_client": {"train": 10, "val": 5}}, "per_client"),
    ({"scheme": "iid", "num_clients": 5, "per_client": {"train": 10, "val": 5, "test": 0}}, "per_client.test=0"),
    ({"scheme": "iid", "num_clients": 5, "per_client": {"train": 10, "val": 5, "test": 5, "tset": 1}}, "tset"),
    ({"scheme": "iid", "num_clients": 5, "per_client": {"train": 10, "val": 5, "test": 5}, "val_frac": 0.2},
     "drop val_frac"),
])
def test_per_client_bad_specs_raise(digits, extra, pattern):
    with pytest.raises(ValueError, match=pattern):
        partition(digits, extra)


@pytest.mark.parametrize("per_client, extra, pattern", [
    ({"train": 5, "val": 2, "test": 2}, {"val_frac": 0.1}, "'val_frac' should not be valid"),
    ({"train": 5, "val": 2, "test": 2}, {"test_frac": 0.1}, "'test_frac' should not be valid"),
    ({"train": 5, "val": 2}, {}, "'test' is a required property"),
    ({"train": 5, "val": 2, "test": 0}, {}, r"\['per_client', 'test'\] 0 is less than"),
    ({"train": 5, "val": 2, "test": 2, "n": 1}, {}, "'n' was unexpected"),
])
def test_schema_checks_per_client(validator, per_client, extra, pattern):
    assert schema_error(validator, {"scheme": "iid", "num_clients": 5, "per_client": FIXED}) is None
    err = schema_error(validator, {"scheme": "iid", "num_clients": 5, "per_client": per_client, **extra})
    assert err is not None and re.search(pattern, err), err


def test_source_test_takes_each_clients_test_split_from_the_sources_own(digits):
    """TFF's federated EMNIST keeps each writer's own test examples: with source_test the test split is exactly a
    client's is_test samples, val comes from the rest by val_frac, and a pool without a test split is refused."""
    writers = np.arange(len(digits.y)) % 7
    is_test = np.arange(len(digits.y)) % 5 == 0
    pool = Pool("writers", digits.x, digits.y, 10, group=writers, is_test=is_test)
    part = partition(pool, {"scheme": "natural", "source_test": True, "val_frac": 0.2, "seed": 3})
    for k in range(7):
        own = np.flatnonzero(writers == k)
        assert np.array_equal(np.sort(part.test[k]), own[is_test[own]])
        rest = own[~is_test[own]]
        assert len(part.val[k]) == round(0.2 * len(rest))
        assert np.array_equal(np.sort(np.concatenate([part.train[k], part.val[k]])), rest)
    with pytest.raises(ValueError, match="source_test"):
        partition(digits, {"scheme": "iid", "num_clients": 3, "source_test": True})
    with pytest.raises(ValueError, match="no test_frac"):
        partition(pool, {"scheme": "natural", "source_test": True, "test_frac": 0.1})
