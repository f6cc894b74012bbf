"""Speed and memory of one round of local training on PFLlib's MNIST CNN: a PFLlib-style loop vs. pcl's engine.

Workload (PFLlib's MNIST setting, imitated offline):

* data: scikit-learn's 1797 digits (8x8, values 0..16) upscaled to 1x28x28 (bilinear), scaled to [0, 1] and
  normalised like PFLlib's MNIST (``Normalize([0.5], [0.5])``, so [-1, 1]); dealt by PFLlib's ``separate_data``
  with partition "pat", 2 classes per client, *balanced* (``generate_MNIST.py noniid balance pat``: each class is
  split evenly among the clients that hold it; the unbalanced variant leaves clients empty at 100 clients of 1797
  images, and PFLlib's split then fails), then each client's own 75/25 train/test split (``split_data``).
  Up to 100 clients use the 1797 images as they are; beyond that there are too few, so every class is resampled
  with replacement (seed 0) to 1.8 K images, i.e. 18 K in all: each client holds 18, as at 100 clients.
* model: ``FedAvgCNN``, the pcl config ``MODEL`` below (582,026 parameters); SGD lr 0.005, batch 10, 1 local epoch,
  PFLlib's DataLoader semantics: the last partial batch is dropped (floor(n/10) steps, at least 1 step).
* paths: ``pfllib`` imitates PFLlib's per-client loop (a deepcopy of the global model, an optimizer and a DataLoader
  per client every round, ``loss.backward(); opt.step()``, then a train-size-weighted average of the models);
  ``pcl_*`` are pcl's ``LocalTrainer`` with backend auto / vectorized / loop. All run the same per-client tensors and
  the same number of SGD steps per client (a client with fewer than 10 samples takes one batch of 10 that wraps
  into a fresh permutation, as pcl's plan does).

Timing: one round = every client trains once, then the server averages; ``--repeats`` interleaved repetitions
(A B C A B C ...) after a warm-up on 20 clients; median (min-max) seconds. Memory: each (path, clients) runs one round
in a fresh subprocess, which reports its peak RSS above its RSS after setup (data and model built; Linux VmHWM,
reset through /proc/self/clear_refs). GFLOP/s counts conv/linear multiply-adds from the layer shapes (x2 per MAC,
training = 3x forward) against a float32 1024x1024 ``torch.mm`` measured in the same run.
Run: ``python benchmarks/cnn.py [--clients 20 100 1000] [--repeats 5] [--paths ...] [--threads 1]``.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from pcl.data.types import ClientData
from pcl.engine import LocalSpec, LocalTrainer, broadcast, weighted_mean
from pcl.models import build_model

MODEL = {"name": "cnn", "channels": [32, 64], "hidden": [512], "kernel": 5, "padding": 0}  # PFLlib's FedAvgCNN
BATCH, LR, CLASSES, PER_CLIENT_BEYOND_100 = 10, 0.005, 10, 18
SPEC = LocalSpec(lr=LR, batch_size=BATCH, local_epochs=1, drop_last=True)
PATHS = ("pfllib", "pcl_default", "pcl_vectorized", "pcl_loop")
BACKEND = {"pcl_default": "auto", "pcl_vectorized": "vectorized", "pcl_loop": "loop"}


def separate_pat(labels: np.ndarray, k: int, rng: np.random.RandomState, class_per_client: int = 2) -> list:
    """PFLlib's separate_data(partition='pat', balance=True): class i goes to the next clients with a free slot."""
    free, parts = [class_per_client] * k, [np.empty(0, dtype=np.int64) for _ in range(k)]
    for i in range(CLASSES):
        idx = np.flatnonzero(labels == i)
        chosen = [c for c in range(k) if free[c] > 0][:int(np.ceil(k / CLASSES * class_per_client))]
        sizes = [int(len(idx) / len(chosen))] * (len(chosen) - 1)
        sizes.append(len(idx) - sum(sizes))
        for c, start, size in zip(chosen, np.cumsum([0, *sizes[:-1]]), sizes):
            parts[c] = np.append(parts[c], idx[start:start + size])
            free[c] -= 1
    return parts


