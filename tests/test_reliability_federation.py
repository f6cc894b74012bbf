"""Federation.load refuses damaged or edited files with a message naming the file, member and client.

Each defect is planted in a copy of a real (digits, 6 clients) federation. Structural defects are re-hashed
into stats.json, as a consistent rewrite would be, so that they reach the array checks and not only the hash.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pcl.data.federation import Federation
from pcl.io import npz_bytes, sha256_file, spec_hash

SPEC = {"source": {"name": "digits"}, "partition": {"scheme": "iid", "num_clients": 6, "seed": 1}}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One saved federation in a folder named as the pipeline names it (data/federations/<spec hash>)."""
    out = tmp_path_factory.mktemp("orig") / spec_hash(SPEC)
    fed = Federation.build(SPEC)
    fed.save(out)
    return fed, out


@pytest.fixture
def fed_dir(saved, tmp_path):
    out = tmp_path / spec_hash(SPEC)
    shutil.copytree(saved[1], out)
    return out


def members(fed_dir) -> dict:
    with np.load(fed_dir / "federation.npz", allow_pickle=False) as z:
        return {k: z[k].copy() for k in z.files}


def rewrite(fed_dir, arrays: dict, rehash: bool = True) -> None:
    """Write ``arrays`` as the federation's npz; with ``rehash``, record its new hash in stats.json too."""
    (fed_dir / "federation.npz").write_bytes(npz_bytes(arrays))
    if rehash:
        stats = json.loads((fed_dir / "stats.json").read_text())
        stats["federation_sha256"] = sha256_file(fed_dir / "federation.npz")
        (fed_dir / "stats.json").write_text(json.dumps(stats))


def test_untouched_federation_loads_and_equals_original(saved, fed_dir):
    built, _ = saved
    fed = Federation.load(fed_dir)
    assert fed.sha256 == json.loads((fed_dir / "stats.json").read_text())["federation_sha256"]
    assert fed.spec == built.spec and fed.num_clients == 6
    for split in ("train", "val", "test"):
        for a, b in zip(built.part.split(split), fed.part.split(split), strict=True):
            np.testing.assert_array_equal(a, b)
    for name in ("rotation", "noise", "cluster"):
        np.testing.assert_array_equal(getattr(built.part, name), getattr(fed.part, name))


def test_test_indices_equal_to_train_are_refused(fed_dir):
    a = members(fed_dir)
    a["test_idx"], a["test_ptr"] = a["train_idx"].copy(), a["train_ptr"].copy()
    rewrite(fed_dir, a)
    with pytest.raises(ValueError, match=r"federation\.npz.*'test_idx'.*disjoint.*client 0"):
        Federation.load(fed_dir)


def test_negative_index_is_refused(fed_dir):
    a = members(fed_dir)
    ptr = a["val_ptr"]
    a["val_idx"][ptr[2]] = -1  # first sample of client 2; numpy would wrap it to the pool's last sample
    rewrite(fed_dir, a)
    with pytest.raises(ValueError, match=r"'val_idx'.*negative index -1.*client 2"):
        Federation.load(fed_dir)


def test_overlong_pointer_is_refused(fed_dir):
    a = members(fed_dir)
    a["train_ptr"][-1] += 5  # slicing would silently truncate the last client
    rewrite(fed_dir, a)
    with pytest.raises(ValueError, match=r"'train_ptr'.*must end at len\(train_idx\).*client 5"):
        Federation.load(fed_dir)


def test_out_of_range_index_is_refused(fed_dir):
    a = members(fed_dir)
    a["test_idx"][a["test_ptr"][3]] = 10**6
    rewrite(fed_dir, a)
    with pytest.raises(ValueError, match=r"'test_idx'.*1000000 out of range.*client 3"):
        Federation.load(fed_dir)


def test_missing_member_is_named(fed_dir):
    a = members(fed_dir)
    del a["val_ptr"]
    rewrite(fed_dir, a)
    with pytest.raises(ValueError, match=r"federation\.npz.*missing member 'val_ptr'"):
        Federation.load(fed_dir)


def test_hash_mismatch_is_refused(fed_dir):
    a = members(fed_dir)
    a["train_idx"][[0, 1]] = a["train_idx"][[1, 0]]  # same client, same set: structurally valid, only the hash sees it
    rewrite(fed_dir, a, rehash=False)
    recorded = json.loads((fed_dir / "stats.json").read_text())["federation_sha256"]
    actual = sha256_file(fed_dir / "federation.npz")
    with pytest.raises(ValueError, match="hash mismatch") as err:
        Federation.load(fed_dir)
    assert "federation.npz" in str(err.value) and recorded in str(err.value) and actual in str(err.value)


def test_missing_stats_json_is_reported(fed_dir):
    (fed_dir / "stats.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"stats\.json: missing"):
        Federation.load(fed_dir / "federation.npz")


def test_rehashed_spec_change_is_caught_by_folder_name(fed_dir):
    """A rewrite that updates stats.json consistently still cannot rename the folder the pipeline chose."""
    a = members(fed_dir)
    other = {**SPEC, "partition": {**SPEC["partition"], "seed": 2}}
    a["spec"] = np.frombuffer(json.dumps(other).encode(), dtype=np.uint8)
    rewrite(fed_dir, a)
    stats = json.loads((fed_dir / "stats.json").read_text())
    stats["spec"] = other
    (fed_dir / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(ValueError, match=f"folder is named for data spec hash {spec_hash(SPEC)}"):
        Federation.load(fed_dir)


@pytest.mark.parametrize("defect, message", [
    (lambda a: a.update(train_ptr=a["train_ptr"][::-1].copy()), r"'train_ptr'.*must start at 0"),
    (lambda a: a["val_ptr"].__setitem__(2, a["val_ptr"][4]), r"'val_ptr'.*non-decreasing.*client 2"),
    (lambda a: a.update(test_ptr=a["test_ptr"][:-1].copy(), test_idx=a["test_idx"][:a["test_ptr"][-2]].copy()),
     r"'test_ptr'.*has 5 clients but train_ptr has 6"),
    (lambda a: a.update(train_idx=a["train_idx"].astype(np.float64)), r"'train_idx'.*integer"),
    (lambda a: a.update(rotation=a["rotation"][:5].copy()), r"'rotation'.*shape must be \(6,\)"),
    (lambda a: a.update(cluster=np.zeros(7, np.int64)), r"'cluster'.*shape must be \(6,\)"),
])
def test_other_structural_defects_are_named(fed_dir, defect, message):
    a = members(fed_dir)
    defect(a)
    rewrite(fed_dir, a)
    with pytest.raises(ValueError, match=message):
        Federation.load(fed_dir)
