"""Download, verify and parse the real image data sets (MNIST, Fashion-MNIST, CIFAR-10, EMNIST byclass, and
TFF's federated EMNIST-62 with writers as clients).

Every file is fetched by ``pooch`` from a pinned URL and checked against a pinned SHA-256 before it is
moved into the cache ``root/<dataset>/``. Pooch streams into a temporary file in that folder and deletes
it when the hash does not match, so a failed or corrupted download leaves no file behind; a cached file
whose hash no longer matches is downloaded again.

Where the hashes come from (each URL is pinned together with the hash published for that same URL):
- MNIST, Fashion-MNIST, EMNIST: ``tensorflow/datasets`` ``tensorflow_datasets/url_checksums/{mnist,
  fashion_mnist,emnist}.txt``. MNIST uses Google's CVDF copy of LeCun's files (the copy TFDS pins; the
  original host yann.lecun.com often refuses downloads).
- CIFAR-10 (python version): ``keras-team/keras`` ``keras/src/datasets/cifar10.py``.
- Federated EMNIST (``fed_emnist.tar.bz2``): TensorFlow Federated's ``tff.simulation.datasets.emnist.load_data``
  (``tensorflow_federated/python/simulation/datasets/emnist.py`` up to TFF 0.19, the version Pillutla et al. 2022
  use), which passes ``file_hash=<sha256>, hash_algorithm='sha256'`` to ``tf.keras.utils.get_file``. Later TFF
  versions load ``emnist_all.sqlite.lzma`` instead; the tarball is still served at the same URL.

A mirror replaces every official URL with ``<mirror>/<dataset>/<file>`` (argument ``mirror`` or the
environment variable ``PCL_DATA_MIRROR``), the same layout as the cache: ``python -m http.server -d
data/raw`` on one machine is a mirror for the others. The tests use it to serve small files on loopback.

Parsers never trust the bytes: IDX headers are checked (magic number, dimensions, size), the CIFAR
pickles are read with an unpickler that can only build numpy arrays (see ``_ArrayUnpickler``), and the federated
EMNIST HDF5 files are read with h5py as plain numeric arrays whose dtypes, shapes and ranges are checked.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pooch

MIRROR_ENV = "PCL_DATA_MIRROR"

URLS = {
    "mnist": "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "cifar10": "https://www.cs.toronto.edu/~kriz/",
    "emnist": "https://www.itl.nist.gov/iaui/vip/cs_links/EMNIST/",
    "fed_emnist": "https://storage.googleapis.com/tff-datasets-public/",
}

SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
    "cifar10": {
        "cifar-10-python.tar.gz": "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    },
    "emnist": {
        "gzip.zip": "fb9bb67e33772a9cc0b895e4ecf36d2cf35be8b709693c3564cea2a019fcda8e",
    },
    "fed_emnist": {
        "fed_emnist.tar.bz2": "fe1ed5a502cea3a952eb105920bff8cffb32836b5173cb18a57a32c3606f3ea0",
    },
}

# IDX type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"); multi-byte values are big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

Split = tuple[np.ndarray, np.ndarray]  # (images uint8, labels int64)


def fetch(dataset: str, filename: str, root: str | Path, mirror: str | None = None) -> Path:
    """Return the verified local path of one file of ``dataset``, downloading it on first use."""
    if dataset not in SHA256 or filename not in SHA256[dataset]:
        raise ValueError(f"no pinned file {filename!r} for data set {dataset!r}")
    mirror = mirror or os.environ.get(MIRROR_ENV)
    url = f"{mirror.rstrip('/')}/{dataset}/{filename}" if mirror else URLS[dataset] + filename
    path = pooch.retrieve(
        url, known_hash=f"sha256:{SHA256[dataset][filename]}", fname=filename, path=Path(root) / dataset
    )
    return Path(path)


def parse_idx(data: bytes, name: str) -> np.ndarray:
    """Parse one (decompressed) IDX file; ``name`` is only used in error messages."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{name}: not an IDX file (magic number {data[:4].hex() or 'missing'})")
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise ValueError(f"{name}: truncated IDX header ({ndim} dimensions, {len(data)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"{name}: IDX dimensions {dims} need {expected} bytes, file has {len(data)}")
    return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _idx_split(images: bytes, labels: bytes, name: str, shape: tuple[int, int], num_classes: int) -> Split:
    """Check that an image file and a label file form one split of ``num_classes`` classes."""
    x, y = parse_idx(images, f"{name} images"), parse_idx(labels, f"{name} labels")
    if x.ndim != 3 or x.shape[1:] != shape or x.dtype != np.uint8:
        raise ValueError(
            f"{name} images: expected uint8 [n, {shape[0]}, {shape[1]}], got {x.dtype} {list(x.shape)}"
        )
    return x, _labels(y, len(x), num_classes, f"{name} labels")


def _labels(y: np.ndarray, n: int, num_classes: int, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"{name}: expected {n} labels, got shape {list(y.shape)}")
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{name}: labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}]")
    return y.astype(np.int64)