def federation(k: int) -> ClientData:
    """Every client's training split, padded into one ClientData [K, n_max, 1, 28, 28]."""
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16
    x = (F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False).clamp(0, 1) - 0.5) / 0.5
    y = digits.target
    pool = np.arange(len(y))
    if k > 100:  # too few images: resample each class with replacement so that every client holds 18
        draw = np.random.RandomState(0)
        pool = np.concatenate([draw.choice(np.flatnonzero(y == i), PER_CLIENT_BEYOND_100 * k // CLASSES)
                               for i in range(CLASSES)])
    rng = np.random.RandomState(1)  # PFLlib seeds numpy with 1
    parts = separate_pat(y[pool], k, rng)
    train = [pool[train_test_split(p, train_size=0.75, shuffle=True, random_state=rng)[0]] for p in parts]
    n = torch.tensor([len(t) for t in train])
    xs, ys = torch.zeros(k, int(n.max()), 1, 28, 28), torch.zeros(k, int(n.max()), dtype=torch.long)
    for j, t in enumerate(train):
        xs[j, :len(t)], ys[j, :len(t)] = x[t], torch.as_tensor(y[t])
    return ClientData(xs, ys, n)


def head(data: ClientData, k: int) -> ClientData:
    return ClientData(data.x[:k], data.y[:k], data.n[:k])


def train_flops_per_sample(model: nn.Module, shape=(1, 28, 28)) -> float:
    """2 x (conv + linear multiply-adds) of one forward pass, x3 for forward + backward (input and weight grads)."""
    macs = []

    def count(m, _inp, out):
        per_out = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1] if isinstance(m, nn.Conv2d) \
            else m.in_features
        macs.append(out[0].numel() * per_out)
    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for h in hooks:
        h.remove()
    return 3 * 2 * sum(macs)


_FILES: dict[tuple[int, int], str] = {}
_TMP = tempfile.TemporaryDirectory(prefix="pfllib-")


def client_file(data: ClientData, j: int) -> str:
    """Client j's training data as PFLlib stores it (one .npz per client), written once per data set."""
    key = (id(data), j)
    if key not in _FILES:
        n = int(data.n[j])
        _FILES[key] = f"{_TMP.name}/{id(data)}-{j}.npz"
        np.savez(_FILES[key], data={"x": data.x[j, :n].numpy(), "y": data.y[j, :n].numpy()})
    return _FILES[key]


