"""Seconds per SGP step and per HGP depth step, vectorized over nodes vs. a per-node loop, at 20 and 100 nodes.

* SGP step: every node takes one SGD step at z_i = x_i / w_i (the engine's vectorized backend vs. its reference loop,
  through the same pure step), then one push-sum product on a sampled stochastic directed graph.
* HGP depth step (PDBO-DA, class weights): one VJP of each node's self-message (vmapped vs. node by node) plus the
  mixing product of u over the sampled reverse edges. The two must agree; the script checks that.
Model: the digits MLP (64-32-10), 50 samples per node, batch 32. Run: ``python benchmarks/bilevel.py`` (< 2 min).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch.func import functional_call, vjp, vmap

from pcl.bilevel.hgp import _step_fn, sampled_mixing
from pcl.data.types import ClientData
from pcl.engine import LocalSpec, LocalTrainer, broadcast, mix
from pcl.engine.objective import task_loss
from pcl.models import build_model
from pcl.topology import Graph, Topology, complete, debias, push_sum

PER_NODE, BATCH, LR = 50, 32, 0.05


def node_data(k: int) -> ClientData:
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16
    idx = torch.randint(0, len(x), (k, PER_NODE), generator=torch.Generator().manual_seed(0))
    return ClientData(x[idx], torch.tensor(digits.target)[idx], torch.full((k,), PER_NODE))


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (functorch traces on first use)
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    return (time.perf_counter() - start) / repeats, out


def bench(k: int, repeats: int) -> None:
    model = build_model({"name": "mlp", "hidden": [32]}, (64,), 10)
    data = node_data(k)
    x = broadcast({n: p.detach() for n, p in model.named_parameters()}, k)
    x = {n: v.clone() for n, v in x.items()}
    w = torch.ones(k, dtype=torch.float64)
    topo = Topology(Graph.stochastic(complete(k), np.random.default_rng(0)), "push_sum")
    gen = torch.Generator().manual_seed(0)
    spec = LocalSpec(lr=LR, batch_size=BATCH, local_epochs=None, local_steps=1)

    def sgp_step(trainer):
        P = topo.push_sum(topo.sample(gen))
        z = debias(x, w)
        moved = trainer.train(z, data, torch.arange(k), spec, generator=torch.Generator().manual_seed(1))
        xs, ws = push_sum(P, x, w)
        return {n: v + moved[n] - z[n] for n, v in xs.items()}

    vec, _ = timed(lambda: sgp_step(LocalTrainer(model, "vectorized")), repeats)
    loop, _ = timed(lambda: sgp_step(LocalTrainer(model, "loop")), repeats)
    print(f"{k:>4} nodes  SGP step: vectorized {vec * 1e3:8.1f} ms   loop {loop * 1e3:8.1f} ms   loop/vec {loop / vec:5.1f}x")

    lam = torch.zeros(k, 10)

    def inner(z, lam_i, batch):
        xb, yb = batch
        return task_loss(functional_call(model, z, (xb,)), yb, 10 * torch.softmax(lam_i, -1))
    s = _step_fn(inner, LR * 0.01, 1.0)
    batch = (data.x[:, :BATCH], data.y[:, :BATCH])
    u = {n: torch.randn(v.shape, generator=gen) for n, v in x.items()}
    pbar, rates = topo.expected_push_sum(), topo.expected()

    def pull(x_i, w_i, l_i, b, c):
        return vjp(lambda a, lb: s(a, w_i, lb, b), x_i, l_i)[1](c)

    def hgp_vectorized():
        (ux, bu) = vmap(pull)(x, w.float(), lam, batch, u)
        return {n: mix(sampled_mixing(topo, gen, pbar, rates).T, u)[n] + ux[n] for n in u}, bu

    def hgp_loop():
        parts = [pull({n: v[i] for n, v in x.items()}, w[i].float(), lam[i], (batch[0][i], batch[1][i]),
                      {n: v[i] for n, v in u.items()}) for i in range(k)]
        ux = {n: torch.stack([p[0][n] for p in parts]) for n in u}
        return {n: mix(sampled_mixing(topo, gen, pbar, rates).T, u)[n] + ux[n] for n in u}, torch.stack(
            [p[1] for p in parts])

    vec, (_, bv) = timed(hgp_vectorized, repeats)
    loop, (_, bl) = timed(hgp_loop, repeats)
    torch.testing.assert_close(bv, bl, rtol=1e-4, atol=1e-7)
    print(f"{k:>4} nodes  HGP step: vectorized {vec * 1e3:8.1f} ms   loop {loop * 1e3:8.1f} ms   loop/vec {loop / vec:5.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for k in args.nodes:
        bench(k, args.repeats)


if __name__ == "__main__":
    main()
