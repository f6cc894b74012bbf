"""FedAvg + local fine-tuning: FedAvg's global model, then each client fine-tunes a copy on its own data
before predicting (the "FedAvg + local adaptation" baseline of Yu et al. 2020 and of the PDBO and partial-
personalization tables). ``ft_group`` fine-tunes only one parameter group (e.g. 'head', as FedPer/FedRep
evaluation does); the fine-tune is recomputed at every evaluation from the current global model, with the
evaluation phase's own generators, so how often a run evaluates never changes its results."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pcl.algorithms.base import register
from pcl.algorithms.fedavg import FedAvg, FedAvgRunHparams
from pcl.algorithms.hparams import param


@dataclass
class FedAvgFTHparams(FedAvgRunHparams):
    """Fine-tuning: ``ft_epochs`` local epochs at step ``ft_lr`` on ``ft_group`` ('all' = the whole model)."""

    ft_epochs: float = param(1.0, gt=0)
    ft_lr: float = param(0.05, gt=0)
    ft_group: str = "all"  # 'all' or a parameter group of the model, checked when the model is known


@register("fedavg_ft")
class FedAvgFT(FedAvg):
    Hparams = FedAvgFTHparams

    def personalized(self, state: dict):
        everyone = torch.arange(self.ctx.num_clients)
        return self.ctx.local_train(self.ctx.broadcast(state["global"]), everyone, self.hp, trainable=self.hp.ft_group,
                                    purpose="finetune", lr=self.hp.ft_lr, local_epochs=self.hp.ft_epochs,
                                    local_steps=None)
