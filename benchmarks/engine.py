"""Seconds per round of local training: the vectorized engine vs. a peer-style loop and our reference loop.

One round = every client trains one local epoch (SGD, batch 10) from the global model, then the server
averages. Clients hold 50 digits each (drawn from scikit-learn's digits, so 1,000 clients fit).

* peer loop: what PFLlib does: one model object, optimizer and DataLoader per client, trained in turn;
* tight loop: pcl's reference path (one parameter set at a time, functional updates, no per-client objects);
* vectorized: pcl's engine (torch.func: vmap over stacked client parameters).

All three read the same minibatch plan, so they must produce the same parameters; the script checks that.
Run: ``python benchmarks/engine.py [--clients 10 100 1000] [--models mlp cnn] [--threads 1]``.
"""
from __future__ import annotations

import argparse
import copy
import time

import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

from pcl.data.types import ClientData
from pcl.engine import LocalSpec, LocalTrainer, broadcast, weighted_mean
from pcl.engine.batches import make_plan
from pcl.engine.objective import task_loss
from pcl.models import build_model

PER_CLIENT, BATCH, LR = 50, 10, 0.05


def client_data(k: int) -> ClientData:
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16
    y = torch.tensor(digits.target)
    idx = torch.randint(0, len(y), (k, PER_CLIENT), generator=torch.Generator().manual_seed(0))
    return ClientData(x[idx], y[idx], torch.full((k,), PER_CLIENT))


def peer_round(model, global_params, data, plan):
    """PFLlib-style: per client, a model copy + optimizer + DataLoader, then average the state dicts."""
    states = []
    for j in range(data.num_clients):
        local = copy.deepcopy(model)
        local.load_state_dict(global_params)
        opt = torch.optim.SGD(local.parameters(), lr=LR)
        loader = DataLoader(TensorDataset(data.x[j], data.y[j]), batch_sampler=plan.index[:, j].tolist())
        for xb, yb in loader:
            opt.zero_grad()
            task_loss(local(xb), yb).backward()
            opt.step()
        states.append({n: p.detach() for n, p in local.named_parameters()})
    return {n: torch.stack([s[n] for s in states]).mean(0) for n in states[0]}


def engine_round(trainer, global_params, data, seed):
    stacked = broadcast(global_params, data.num_clients)
    spec = LocalSpec(lr=LR, batch_size=BATCH, local_epochs=1)
    out = trainer.train(stacked, data, torch.arange(data.num_clients), spec, generator=torch.Generator().manual_seed(seed))
    return weighted_mean(out, data.n)


def timed(fn, repeats):
    fn()  # warm-up (first vmap trace, allocator)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--models", nargs="+", default=["mlp", "cnn"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s); one round = 1 local epoch of {PER_CLIENT} samples, "
          f"batch {BATCH}, SGD; best of {args.repeats}")
    for name in args.models:
        model = build_model({"name": name}, (1, 8, 8), 10)
        w = {n: p.detach().clone() for n, p in model.named_parameters()}
        for k in args.clients:
            data = client_data(k)
            plan = make_plan(data.n, BATCH, epochs=1, generator=torch.Generator().manual_seed(1))
            t_peer, r_peer = timed(lambda: peer_round(model, w, data, plan), args.repeats)
            t_loop, r_loop = timed(lambda: engine_round(LocalTrainer(model, backend="loop"), w, data, 1), args.repeats)
            t_vec, r_vec = timed(lambda: engine_round(LocalTrainer(model, backend="vectorized"), w, data, 1), args.repeats)
            diff = max(max((r_vec[n] - r[n]).abs().max().item() for n in w) for r in (r_peer, r_loop))
            default = LocalTrainer(model, "auto", input_shape=(1, 8, 8)).backend
            print(f"{name} {k} clients (default backend: {default}): peer loop {t_peer:.3f} s, tight loop {t_loop:.3f} s, vectorized {t_vec:.3f} s, "
                  f"{t_peer / t_vec:.1f}x vs peer, {t_loop / t_vec:.1f}x vs tight; max |param diff| {diff:.1e}")


if __name__ == "__main__":
    main()