def pfllib_round(model: nn.Module, w: dict, data: ClientData, seed: int) -> dict:
    """PFLlib: each client reads its data from disk (utils/data_utils.read_client_data, every round), trains a copy
    of the global model with its own optimizer and DataLoader; the server then sums the uploaded models weighted by
    train size (serverbase.aggregate_parameters)."""
    g = torch.Generator().manual_seed(seed)
    model.load_state_dict(w)
    uploaded, sizes = [], []
    for j in range(data.num_clients):
        stored = np.load(client_file(data, j), allow_pickle=True)["data"].tolist()
        x, y = torch.Tensor(stored["x"]).type(torch.float32), torch.Tensor(stored["y"]).type(torch.int64)
        n = len(y)
        local = copy.deepcopy(model)
        opt = torch.optim.SGD(local.parameters(), lr=LR)
        ds = TensorDataset(x, y)
        # = DataLoader(ds, BATCH, shuffle=True, drop_last=True) when n >= BATCH; one wrapped batch when n < BATCH
        sampler = RandomSampler(ds, num_samples=max(1, n // BATCH) * BATCH, generator=g)
        local.train()
        for xb, yb in DataLoader(ds, batch_size=BATCH, sampler=sampler, drop_last=True):
            loss = F.cross_entropy(local(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        uploaded.append(local)
        sizes.append(n)
    total = sum(sizes)
    avg = {name: torch.zeros_like(v) for name, v in w.items()}
    for local, n in zip(uploaded, sizes):
        for name, p in local.named_parameters():
            avg[name] += p.data.clone() * (n / total)
    return avg


def pcl_round(trainer: LocalTrainer, w: dict, data: ClientData, seed: int) -> dict:
    out = trainer.train(broadcast(w, data.num_clients), data, torch.arange(data.num_clients), SPEC,
                        generator=torch.Generator().manual_seed(seed))
    return weighted_mean(out, data.n)


def setup(path: str):
    """The model, its global weights and ``round(data, seed)`` for one path."""
    torch.manual_seed(0)
    model = build_model(MODEL, (1, 28, 28), CLASSES)
    w = {n: p.detach().clone() for n, p in model.named_parameters()}
    if path == "pfllib":
        return model, lambda data, seed: pfllib_round(model, w, data, seed)
    trainer = LocalTrainer(model, backend=BACKEND[path], input_shape=(1, 28, 28))
    return model, lambda data, seed: pcl_round(trainer, w, data, seed)


def sgemm_gflops(repeats: int = 5) -> float:
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * 1024**3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def memory_child(path: str, k: int) -> None:
    """Runs in a fresh process: peak RSS (MB) of one round above the RSS after setup."""
    data = federation(k)
    _, run = setup(path)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current RSS
    base = _status_kb("VmRSS")
    run(data, 1)
    print(f"PEAK_MB {(_status_kb('VmHWM') - base) / 1024:.1f}")


def peak_mb(path: str, k: int, threads: int) -> float:
    res = subprocess.run([sys.executable, __file__, "--memory-child", path, str(k), "--threads", str(threads)],
                         capture_output=True, text=True, check=True)
    return float(res.stdout.split("PEAK_MB")[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[20, 100, 1000])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-memory", action="store_true", help="skip the per-path memory subprocesses")
    ap.add_argument("--memory-child", nargs=2, metavar=("PATH", "K"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        return memory_child(args.memory_child[0], int(args.memory_child[1]))

    model = build_model(MODEL, (1, 28, 28), CLASSES)
    per_sample, peak = train_flops_per_sample(model), sgemm_gflops()
    size = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__}, {args.threads} thread(s); FedAvgCNN {size:,} params, "
          f"{per_sample / 1e9:.4f} GFLOP per training sample; sgemm 1024^3: {peak:.1f} GFLOP/s; "
          f"pcl_default = {LocalTrainer(model, 'auto', input_shape=(1, 28, 28)).backend}; median of {args.repeats} interleaved rounds")
    rounds = {p: setup(p)[1] for p in args.paths}
    rows = []
    for k in args.clients:
        data = federation(k)
        steps = int(torch.clamp(data.n // BATCH, min=1).sum())
        print(f"{k} clients: {int(data.n.sum())} train samples (n {int(data.n.min())}..{int(data.n.max())}), "
              f"{steps} SGD steps per round")
        for p in args.paths:
            rounds[p](head(data, 20), 0)  # warm-up
        times = {p: [] for p in args.paths}
        for r in range(args.repeats):
            for p in args.paths:
                times[p].append(_timed(lambda: rounds[p](data, r + 1)))
        for p in args.paths:
            mem = float("nan") if args.no_memory else peak_mb(p, k, args.threads)
            rows.append((k, p, times[p], steps * BATCH * per_sample / statistics.median(times[p]) / 1e9, mem))

    print(f"\n{'clients':>7} {'path':<15} {'s/round (min-max)':>22} {'GFLOP/s':>8} {'% sgemm':>8} {'peak MB':>8} "
          f"{'x pcl_default':>13}")
    for k, p, ts, gflops, mem in rows:
        ref = next((statistics.median(t) for kk, pp, t, *_ in rows if kk == k and pp == "pcl_default"), float("nan"))
        med = statistics.median(ts)
        print(f"{k:>7} {p:<15} {med:>9.3f} ({min(ts):.3f}-{max(ts):.3f}) {gflops:>8.1f} {100 * gflops / peak:>7.1f}% "
              f"{mem:>8.0f} {med / ref:>12.2f}x")

    if {"pcl_vectorized", "pcl_loop"} <= set(args.paths):
        data = head(federation(min(args.clients)), 20)
        w = {n: p.detach().clone() for n, p in model.named_parameters()}
        out = [LocalTrainer(model, backend=b).train(broadcast(w, data.num_clients), data,
                                                    torch.arange(data.num_clients), SPEC,
                                                    generator=torch.Generator().manual_seed(7))
               for b in ("vectorized", "loop")]
        diff = max((out[0][n] - out[1][n]).abs().max().item() for n in w)
        print(f"\npcl_vectorized vs pcl_loop, {data.num_clients} clients, trained stacked parameters: "
              f"max |diff| = {diff:.2e}")


if __name__ == "__main__":
    main()
