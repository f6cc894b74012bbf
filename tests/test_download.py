"""The download -> verify -> parse path, against tiny files in the real formats served on loopback.

The pinned SHA-256 values belong to the real files, so every test pins the hash of its own tiny file by
monkeypatching ``download.SHA256``; ``PCL_DATA_MIRROR`` points every URL at the local server.
"""
from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import os
import pickle
import tarfile
import threading
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from pcl.data import download
from pcl.data.sources import load_source


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A loopback HTTP server over ``tmp_path/mirror``; yields (serve_dir, requested_paths)."""
    serve_dir, requested = tmp_path / "mirror", []
    serve_dir.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requested.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(serve_dir)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv(download.MIRROR_ENV, f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    yield serve_dir, requested
    server.shutdown()
    server.server_close()
    thread.join()


def idx_bytes(a: np.ndarray) -> bytes:
    """An IDX file: two zero bytes, type code 0x08 (unsigned byte), ndim, big-endian dims, then the data."""
    return bytes([0, 0, 0x08, a.ndim]) + np.asarray(a.shape, ">u4").tobytes() + a.astype(np.uint8).tobytes()


def publish(serve_dir: Path, monkeypatch, dataset: str, files: dict[str, bytes]) -> None:
    """Serve ``files`` under ``<mirror>/<dataset>/`` and pin their true hashes in the registry."""
    (serve_dir / dataset).mkdir()
    for name, data in files.items():
        (serve_dir / dataset / name).write_bytes(data)
    monkeypatch.setitem(download.SHA256, dataset, {n: hashlib.sha256(d).hexdigest() for n, d in files.items()})


def tiny_mnist(rng, n_train=5, n_test=3):
    x = rng.integers(0, 256, (n_train + n_test, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, n_train + n_test).astype(np.uint8)
    files = {
        "train-images-idx3-ubyte.gz": gzip.compress(idx_bytes(x[:n_train])),
        "train-labels-idx1-ubyte.gz": gzip.compress(idx_bytes(y[:n_train])),
        "t10k-images-idx3-ubyte.gz": gzip.compress(idx_bytes(x[n_train:])),
        "t10k-labels-idx1-ubyte.gz": gzip.compress(idx_bytes(y[n_train:])),
    }
    return x, y, files


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()]


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_idx_download_parses_what_was_written(mirror, tmp_path, monkeypatch, dataset):
    serve_dir, requested = mirror
    x, y, files = tiny_mnist(np.random.default_rng(0))
    publish(serve_dir, monkeypatch, dataset, files)
    pool = load_source({"name": dataset}, root=tmp_path / "raw")
    assert pool.x.shape == (8, 1, 28, 28) and pool.x.dtype == np.float32
    np.testing.assert_array_equal(pool.x[:, 0], x.astype(np.float32) / 255)
    np.testing.assert_array_equal(pool.y, y.astype(np.int64))
    np.testing.assert_array_equal(pool.is_test, [False] * 5 + [True] * 3)
    assert sorted(requested) == sorted(f"/{dataset}/{name}" for name in files)
    assert sorted(p.name for p in files_under(tmp_path / "raw" / dataset)) == sorted(files)


def test_second_call_uses_the_cache(mirror, tmp_path, monkeypatch):
    serve_dir, requested = mirror
    x, _, files = tiny_mnist(np.random.default_rng(1))
    publish(serve_dir, monkeypatch, "mnist", files)
    download.load_mnist_like("mnist", tmp_path / "raw")
    assert len(requested) == 4
    (train_x, _), _ = download.load_mnist_like("mnist", tmp_path / "raw")
    assert len(requested) == 4
    np.testing.assert_array_equal(train_x, x[:5])


def test_wrong_checksum_fails_and_leaves_no_file(mirror, tmp_path, monkeypatch):
    serve_dir, requested = mirror
    _, _, files = tiny_mnist(np.random.default_rng(2))
    publish(serve_dir, monkeypatch, "mnist", files)
    expected = hashlib.sha256(b"not the served file").hexdigest()
    monkeypatch.setitem(download.SHA256["mnist"], "train-images-idx3-ubyte.gz", expected)
    actual = hashlib.sha256(files["train-images-idx3-ubyte.gz"]).hexdigest()
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz") as err:
        download.load_mnist_like("mnist", tmp_path / "raw")
    assert expected in str(err.value) and actual in str(err.value)
    assert requested == ["/mnist/train-images-idx3-ubyte.gz"]
    assert files_under(tmp_path / "raw") == []


def test_corrupted_cache_file_is_downloaded_again(mirror, tmp_path, monkeypatch):
    serve_dir, requested = mirror
    x, _, files = tiny_mnist(np.random.default_rng(3))
    publish(serve_dir, monkeypatch, "mnist", files)
    download.load_mnist_like("mnist", tmp_path / "raw")
    (tmp_path / "raw" / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"truncated")
    (train_x, _), _ = download.load_mnist_like("mnist", tmp_path / "raw")
    assert requested.count("/mnist/train-images-idx3-ubyte.gz") == 2 and len(requested) == 5
    np.testing.assert_array_equal(train_x, x[:5])


def test_mirror_argument_overrides_env(mirror, tmp_path, monkeypatch):
    serve_dir, requested = mirror
    _, _, files = tiny_mnist(np.random.default_rng(4))
    publish(serve_dir, monkeypatch, "mnist", files)
    url = os.environ[download.MIRROR_ENV]
    monkeypatch.setenv(download.MIRROR_ENV, "http://127.0.0.1:9/unused")
    path = download.fetch("mnist", "t10k-labels-idx1-ubyte.gz", tmp_path / "raw", mirror=url)
    assert path == tmp_path / "raw" / "mnist" / "t10k-labels-idx1-ubyte.gz"
    assert requested == ["/mnist/t10k-labels-idx1-ubyte.gz"]


def test_fetch_rejects_unpinned_file(tmp_path):
    with pytest.raises(ValueError, match="'evil.gz'"):
        download.fetch("mnist", "evil.gz", tmp_path)


def cifar_batch(x: np.ndarray, y: np.ndarray, protocol: int, numpy1: bool) -> bytes:
    """A CIFAR python batch; ``numpy1`` rewrites the module path to numpy 1's, as in the real files.

    The real batches are protocol-2 pickles from Python 2 (GLOBAL opcodes, byte strings as str); protocol 3
    is the same but for bytes, and its newline-terminated GLOBAL names can be rewritten in place.
    """
    raw = pickle.dumps(
        {b"batch_label": b"tiny", b"labels": y.tolist(), b"data": x.reshape(len(x), -1),
         b"filenames": [b"a"] * len(x)},
        protocol=protocol,
    )
    if numpy1:
        assert raw.count(b"cnumpy._core.multiarray\n_reconstruct\n") == 1
        raw = raw.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    return raw


def cifar_tarball(batches: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, raw in batches.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


@pytest.mark.parametrize("protocol,numpy1", [(3, True), (4, False), (5, False)])
def test_cifar_download_parses_what_was_written(mirror, tmp_path, monkeypatch, protocol, numpy1):
    serve_dir, _ = mirror
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (14, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, 14)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    cuts = [0, 2, 4, 6, 8, 10, 14]
    batches = {n: cifar_batch(x[a:b], y[a:b], protocol, numpy1) for n, a, b in zip(names, cuts, cuts[1:])}
    publish(serve_dir, monkeypatch, "cifar10", {"cifar-10-python.tar.gz": cifar_tarball(batches)})
    pool = load_source({"name": "cifar10"}, root=tmp_path / "raw")
    assert pool.x.shape == (14, 3, 32, 32)
    np.testing.assert_array_equal(pool.x, x.astype(np.float32) / 255)
    np.testing.assert_array_equal(pool.y, y)
    assert pool.is_test.sum() == 4 and pool.is_test[10:].all()


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_cifar_unpickler_refuses_other_globals():
    raw = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": _Evil()})
    with pytest.raises(pickle.UnpicklingError, match="getcwd is not allowed"):
        download._cifar_batch(raw, "batch")


def test_cifar_batch_with_wrong_shape_is_rejected():
    raw = pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    with pytest.raises(ValueError, match="uint8 array"):
        download._cifar_batch(raw, "batch")


def test_emnist_download_parses_and_transposes(mirror, tmp_path, monkeypatch):
    serve_dir, _ = mirror
    rng = np.random.default_rng(6)
    x = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    y = np.array([0, 61, 10, 36, 5, 60, 1], np.uint8)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for part, sl in (("train", slice(0, 4)), ("test", slice(4, 7))):
            zf.writestr(f"gzip/emnist-byclass-{part}-images-idx3-ubyte.gz", gzip.compress(idx_bytes(x[sl])))
            zf.writestr(f"gzip/emnist-byclass-{part}-labels-idx1-ubyte.gz", gzip.compress(idx_bytes(y[sl])))
    publish(serve_dir, monkeypatch, "emnist", {"gzip.zip": buf.getvalue()})
    pool = load_source({"name": "emnist"}, root=tmp_path / "raw")
    assert pool.num_classes == 62
    np.testing.assert_array_equal(pool.x[:, 0], x.transpose(0, 2, 1).astype(np.float32) / 255)
    np.testing.assert_array_equal(pool.y, y)
    np.testing.assert_array_equal(pool.is_test, [False] * 4 + [True] * 3)


def test_parse_idx_round_trip_and_dtypes():
    a = np.arange(24, dtype=">i4").reshape(2, 3, 4)
    raw = bytes([0, 0, 0x0C, 3]) + np.asarray(a.shape, ">u4").tobytes() + a.tobytes()
    np.testing.assert_array_equal(download.parse_idx(raw, "f"), a)


@pytest.mark.parametrize(
    "raw,message",
    [
        (b"\x1f\x8b\x08\x00", "not an IDX file"),
        (bytes([0, 0, 0x08, 3]) + b"\x00\x00", "truncated IDX header"),
        (idx_bytes(np.zeros((2, 3), np.uint8))[:-1], r"\(2, 3\) need 18 bytes, file has 17"),
    ],
)
def test_parse_idx_rejects_malformed_files(raw, message):
    with pytest.raises(ValueError, match=message):
        download.parse_idx(raw, "bad.idx")


def test_idx_split_checks_labels():
    images = idx_bytes(np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="expected 3 labels"):
        download._idx_split(images, idx_bytes(np.zeros(2, np.uint8)), "s", (28, 28), 10)
    with pytest.raises(ValueError, match=r"\[0, 10\), got \[0, 10\]"):
        download._idx_split(images, idx_bytes(np.array([0, 10, 1], np.uint8)), "s", (28, 28), 10)
    with pytest.raises(ValueError, match=r"uint8 \[n, 28, 28\]"):
        download._idx_split(idx_bytes(np.zeros((3, 8, 8), np.uint8)), idx_bytes(np.zeros(3, np.uint8)),
                            "s", (28, 28), 10)


def test_bad_gzip_names_the_file(mirror, tmp_path, monkeypatch):
    serve_dir, _ = mirror
    _, _, files = tiny_mnist(np.random.default_rng(7))
    files["t10k-labels-idx1-ubyte.gz"] = b"plain bytes, not gzip"
    publish(serve_dir, monkeypatch, "mnist", files)
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz: not a valid gzip file"):
        download.load_mnist_like("mnist", tmp_path / "raw")


def test_cifar_tarball_missing_a_batch_is_named(mirror, tmp_path, monkeypatch):
    serve_dir, _ = mirror
    x, y = np.zeros((1, 3, 32, 32), np.uint8), np.zeros(1, np.int64)
    batches = {f"data_batch_{i}": cifar_batch(x, y, 4, False) for i in range(1, 6)}
    publish(serve_dir, monkeypatch, "cifar10", {"cifar-10-python.tar.gz": cifar_tarball(batches)})
    with pytest.raises(ValueError, match="test_batch"):
        download.load_cifar10(tmp_path / "raw")


# --- TFF federated EMNIST (writers as clients) ---------------------------------------------------------------------

WRITERS = {  # writer -> (train size, test size); min_train=3, min_test=2 keeps f0001_00 and f0002_01
    "f0002_01": (5, 2),
    "f0001_00": (3, 3),
    "f0003_11": (2, 5),  # too few training examples
    "f0004_00": (6, 1),  # too few test examples
}


def tff_h5(path: Path, clients: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """A file in TFF's HDF5ClientData layout: /examples/<writer>/{pixels float32 [n, 28, 28], label int32 [n]}."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        for writer, (x, y) in clients.items():
            f.create_dataset(f"examples/{writer}/pixels", data=x)
            f.create_dataset(f"examples/{writer}/label", data=y)


