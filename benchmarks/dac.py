"""Seconds per DAC round: the synchronous order (vectorized: one batched ``ctx.scores`` call for all N x n pairs, one
``ctx.local_train`` for all clients) vs the sequential order (the official code's: each client reads the models
already updated in the round), both as pcl computes it (in waves, ``PeerGossip.waves``) and as a per-client Python
loop (N scoring calls and N one-client trainings, the official code's structure).

Clients hold ``--train``/``--val`` digits each (drawn with replacement from scikit-learn's digits, so 100 clients have
the same per-client data as 20); the model is an MLP, the hyperparameters DAC's defaults (n = 5 peers, E = 3 Adam
epochs, batch 8). Each order runs the initial local training untimed, then ``--rounds`` timed rounds.
Run: ``python benchmarks/dac.py [--clients 20 100] [--rounds 1] [--threads 1]`` (well under 2 minutes on one core).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import pcl.algorithms.dac  # noqa: F401  (registration)
from pcl.algorithms import ALGORITHMS, Context, make_hparams
from pcl.data.federation import Federation
from pcl.data.sources import load_source
from pcl.data.types import Partition
from pcl.engine import LocalTrainer
from pcl.models import build_model


def federation(k: int, n_train: int, n_val: int) -> Federation:
    pool = load_source({"name": "digits"})
    rng = np.random.default_rng(0)
    draw = lambda n: [rng.integers(0, len(pool.y), n) for _ in range(k)]  # noqa: E731
    part = Partition(train=draw(n_train), val=draw(n_val), test=draw(n_val), rotation=np.zeros(k),
                     noise=np.zeros(k), cluster=np.full(k, -1))
    return Federation(pool=pool, part=part, spec={"partition": {"seed": 0}})


def seconds_per_round(fed: Federation, order: str, rounds: int, hidden: int, one_by_one: bool = False) -> float:
    model = build_model({"name": "mlp", "hidden": [hidden]}, fed.input_shape, fed.num_classes)
    ctx = Context(model, fed, LocalTrainer(model, backend="vectorized"), seed=0)
    alg = ALGORITHMS["dac"](make_hparams(ALGORITHMS["dac"].Hparams, {"order": order}), ctx)
    if one_by_one:
        alg.waves = lambda perm, peers, valid: [[i] for i in perm]
    state = alg.init()
    start = time.perf_counter()
    for t in range(rounds):
        ctx.rngs.begin("train", t)
        state, _ = alg.round(state, t)
    return (time.perf_counter() - start) / rounds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[20, 100])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--train", type=int, default=40)
    ap.add_argument("--val", type=int, default=20)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s); DAC defaults (n=5, E=3, Adam, batch 8), MLP "
          f"[{args.hidden}], {args.train} train / {args.val} val digits per client; mean of {args.rounds} round(s)")
    for k in args.clients:
        fed = federation(k, args.train, args.val)
        sync = seconds_per_round(fed, "synchronous", args.rounds, args.hidden)
        waves = seconds_per_round(fed, "sequential", args.rounds, args.hidden)
        loop = seconds_per_round(fed, "sequential", args.rounds, args.hidden, one_by_one=True)
        print(f"{k:4d} clients: synchronous (vectorized) {sync:.3f} s/round; sequential in waves {waves:.3f} s/round; "
              f"sequential per-client loop {loop:.3f} s/round; loop / synchronous {loop / sync:.1f}x, "
              f"loop / waves {loop / waves:.1f}x")


if __name__ == "__main__":
    main()
