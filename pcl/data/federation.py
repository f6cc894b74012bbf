"""The Federation: a source's pool, its partition into clients, and the spec that made them.

On disk a federation is one byte-deterministic ``federation.npz`` (index arrays per client and split, the
per-client shifts, the data spec and the source's content hash) plus a human-readable ``stats.json``
that records the npz's SHA-256; ``load`` checks that hash and every array before anything trains on them.
The samples themselves are not copied: they are reloaded from the source and checked against the hash.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch

from pcl.data.transforms import add_noise, rotate
from pcl.data.types import ClientData, Partition, Pool
from pcl.io import atomic_write, canonical_json, npz_bytes, sha256_file, spec_hash, write_json

SPLITS = ("train", "val", "test")


@dataclass
class Federation:
    pool: Pool
    part: Partition
    spec: dict
    sha256: str | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, data_spec: dict, root: str | Path = "data/raw") -> "Federation":
        """Load the source and partition it as ``data_spec`` says (``{'source': {...}, 'partition': {...}}``)."""
        from pcl.data.partition import partition
        from pcl.data.sources import load_source

        unknown = set(data_spec) - {"source", "partition"}
        if unknown:
            raise ValueError(f"data: unknown key(s) {sorted(unknown)}; expected 'source' and 'partition'")
        pool = load_source(data_spec["source"], root)
        return cls(pool=pool, part=partition(pool, data_spec["partition"]), spec=data_spec)

    # --- persistence -------------------------------------------------------------------------------
    def save(self, out_dir: str | Path) -> str:
        """Write ``federation.npz`` and ``stats.json`` atomically; returns the federation's SHA-256."""
        from pcl.data.partition import partition_stats
        from pcl.data.sources import source_sha256

        arrays = {"rotation": self.part.rotation.astype(np.float64), "noise": self.part.noise.astype(np.float64),
                  "cluster": self.part.cluster.astype(np.int64),
                  "spec": np.frombuffer(canonical_json(self.spec).encode(), dtype=np.uint8),
                  "source_sha256": np.frombuffer(source_sha256(self.pool).encode(), dtype=np.uint8)}
        for split in SPLITS:
            parts = self.part.split(split)
            arrays[f"{split}_idx"] = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
            arrays[f"{split}_ptr"] = np.cumsum([0] + [len(p) for p in parts]).astype(np.int64)
        out = Path(out_dir)
        atomic_write(out / "federation.npz", npz_bytes(arrays))
        self.sha256 = sha256_file(out / "federation.npz")
        stats = partition_stats(self.pool, self.part)
        stats.update(federation_sha256=self.sha256, spec=self.spec, source=self.pool.name)
        write_json(out / "stats.json", stats)
        return self.sha256

    @classmethod
    def load(cls, path: str | Path, root: str | Path = "data/raw") -> "Federation":
        """Read a saved federation, refusing one that is corrupt, edited, inconsistent, or whose source changed.

        Integrity (why three places): the npz cannot carry its own hash, so its SHA-256 is checked against
        ``federation_sha256`` in the sibling ``stats.json``; the data spec inside the npz must equal the
        ``spec`` in ``stats.json``; and where the folder is named as the pipeline names it (``federation_dir``:
        the 12-hex ``spec_hash`` of the data spec) the name must match that spec too. Editing the npz alone
        breaks the hash; re-hashing it into ``stats.json`` while changing the spec breaks the folder name.
        This catches corruption and unilateral edits, not a deliberate forger with write access (no secret
        key exists), so every array is also validated structurally (``_validate``) before any use: what
        no honest ``save`` can write is refused even when the hashes agree.
        """
        from pcl.data.sources import load_source, source_sha256

        path = Path(path)
        if path.is_dir():
            path = path / "federation.npz"
        if not path.exists():
            raise FileNotFoundError(f"federation file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                a = {k: z[k] for k in z.files}
        except Exception as err:  # a truncated or foreign file
            raise ValueError(f"{path}: not a readable federation file ({err})") from None
        sha = sha256_file(path)
        spec = _check_identity(path, a, sha)
        num_clients = _validate(path, a)
        pool = load_source(spec["source"], root)
        expected = a["source_sha256"].tobytes().decode(errors="replace")
        if source_sha256(pool) != expected:
            raise ValueError(f"{path}: source {pool.name!r} content hash changed since partitioning "
                             f"(expected {expected}, got {source_sha256(pool)}); re-run the partition step")

        def split(name):
            idx, ptr = a[f"{name}_idx"].astype(np.int64, copy=False), a[f"{name}_ptr"].astype(np.int64, copy=False)
            return [idx[ptr[i]:ptr[i + 1]] for i in range(len(ptr) - 1)]

        splits = {name: split(name) for name in SPLITS}
        _validate_indices(path, splits, len(pool.y), num_clients)
        part = Partition(**splits, rotation=a["rotation"], noise=a["noise"], cluster=a["cluster"])
        return cls(pool=pool, part=part, spec=spec, sha256=sha)

    # --- views for the engine ----------------------------------------------------------------------
    @property
    def num_clients(self) -> int:
        return self.part.num_clients

    @property
    def num_classes(self) -> int:
        return self.pool.num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.pool.x.shape[1:])

    def client_data(self, split: str, device: str | torch.device = "cpu") -> ClientData:
        """One split of all clients as padded tensors, with each client's rotation and noise applied (cached).

        The tensors are always built on the CPU (so they are identical on every machine), then copied to
        ``device``; each (split, device) is built and copied once and then reused.
        """
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
        if split not in self._cache:
            self._cache[split] = self._materialize(split)
        device = torch.device(device)
        if device.type == "cpu":
            return self._cache[split]
        if device.type == "cuda" and device.index is None:  # "cuda" and "cuda:0" share one copy
            device = torch.device("cuda", torch.cuda.current_device())
        key = (split, str(device))
        if key not in self._cache:
            self._cache[key] = self._cache[split].to(device)
        return self._cache[key]

    def _materialize(self, split: str) -> ClientData:
        parts = self.part.split(split)
        n = torch.tensor([len(p) for p in parts], dtype=torch.long)
        n_max = max(1, int(n.max()))
        x_all, y_all = torch.from_numpy(self.pool.x), torch.from_numpy(self.pool.y)
        x = torch.zeros(len(parts), n_max, *x_all.shape[1:], dtype=x_all.dtype)
        y = torch.zeros(len(parts), n_max, dtype=y_all.dtype)
        seed = int(self.spec.get("partition", {}).get("seed", 0))
        for k, idx in enumerate(parts):
            xs = x_all[torch.from_numpy(idx)]
            if self.part.rotation[k]:
                xs = rotate(xs, float(self.part.rotation[k]))
            if self.part.noise[k]:
                gen = torch.Generator().manual_seed((seed * 1_000_003 + 3 * k + SPLITS.index(split)) % 2**63)
                xs = add_noise(xs, float(self.part.noise[k]), gen)
            x[k, :len(idx)] = xs
            y[k, :len(idx)] = y_all[torch.from_numpy(idx)]
        return ClientData(x=x, y=y, n=n)