def tiny_fed_emnist(tmp_path: Path, rng, writers=WRITERS, extra_train=None, members=None) -> tuple[dict, bytes]:
    """(the arrays written per split and writer, the tar.bz2 bytes) of a tiny federated EMNIST; ``members`` maps
    the archive's member names to the split whose file they hold."""
    arrays = {"train": {}, "test": {}}
    for w, sizes in writers.items():
        for split, n in zip(("train", "test"), sizes):
            arrays[split][w] = (rng.integers(0, 256, (n, 28, 28)).astype(np.float32) / 255,
                                rng.integers(0, 62, n).astype(np.int32))
    arrays["train"].update(extra_train or {})
    work = tmp_path / "build"
    work.mkdir(exist_ok=True)
    for split in ("train", "test"):
        tff_h5(work / f"fed_emnist_{split}.h5", arrays[split])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:bz2") as tar:
        for name, split in (members or {"fed_emnist_train.h5": "train", "fed_emnist_test.h5": "test"}).items():
            tar.add(work / f"fed_emnist_{split}.h5", arcname=name)
    return arrays, buf.getvalue()


def test_fed_emnist_keeps_writers_caps_and_marks_the_test_split(mirror, tmp_path, monkeypatch):
    serve_dir, requested = mirror
    arrays, archive = tiny_fed_emnist(tmp_path, np.random.default_rng(8))
    publish(serve_dir, monkeypatch, "fed_emnist", {"fed_emnist.tar.bz2": archive})
    spec = {"name": "fed_emnist", "min_train": 3, "min_test": 2, "max_per_client": 4}
    pool = load_source(spec, root=tmp_path / "raw")
    kept = ["f0001_00", "f0002_01"]  # sorted writer ids
    assert pool.meta["writers"] == kept and pool.num_classes == 62
    expected_x, expected_y, owner, test = [], [], [], []
    for k, w in enumerate(kept):
        for split in ("train", "test"):
            x, y = arrays[split][w]
            expected_x.append(1 - x[:4])  # first 4 in file order; ink = 1
            expected_y.append(y[:4])
            owner += [k] * len(y[:4])
            test += [split == "test"] * len(y[:4])
    assert pool.x.shape == (4 + 2 + 3 + 3, 1, 28, 28) and pool.x.dtype == np.float32
    np.testing.assert_array_equal(pool.x[:, 0], np.concatenate(expected_x))
    np.testing.assert_array_equal(pool.y, np.concatenate(expected_y).astype(np.int64))
    np.testing.assert_array_equal(pool.group, owner)
    np.testing.assert_array_equal(pool.is_test, test)
    assert requested == ["/fed_emnist/fed_emnist.tar.bz2"]

    from pcl.data.partition import partition

    part = partition(pool, {"scheme": "natural", "val_frac": 0.2, "test_frac": 0.2})
    assert part.num_clients == 2
    for k in range(2):
        mine = np.sort(np.concatenate([part.train[k], part.val[k], part.test[k]]))
        np.testing.assert_array_equal(mine, np.flatnonzero(pool.group == k))

    again = load_source(spec, root=tmp_path / "raw")  # cached: no second download, same pool
    assert requested == ["/fed_emnist/fed_emnist.tar.bz2"]
    np.testing.assert_array_equal(again.x, pool.x)