def _gunzip(data: bytes, name: str) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError) as e:
        raise ValueError(f"{name}: not a valid gzip file ({e})") from None


def load_mnist_like(dataset: str, root: str | Path, mirror: str | None = None) -> tuple[Split, Split]:
    """(train, test) of MNIST or Fashion-MNIST: the same four gzip IDX files, 28x28, 10 classes."""
    splits = []
    for prefix in ("train", "t10k"):
        images = _fetch_gz(dataset, f"{prefix}-images-idx3-ubyte.gz", root, mirror)
        labels = _fetch_gz(dataset, f"{prefix}-labels-idx1-ubyte.gz", root, mirror)
        splits.append(_idx_split(images, labels, f"{dataset} {prefix}", (28, 28), 10))
    return splits[0], splits[1]


def _fetch_gz(dataset: str, filename: str, root: str | Path, mirror: str | None) -> bytes:
    path = fetch(dataset, filename, root, mirror)
    return _gunzip(path.read_bytes(), str(path))


def load_emnist(root: str | Path, mirror: str | None = None) -> tuple[Split, Split]:
    """(train, test) of EMNIST byclass (62 classes: digits, upper and lower case letters) from NIST's gzip.zip.

    The members are read from the zip without extracting it. EMNIST stores images transposed relative to
    MNIST; they are transposed back so that both sources look alike (as torchvision and TFDS do).
    """
    archive = fetch("emnist", "gzip.zip", root, mirror)
    out = []
    with zipfile.ZipFile(archive) as zf:
        for part in ("train", "test"):
            images = _zip_gz(zf, f"gzip/emnist-byclass-{part}-images-idx3-ubyte.gz", archive)
            labels = _zip_gz(zf, f"gzip/emnist-byclass-{part}-labels-idx1-ubyte.gz", archive)
            x, y = _idx_split(images, labels, f"emnist byclass {part}", (28, 28), 62)
            out.append((np.ascontiguousarray(x.transpose(0, 2, 1)), y))
    return out[0], out[1]


def _zip_gz(zf: zipfile.ZipFile, member: str, archive: Path) -> bytes:
    try:
        data = zf.read(member)
    except KeyError:
        raise ValueError(f"{archive}: member {member!r} is missing") from None
    return _gunzip(data, f"{archive}:{member}")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays from raw bytes.

    A pickle may call any importable callable; this one resolves exactly the globals that numpy's own
    ``ndarray.__reduce__``/``__reduce_ex__`` emit: ``_reconstruct`` (an empty array of a given shape and
    dtype, filled by ``ndarray.__setstate__`` from a byte string), ``_frombuffer`` (protocol 5: a view of a
    byte buffer), ``ndarray`` and ``dtype``. None of them runs user code, touches files or imports modules,
    so a malicious file can at worst produce wrong (or huge) arrays, which the caller then checks. Both module paths
    (``numpy.core`` written by numpy 1, ``numpy._core`` by numpy 2) map to the running numpy's functions.
    """

    _ALLOWED = {
        **{(f"numpy.{core}.multiarray", "_reconstruct"): np.zeros(0).__reduce__()[0] for core in ("core", "_core")},
        **{(f"numpy.{core}.numeric", "_frombuffer"): np.zeros(1).__reduce_ex__(5)[0] for core in ("core", "_core")},
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch") from None


def _cifar_batch(raw: bytes, name: str) -> Split:
    """One CIFAR-10 python batch: a pickled dict with b"data" (uint8 [n, 3072]) and b"labels" (list of int)."""
    # encoding="bytes": the batches were written by Python 2, whose str must stay bytes (as on the CIFAR site).
    batch = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{name}: not a CIFAR batch (expected a dict with b'data' and b'labels')")
    x = batch[b"data"]
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{name}: b'data' must be a uint8 array [n, 3072], got {getattr(x, 'shape', type(x))}")
    return x.reshape(-1, 3, 32, 32), _labels(batch[b"labels"], len(x), 10, f"{name} labels")


def load_cifar10(root: str | Path, mirror: str | None = None) -> tuple[Split, Split]:
    """(train, test) of CIFAR-10, read from the python tarball's five training batches and its test batch."""
    archive = fetch("cifar10", "cifar-10-python.tar.gz", root, mirror)
    names = [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)] + ["cifar-10-batches-py/test_batch"]
    with tarfile.open(archive, "r:gz") as tar:  # one pass over the stream, nothing extracted to disk
        raw = {m.name: tar.extractfile(m).read() for m in tar if m.isfile() and m.name in names}
    missing = [n for n in names if n not in raw]
    if missing:
        raise ValueError(f"{archive}: member(s) {missing} are missing")
    batches = [_cifar_batch(raw[n], f"{archive.name}:{n}") for n in names]
    train = tuple(np.concatenate(parts) for parts in zip(*batches[:5]))
    return train, batches[5]


