"""The Federation: a source's pool, its partition into clients, and the spec that made them.

On disk a federation is one byte-deterministic ``federation.npz`` (index arrays per client and split, the
per-client shifts, the data spec and the source's content hash) plus a human-readable ``stats.json``.
The samples themselves are not copied: they are reloaded from the source and checked against the hash.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pcl.data.transforms import add_noise, rotate
from pcl.data.types import ClientData, Partition, Pool
from pcl.io import atomic_write, canonical_json, npz_bytes, sha256_file, write_json

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
        """Read a saved federation and re-attach its source, refusing a source whose content changed."""
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
        spec = json.loads(a["spec"].tobytes().decode())
        pool = load_source(spec["source"], root)
        expected = a["source_sha256"].tobytes().decode()
        if source_sha256(pool) != expected:
            raise ValueError(f"{path}: source {pool.name!r} content hash changed since partitioning "
                             f"(expected {expected}, got {source_sha256(pool)}); re-run the partition step")

        def split(name):
            idx, ptr = a[f"{name}_idx"], a[f"{name}_ptr"]
            return [idx[ptr[i]:ptr[i + 1]] for i in range(len(ptr) - 1)]

        part = Partition(train=split("train"), val=split("val"), test=split("test"), rotation=a["rotation"],
                         noise=a["noise"], cluster=a["cluster"])
        return cls(pool=pool, part=part, spec=spec, sha256=sha256_file(path))

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