def test_fed_emnist_standardize_uses_the_training_pixels(mirror, tmp_path, monkeypatch):
    serve_dir, _ = mirror
    _, archive = tiny_fed_emnist(tmp_path, np.random.default_rng(9))
    publish(serve_dir, monkeypatch, "fed_emnist", {"fed_emnist.tar.bz2": archive})
    base = {"name": "fed_emnist", "min_train": 3, "min_test": 2}
    raw = load_source(base, root=tmp_path / "raw")
    std = load_source({**base, "standardize": True}, root=tmp_path / "raw")
    train = raw.x[~raw.is_test]
    expected = (raw.x - train.mean(0)) / (train.std(0) + 1e-6)
    np.testing.assert_allclose(std.x, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std.x[~std.is_test].mean(0), 0, atol=1e-5)


def test_fed_emnist_wrong_checksum_fails_and_leaves_no_file(mirror, tmp_path, monkeypatch):
    serve_dir, requested = mirror
    _, archive = tiny_fed_emnist(tmp_path, np.random.default_rng(10))
    publish(serve_dir, monkeypatch, "fed_emnist", {"fed_emnist.tar.bz2": archive})
    expected = hashlib.sha256(b"the real archive").hexdigest()
    monkeypatch.setitem(download.SHA256["fed_emnist"], "fed_emnist.tar.bz2", expected)
    with pytest.raises(ValueError, match="fed_emnist.tar.bz2") as err:
        load_source({"name": "fed_emnist"}, root=tmp_path / "raw")
    assert expected in str(err.value) and hashlib.sha256(archive).hexdigest() in str(err.value)
    assert requested == ["/fed_emnist/fed_emnist.tar.bz2"]
    assert files_under(tmp_path / "raw") == []


