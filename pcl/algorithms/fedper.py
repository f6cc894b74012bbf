"""FedPer (Arivazhagan, Aggarwal, Singh, Choudhary, 2019, "Federated Learning with Personalization Layers",
arXiv:1912.00818, Algorithm 1): base layers shared and averaged FedAvg-style (weights n_i), personalization layers
(the head) kept on each client; both trained together by local SGD. That is FedSim with ``personal: head``, one step
size, stateful clients, server SGD lr 1 and no final fine-tune, which are its defaults here."""
from __future__ import annotations

from dataclasses import dataclass

from pcl.algorithms.base import register
from pcl.algorithms.fedsim import FedSim
from pcl.algorithms.hparams import param
from pcl.algorithms.partial import PartialHparams


@dataclass
class FedPerHparams(PartialHparams):
    weighting: str = param("examples", choices=("batches", "examples", "uniform"))
    finetune_epochs: float = param(0.0, ge=0)


@register("fedper")
class FedPer(FedSim):
    Hparams = FedPerHparams