# --- TFF federated EMNIST: writers as clients ----------------------------------------------------------------------

FED_EMNIST_SPLITS = ("train", "test")


def extract_fed_emnist(root: str | Path, mirror: str | None = None) -> dict[str, Path]:
    """Verified ``fed_emnist.tar.bz2`` -> the paths of its ``fed_emnist_{train,test}.h5``.

    HDF5 needs random access, so the two members (and nothing else: no names from the archive reach the file
    system) are streamed out once into a folder named after the archive's pinned hash, each through a temporary
    file renamed at the end: an interrupted extraction leaves nothing that is read later, and a new pinned archive
    gets a new folder."""
    archive = fetch("fed_emnist", "fed_emnist.tar.bz2", root, mirror)
    folder = archive.parent / f"extracted-{SHA256['fed_emnist'][archive.name][:16]}"
    paths = {split: folder / f"fed_emnist_{split}.h5" for split in FED_EMNIST_SPLITS}
    if all(p.is_file() for p in paths.values()):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {p.name: p for p in paths.values()}
    found = set()
    with tarfile.open(archive, "r:bz2") as tar:  # one pass over the stream
        for member in tar:
            name = member.name.rsplit("/", 1)[-1]
            if member.isfile() and name in wanted and name not in found:
                part = wanted[name].with_name(name + ".part")
                with tar.extractfile(member) as src, open(part, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                os.replace(part, wanted[name])
                found.add(name)
    missing = sorted(set(wanted) - found)
    if missing:
        raise ValueError(f"{archive}: member(s) {missing} are missing")
    return paths


def _h5py():
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is a dependency; this names it if an environment lacks it
        raise ImportError("reading TFF's federated EMNIST needs h5py (pip install h5py)") from None
    return h5py


def _tff_client(group, name: str, limit: int) -> Split:
    """The first ``limit`` examples of one writer: pixels float in [0, 1] [n, 28, 28], labels in [0, 62)."""
    pixels, labels = group["pixels"], group["label"]
    n = pixels.shape[0]
    if labels.dtype.kind not in "iu" or labels.shape not in ((n,), (n, 1)):
        raise ValueError(f"{name}/label: expected {n} integer labels, got {labels.dtype} {list(labels.shape)}")
    x = np.asarray(pixels[:limit], dtype=np.float32)
    if x.size and not (x.min() >= 0 and x.max() <= 1):  # also rejects NaN
        raise ValueError(f"{name}/pixels: values must lie in [0, 1], got [{x.min()}, {x.max()}]")
    y = np.asarray(labels[:limit]).reshape(-1)
    return x, _labels(y, len(x), 62, f"{name}/label")


def read_fed_emnist(paths: dict[str, Path], min_train: int, min_test: int,
                    max_per_client: int) -> tuple[list[str], dict[str, list[Split]]]:
    """The writers with at least ``min_train`` training and ``min_test`` test examples (full sizes, before the cap;
    Pillutla et al.: 100 and 25, 1,114 writers), sorted by id, and per split each one's first ``max_per_client``
    examples in file order (the official loader's ``take``). Images keep TFF's values: 1 = background."""
    h5py = _h5py()
    with h5py.File(paths["train"], "r") as train, h5py.File(paths["test"], "r") as test:
        examples = {}
        for split, f in (("train", train), ("test", test)):
            group = f.get("examples")
            if not isinstance(group, h5py.Group):
                raise ValueError(f"{paths[split]}: no group 'examples' (not a TFF federated EMNIST file)")
            examples[split] = group

        def size(split: str, writer: str) -> int:
            """Examples of one writer, from the dataset's shape alone; checks its layout first."""
            entry, name = examples[split][writer], f"{paths[split].name}:{writer}"
            if not isinstance(entry, h5py.Group) or not all(
                    isinstance(entry.get(k), h5py.Dataset) for k in ("pixels", "label")):
                raise ValueError(f"{name}: a client must be a group with datasets 'pixels' and 'label'")
            pixels = entry["pixels"]
            if pixels.dtype.kind != "f" or pixels.ndim != 3 or pixels.shape[1:] != (28, 28):
                raise ValueError(f"{name}/pixels: expected float [n, 28, 28], got {pixels.dtype} {list(pixels.shape)}")
            return pixels.shape[0]

        sizes = {split: {w: size(split, w) for w in examples[split]} for split in FED_EMNIST_SPLITS}
        writers = sorted(w for w, n in sizes["train"].items()
                         if n >= min_train and sizes["test"].get(w, 0) >= min_test)
        data = {split: [_tff_client(examples[split][w], f"{paths[split].name}:{w}", max_per_client)
                        for w in writers] for split in FED_EMNIST_SPLITS}
    return writers, data