def test_fed_emnist_extracts_only_its_two_members(mirror, tmp_path, monkeypatch):
    serve_dir, _ = mirror
    members = {"fed_emnist_train.h5": "train", "../fed_emnist_test.h5": "test", "../../escape.h5": "train"}
    _, archive = tiny_fed_emnist(tmp_path, np.random.default_rng(11), members=members)
    publish(serve_dir, monkeypatch, "fed_emnist", {"fed_emnist.tar.bz2": archive})
    paths = download.extract_fed_emnist(tmp_path / "raw" / "sub")
    folder = tmp_path / "raw" / "sub" / "fed_emnist"
    extracted = folder / ("extracted-" + download.SHA256["fed_emnist"]["fed_emnist.tar.bz2"][:16])
    assert paths == {"train": extracted / "fed_emnist_train.h5", "test": extracted / "fed_emnist_test.h5"}
    assert sorted(files_under(tmp_path / "raw")) == sorted([folder / "fed_emnist.tar.bz2", *paths.values()])


def test_fed_emnist_missing_member_is_named(mirror, tmp_path, monkeypatch):
    serve_dir, _ = mirror
    _, archive = tiny_fed_emnist(tmp_path, np.random.default_rng(12), members={"fed_emnist_train.h5": "train"})
    publish(serve_dir, monkeypatch, "fed_emnist", {"fed_emnist.tar.bz2": archive})
    with pytest.raises(ValueError, match=r"\['fed_emnist_test.h5'\] are missing"):
        download.extract_fed_emnist(tmp_path / "raw")


