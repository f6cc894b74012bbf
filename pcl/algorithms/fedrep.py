"""FedRep (Collins, Hassani, Mokhtari, Shakkottai, ICML 2021, "Exploiting Shared Representations for Personalized
Federated Learning", Algorithm 1): each sampled client first trains its head for tau_h local epochs with the
representation frozen (the paper uses 10), then the representation for one epoch with its new head frozen; the server
averages the representations. That is FedAlt with ``personal: head`` and ``personal_epochs: 10``, stateful clients and
no final fine-tune, which are its defaults here. Averaging weights n_i (``weighting: examples``, as the official
FedRep code; Algorithm 1 writes the plain mean, ``weighting: uniform``). ``lr`` keeps FedAlt's 0.01 (Pillutla et
al.'s EMNIST value): the representation gets one epoch per round, so a run of a few dozen rounds needs a larger one."""
from __future__ import annotations

from dataclasses import dataclass

from pcl.algorithms.base import register
from pcl.algorithms.fedalt import FedAlt, FedAltHparams
from pcl.algorithms.hparams import param


@dataclass
class FedRepHparams(FedAltHparams):
    personal_epochs: float | None = param(10.0, ge=0)
    weighting: str = param("examples", choices=("batches", "examples", "uniform"))
    finetune_epochs: float = param(0.0, ge=0)


@register("fedrep")
class FedRep(FedAlt):
    Hparams = FedRepHparams
