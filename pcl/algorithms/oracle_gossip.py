"""Oracle gossip: the official DAC code's ``--oracle`` baseline (Listo Zec et al., FL-IJCAI'22, ``main_fed.py`` +
``utils.py::gossip``, commit 45209fd): random gossip restricted to the client's true cluster (the partition's planted
``cluster``); a client whose cluster has fewer than n other members averages with all of them, one alone trains alone.

Fixed bug: in the official label-shift branch the peer sets are built from the stale loop variable ``idx`` (= 99 after
the client-construction loop) instead of ``i``, so every client gets the "animals" set {40..98}; here every client's
peers are its own cluster's members, as the covariate-shift branch (and the method's intent) has it."""
from __future__ import annotations

import numpy as np
import torch

from pcl.algorithms.base import register
from pcl.algorithms.peer_gossip import PeerGossip, restricted


@register("oracle_gossip")
class OracleGossip(PeerGossip):
    def __init__(self, hp, ctx) -> None:
        super().__init__(hp, ctx)
        cluster = np.asarray(ctx.federation.part.cluster)
        if (cluster < 0).any():
            missing = np.flatnonzero(cluster < 0)
            raise ValueError(f"oracle_gossip needs the planted cluster of every client, but the partition "
                             f"{ctx.federation.spec.get('partition', {}).get('scheme')!r} planted none for "
                             f"{len(missing)} of {len(cluster)} clients (e.g. client {missing[0]}); use a scheme "
                             f"with planted clusters")
        c = torch.as_tensor(cluster)
        self.same = c[:, None] == c[None, :]

    def logits(self, state: dict, t: int) -> torch.Tensor:
        return restricted(self.same)