@pytest.mark.parametrize("x,y,message", [
    (np.full((3, 28, 28), 2.0, np.float32), np.zeros(3, np.int32), r"f9_bad/pixels: values must lie in \[0, 1\]"),
    (np.zeros((3, 28, 27), np.float32), np.zeros(3, np.int32), r"f9_bad/pixels: expected float \[n, 28, 28\]"),
    (np.zeros((3, 28, 28), np.float32), np.zeros(2, np.int32), "f9_bad/label: expected 3 integer labels"),
    (np.zeros((3, 28, 28), np.float32), np.full(3, 62, np.int32), r"f9_bad/label: labels must lie in \[0, 62\)"),
])
def test_fed_emnist_malformed_writer_is_named(mirror, tmp_path, monkeypatch, x, y, message):
    serve_dir, _ = mirror
    writers = {**WRITERS, "f9_bad": (0, 3)}  # its train entry is replaced by the malformed one below
    _, archive = tiny_fed_emnist(tmp_path, np.random.default_rng(13), writers=writers, extra_train={"f9_bad": (x, y)})
    publish(serve_dir, monkeypatch, "fed_emnist", {"fed_emnist.tar.bz2": archive})
    with pytest.raises(ValueError, match=message):
        load_source({"name": "fed_emnist", "min_train": 2, "min_test": 2}, root=tmp_path / "raw")