# --- integrity checks for Federation.load ---------------------------------------------------------------
_MEMBERS = ("spec", "source_sha256", "rotation", "noise", "cluster") + tuple(
    f"{split}_{kind}" for split in SPLITS for kind in ("idx", "ptr"))
_SPEC_HASH_NAME = re.compile(r"[0-9a-f]{12}")


def _check_identity(path: Path, a: dict, sha: str) -> dict:
    """Compare the npz with its ``stats.json`` (hash, spec) and its folder name; returns the parsed spec."""
    stats_path = path.with_name("stats.json")
    if not stats_path.exists():
        raise FileNotFoundError(f"{stats_path}: missing, so {path} cannot be checked against its recorded "
                                f"SHA-256; re-run the partition step (it writes both files)")
    try:
        stats = json.loads(stats_path.read_text())
        recorded = stats["federation_sha256"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{stats_path}: no readable 'federation_sha256' ({err!r}); cannot check {path}") from None
    if sha != recorded:
        raise ValueError(f"{path}: content hash mismatch: file has sha256 {sha}, {stats_path} records "
                         f"{recorded}; the federation was modified or corrupted, re-run the partition step")
    for member in ("spec", "source_sha256"):
        if member not in a:
            raise ValueError(f"{path}: missing member {member!r}")
        if a[member].dtype != np.uint8 or a[member].ndim != 1:
            raise ValueError(f"{path}: member {member!r} must be a 1-D uint8 byte string, "
                             f"got {a[member].dtype} of shape {a[member].shape}")
    try:
        spec = json.loads(a["spec"].tobytes().decode())
    except ValueError as err:
        raise ValueError(f"{path}: member 'spec' is not JSON ({err})") from None
    if not isinstance(spec, dict) or "source" not in spec:
        raise ValueError(f"{path}: member 'spec' is not a data spec with a 'source'")
    if "spec" in stats and canonical_json(stats["spec"]) != canonical_json(spec):
        raise ValueError(f"{path}: member 'spec' differs from the spec in {stats_path}")
    folder = path.parent.name
    if _SPEC_HASH_NAME.fullmatch(folder) and folder != spec_hash(spec):
        raise ValueError(f"{path}: folder is named for data spec hash {folder} but the file holds spec hash "
                         f"{spec_hash(spec)}; the federation is not the one this folder names")
    return spec


def _fail(path: Path, member: str, what: str, client: int | None = None) -> NoReturn:
    at = "" if client is None else f" (first offending client {client})"
    raise ValueError(f"{path}: member {member!r}: {what}{at}")


def _validate(path: Path, a: dict) -> int:
    """Check members, dtypes, shapes and pointers (everything that needs no pool); returns the client count.

    ``np.load`` and slicing accept all of these silently (a pointer past the end is truncated, a falling
    one gives an empty client), so without this a damaged file trains on the wrong data instead of failing.
    """
    for member in _MEMBERS:
        if member not in a:
            raise ValueError(f"{path}: missing member {member!r} (a federation has {', '.join(_MEMBERS)})")
    num_clients = None
    for split in SPLITS:
        idx_name, ptr_name = f"{split}_idx", f"{split}_ptr"
        idx, ptr = a[idx_name], a[ptr_name]
        for name, arr in ((idx_name, idx), (ptr_name, ptr)):
            if not np.issubdtype(arr.dtype, np.integer):
                _fail(path, name, f"dtype must be integer, got {arr.dtype}")
            if arr.ndim != 1:
                _fail(path, name, f"must be 1-D, got shape {arr.shape}")
        if len(ptr) < 1 or ptr[0] != 0:
            _fail(path, ptr_name, f"must start at 0, got {ptr[:1].tolist()}", 0)
        falling = np.flatnonzero(np.diff(ptr.astype(np.int64)) < 0)
        if falling.size:
            _fail(path, ptr_name, "pointers must be non-decreasing", int(falling[0]))
        if ptr[-1] != len(idx):
            past = np.flatnonzero(ptr[1:] > len(idx))
            client = int(past[0]) if past.size else len(ptr) - 2
            _fail(path, ptr_name, f"must end at len({idx_name}) = {len(idx)}, ends at {int(ptr[-1])}", client)
        if num_clients is None:
            num_clients = len(ptr) - 1
        elif len(ptr) - 1 != num_clients:
            _fail(path, ptr_name, f"has {len(ptr) - 1} clients but train_ptr has {num_clients}")
    for member, kind in (("rotation", np.number), ("noise", np.number), ("cluster", np.integer)):
        arr = a[member]
        if arr.shape != (num_clients,):
            _fail(path, member, f"shape must be ({num_clients},) (one per client), got {arr.shape}")
        if not np.issubdtype(arr.dtype, kind) or np.issubdtype(arr.dtype, np.complexfloating):
            _fail(path, member, f"dtype must be {kind.__name__}, got {arr.dtype}")
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            _fail(path, member, "must be finite", int(bad[0]))
    return num_clients


def _validate_indices(path: Path, splits: dict, pool_size: int, num_clients: int) -> None:
    """Every index in [0, pool size) (numpy would wrap a negative one and raise a bare IndexError for a
    large one) and a client's train/val/test pairwise disjoint (else its test scores are on training data)."""
    for split in SPLITS:
        for k, idx in enumerate(splits[split]):
            if idx.size and idx.min() < 0:
                _fail(path, f"{split}_idx", f"negative index {int(idx.min())}", k)
            if idx.size and idx.max() >= pool_size:
                _fail(path, f"{split}_idx", f"index {int(idx.max())} out of range for a pool of {pool_size}", k)
    for k in range(num_clients):
        for i, s in enumerate(SPLITS):
            for t in SPLITS[i + 1:]:
                shared = np.intersect1d(splits[s][k], splits[t][k])
                if shared.size:
                    _fail(path, f"{t}_idx", f"shares {shared.size} index(es) with {s}_idx, e.g. "
                                            f"{int(shared[0])}; splits must be disjoint", k)
