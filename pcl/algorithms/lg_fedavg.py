"""LG-FedAvg (Liang, Liu, Ziyin, Allen, Auerbach, Brent, Salakhutdinov, Morency, 2020, "Think Locally, Act Globally:
Federated Learning with Local and Global Representations", arXiv:2001.01523, Algorithm 1): each client keeps a local
representation (every layer but the head) and shares only the global head, averaged by the server; both parts are
trained together on local data. That is FedSim with ``personal: -head`` (the complement of FedPer's split), one step
size, stateful clients, FedAvg weights n_i and no final fine-tune, which are its defaults here. The paper starts
from a FedAvg model; set ``init_from`` to do the same."""
from __future__ import annotations

from dataclasses import dataclass

from pcl.algorithms.base import register
from pcl.algorithms.fedsim import FedSim
from pcl.algorithms.fedper import FedPerHparams


@dataclass
class LGFedAvgHparams(FedPerHparams):
    personal: str = "-head"


@register("lg_fedavg")
class LGFedAvg(FedSim):
    Hparams = LGFedAvgHparams
