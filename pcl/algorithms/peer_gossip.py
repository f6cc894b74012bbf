"""Gossip over sampled peers: what DAC and its baselines (Random, Oracle, PENS) share, written once.

A round of the family (Listo Zec et al., FL-IJCAI'22, official code ``utils.py::train_DAC``/``gossip``/``train_pens``,
commit 45209fd): every client draws ``n_sampled`` peers without replacement from its own sampling distribution,
optionally scores each received model on its own training data (L_ij, the mean loss of model j on client i's train
split), averages the models it chose with its own weighted by train-set size (FedAvg), updates what it has learnt
about its peers (the algorithm's ``learn``), and trains ``local_epochs`` epochs with a fresh Adam state. Clients start
from independent initialisations and each trains E epochs alone first, as every official method does.

Sampling distribution, computed stably. A subclass gives *logits* (``-inf`` = not a candidate; a client's own entry is
always ``-inf``); the distribution is ``softmax`` over a row, kept in log-space, and n peers are drawn by Gumbel-top-k
(the n largest of logit + Gumbel noise: exactly numpy's ``choice(replace=False, p=softmax)``, i.e. successive draws
renormalised; Vieira 2014, Kool et al. ICML 2019). This differs from the official code where that code breaks: it
computes ``exp(tau*s)/sum`` with no max subtraction, which overflows to NaN once a similarity exceeds 709.78/tau, and
once sharp, never-seen peers' probabilities underflow to exactly 0 so that fewer than n peers have positive
probability and ``np.random.choice`` raises. In log-space every finite logit stays drawable (the exact distribution
gives it a tiny but positive probability), so n distinct peers are always drawn while n finite candidates exist;
a row with fewer candidates (Oracle's cluster, PENS's neighbours) draws all of them, as the official ``gossip`` does.

Update order (``order``). ``sequential`` is the official code and what the paper's numbers come from: clients act one
at a time in a random permutation (``ctx.rng('order')``), and a later client reads the models and similarity vectors
that earlier clients already updated in this round. ``synchronous`` (the HAST re-implementation's order) reads the
state of the start of the round for every client: one batched ``ctx.scores`` call for all N x n pairs and one
``ctx.local_train`` for all clients, so it is the one that scales; both exist because results differ (dac.md 1.6).
The peers of a round are drawn at its start in both orders (client i's distribution depends only on its own row,
which only client i writes), so the two orders differ only in what the updates read; ``_step`` is the same code for
both (a batch of clients reading the given state). The sequential order is a Python loop because the math is
sequential, but over *waves* (``waves``), not clients: runs of the permutation in which no client samples one updated
earlier in the run are one batch, which gives exactly the one-by-one result (tested) in about sqrt(n K) calls instead
of K; only the minibatch order of local training differs from a one-by-one loop (one generator per wave, not per
client). benchmarks/dac.py times the three.

Model selection and evaluation. As the official ``ClientUpdate.train``, every client keeps the parameters with the
lowest local validation loss seen after any local training (including the initial one), checked inside ``round``
every round (evaluation is deterministic, so this draws nothing and ``eval_every`` changes nothing); a client
without validation data has nothing to select by and uses its current model. ``personalized``
returns these best-by-validation models, so every evaluation, and in particular the final one after the last round
(pcl.run evaluates after ``finish``, which changes nothing here), reports the models the official code tests.
The current models' validation loss is recorded as the diagnostic ``current_val_loss``.

Diagnostics every round: ``peers`` (K x n: who client i sampled this round, -1 for an empty slot), ``within_share``
(per client, the share of its sampled peers in its own planted cluster; NaN where the partition planted none or
nothing was sampled) and ``current_val_loss``. The K x K matrices only after
round 1 and every ``matrix_every`` rounds (K^2 rows each would make diagnostics.csv tens of MB at 40 clients, GBs at
the paper's 100 clients x 100 rounds): ``sampled`` (cumulative counts, row i sampled column j, up to that round) and
``probs`` (the sampling probabilities after the round's update, i.e. those of the next round).

Differences from the official code, everywhere in the family: L_ij is the per-sample mean over client i's whole
training split (the official code averages per-batch means of a shuffled loader, which weighs a short last batch
more); ``sample_frac`` is fixed at 1 there and every client acts every round here too.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pcl.algorithms.base import Algorithm, LocalSGD
from pcl.algorithms.hparams import param
from pcl.engine import Params, evaluate, mix, put
from pcl.engine.optim import OPTIMIZERS

ORDERS = ("sequential", "synchronous")


@dataclass
class GossipHparams(LocalSGD):
    """Defaults of the official code (``options.py`` and the README's launch line): Adam with ``lr`` 0.01,
    ``local_epochs`` E = 3, ``batch_size`` 8, ``n_sampled`` n = 5 peers per round. ``order``: see the module."""

    lr: float = param(0.01, gt=0)
    local_epochs: float | None = param(3.0, gt=0)
    batch_size: int = param(8, ge=1)
    optimizer: str = param("adam", choices=tuple(OPTIMIZERS))
    n_sampled: int = param(5, ge=1)
    order: str = param("sequential", choices=ORDERS)
    matrix_every: int = param(10, ge=1)  # rounds between K x K diagnostics (make train.rounds a multiple of it)


# --- the sampling distribution --------------------------------------------------------------------------------------
def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """Row-wise log-softmax over the finite entries (float64, max-subtracted); a row without candidates is all -inf."""
    z = logits.to(torch.float64)
    empty = torch.isinf(z).all(1, keepdim=True) & (z < 0).all(1, keepdim=True)
    out = torch.log_softmax(torch.where(empty, torch.zeros_like(z), z), dim=1)
    return torch.where(empty, torch.full_like(out, -torch.inf), out)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    return log_probs(logits).exp()


def sample_peers(logits: torch.Tensor, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, ``n`` distinct columns drawn without replacement from ``softmax(row)`` (Gumbel-top-k), in draw order.

    Returns ``peers`` ``[B, m]`` (m = min(n, columns - 1): a client never samples itself) and ``valid`` ``[B, m]``,
    False in the slots of a row that had fewer than m finite candidates (those slots hold arbitrary columns)."""
    b, k = logits.shape
    m = min(n, k - 1)
    u = torch.rand(b, k, generator=generator, dtype=torch.float64).clamp_min(torch.finfo(torch.float64).tiny)
    keys = log_probs(logits) - torch.log(-torch.log(u))
    peers = keys.topk(m, dim=1).indices
    return peers, torch.isfinite(logits.gather(1, peers))


def exclude_self(logits: torch.Tensor) -> torch.Tensor:
    """``logits`` (row b = client b) with the diagonal set to -inf: own probability 0."""
    return logits.masked_fill(torch.eye(*logits.shape, dtype=torch.bool, device=logits.device), -torch.inf)


# --- per-round bookkeeping ------------------------------------------------------------------------------------------
def counts(clients: torch.Tensor, peers: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """``[len(clients), k]`` int64: how often row b's client took each peer (``mask`` selects the slots)."""
    out = torch.zeros(len(clients), k, dtype=torch.long)
    return out.scatter_add_(1, peers, mask.long())


def within_share(peers: torch.Tensor, valid: torch.Tensor, cluster: np.ndarray) -> torch.Tensor:
    """Per client, the share of its sampled peers in its own planted cluster (NaN: no cluster or no peer)."""
    c = torch.as_tensor(np.asarray(cluster), dtype=torch.long)
    same = (c[peers] == c[:, None]) & valid
    share = same.sum(1).double() / valid.sum(1).double()  # 0/0 = NaN where nothing was sampled
    return torch.where(c >= 0, share, torch.full_like(share, torch.nan))


def fedavg_weights(clients: torch.Tensor, peers: torch.Tensor, chosen: torch.Tensor, n_train: torch.Tensor,
                   k: int) -> torch.Tensor:
    """Rows of the mixing matrix: client ``clients[b]`` averages its own model and its ``chosen`` peers', weighted by
    train-set size (the official ``FedAvg(w, alpha)`` with alpha = len(train_set))."""
    n = n_train.to(torch.float64).cpu()
    w = torch.zeros(len(clients), k, dtype=torch.float64)
    w[torch.arange(len(clients)), clients] = n[clients]
    w.scatter_add_(1, peers, torch.where(chosen, n[peers], torch.zeros(())))
    return w / w.sum(1, keepdim=True)


class PeerGossip(Algorithm):
    """Base of the family: subclasses give the sampling ``logits`` and, where they learn from scores, ``scored``,
    ``choose`` and ``learn``; the round, the order, the averaging, training and best-by-validation are here."""

    Hparams = GossipHparams

    def extra_state(self) -> dict:
        """Algorithm-specific state beside the models (e.g. DAC's similarities)."""
        return {}

    def logits(self, state: dict, t: int) -> torch.Tensor:
        """``[K, K]`` sampling logits of round ``t`` (own entry and non-candidates -inf)."""
        raise NotImplementedError

    def scored(self, t: int) -> bool:
        """Whether round ``t`` computes L_ij for the sampled pairs."""
        return False

    def choose(self, losses: torch.Tensor, valid: torch.Tensor, t: int) -> torch.Tensor:
        """Which sampled peers are averaged (default: all)."""
        return valid

    def learn(self, state: dict, clients, peers, valid, losses, chosen, t: int) -> dict:
        """Update the algorithm's own state rows of ``clients``, reading ``state`` (this round's counts included)."""
        return state

    # --- the shared round -------------------------------------------------------------------------------------
    def init(self) -> dict:
        k = self.ctx.num_clients
        params = self.ctx.local_train(self.ctx.init_params(independent=k), torch.arange(k), self.hp)
        return {"params": params, "best": params, "best_val": self._val_loss(params),
                "n_sampled": torch.zeros(k, k, dtype=torch.long), **self.extra_state()}

    def round(self, state: dict, t: int):
        k = self.ctx.num_clients
        peers, valid = sample_peers(self.logits(state, t), self.hp.n_sampled, self.ctx.rng("peers"))
        if self.hp.order == "synchronous":
            state = self._step(state, torch.arange(k), peers, valid, t)
        else:
            for wave in self.waves(torch.randperm(k, generator=self.ctx.rng("order")).tolist(), peers, valid):
                idx = torch.tensor(wave)
                state = self._step(state, idx, peers[idx], valid[idx], t)
        val = self._val_loss(state["params"])
        better = ~(val >= state["best_val"])  # improved; or no validation data (NaN): nothing to select by
        best = {n: torch.where(better.to(v.device).view(-1, *[1] * (v.dim() - 1)), v, state["best"][n])
                for n, v in state["params"].items()}
        state = {**state, "best": best, "best_val": torch.where(better, val, state["best_val"])}
        diagnostics = {"peers": torch.where(valid, peers, -1),
                       "within_share": within_share(peers, valid, self.ctx.federation.part.cluster),
                       "current_val_loss": val}
        if t == 0 or (t + 1) % self.hp.matrix_every == 0:
            diagnostics.update(sampled=state["n_sampled"], probs=probabilities(self.logits(state, t + 1)))
        return state, diagnostics

    @staticmethod
    def waves(order: list[int], peers: torch.Tensor, valid: torch.Tensor) -> list[list[int]]:
        """The permutation cut into maximal runs in which no client samples one updated earlier in the same run.

        A client's step reads only its sampled peers' rows and writes only its own, so a run is updated as one batch
        with exactly the sequential semantics (each client reads what it would read one by one), in about sqrt(n K)
        batched calls instead of K."""
        out, run = [], []
        for i in order:
            if run and set(peers[i][valid[i]].tolist()) & set(run):
                out.append(run)
                run = []
            run.append(i)
        return out + [run] if run else out

    def _step(self, state: dict, clients: torch.Tensor, peers: torch.Tensor, valid: torch.Tensor, t: int) -> dict:
        """One update of the ``clients`` (a batch), reading ``state``: score, choose, average, learn, train."""
        k, params = self.ctx.num_clients, state["params"]
        losses = torch.full(peers.shape, torch.nan)
        if self.scored(t) and valid.any():
            pairs = torch.stack([clients[:, None].expand_as(peers), peers], -1)[valid]
            losses[valid] = self.ctx.scores(params, "train", pairs)["loss"].cpu()
        chosen = self.choose(losses, valid, t)
        mixed = mix(fedavg_weights(clients, peers, chosen, self.ctx.train.n, k).to(self.ctx.device), params)
        n_sampled = state["n_sampled"].index_put((clients,), state["n_sampled"][clients] + counts(clients, peers,
                                                                                                  valid, k))
        new = self.learn({**state, "n_sampled": n_sampled}, clients, peers, valid, losses, chosen, t)
        return {**new, "params": put(params, clients, self.ctx.local_train(mixed, clients, self.hp))}

    def _val_loss(self, params: Params) -> torch.Tensor:
        return evaluate(self.ctx.model, params, self.ctx.data("val"))["loss"].cpu()

    def personalized(self, state: dict) -> Params:
        return state["best"]


def restricted(mask: torch.Tensor) -> torch.Tensor:
    """Uniform logits over the True entries of a ``[K, K]`` candidate mask (own entry excluded)."""
    return exclude_self(torch.where(mask, 0.0, -torch.inf).to(torch.float64))


TWO_HOP = ("fixed", "last")


def two_hop(own: torch.Tensor, known: torch.Tensor, seen: torch.Tensor, peers: torch.Tensor, valid: torch.Tensor,
            rule: str = "fixed") -> torch.Tensor:
    """DAC's two-hop propagation of similarity estimates (dac.md 1.1), for a batch of receiving clients.

    ``own`` ``[B, K]``: client i's similarities after this round's direct update (s_ik = 1/L_ik for its sampled k);
    ``known`` ``[B, m, K]``: the similarity vectors of its sampled peers, in draw order; ``seen`` ``[B, K]``: the peers
    i has ever sampled (this round included) and i itself. Every j known by some sampled k (s_kj > 0) and not seen
    gets s_ij = s_{k*j}, where k* is the sampled peer that knows j and is most similar to i (``rule='fixed'``: the
    argmax of commit 45209fd; ties go to the later draw, as the official stable sort's last element) or the last
    drawn peer that knows j (``rule='last'``: the 2022 code before that fix, which sorted by position)."""
    if rule not in TWO_HOP:
        raise ValueError(f"two_hop: unknown rule {rule!r}; choose one of {TWO_HOP}")
    m = peers.shape[1]
    knows = (known > 0) & valid[..., None]                                  # [B, m, K]
    target = knows.any(1) & ~seen
    if rule == "fixed":
        key = own.gather(1, peers)
    else:
        key = torch.arange(m, dtype=own.dtype).expand(peers.shape)
    score = torch.where(knows, key[..., None], torch.tensor(-torch.inf, dtype=own.dtype))
    best = (m - 1) - score.flip(1).argmax(1)                                # argmax, ties to the later draw
    return torch.where(target, known.gather(1, best[:, None]).squeeze(1), own)
