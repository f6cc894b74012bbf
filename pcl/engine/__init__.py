"""Stacked client state, local training on per-client objectives, batched evaluation and peer scoring, mixing."""
from pcl.engine.evaluate import evaluate, outputs, score
from pcl.engine.local import BACKENDS, LocalSpec, LocalTrainer, default_backend, make_step
from pcl.engine.objective import Linear, Mixture, Objective, Prox, Single, TaskLoss, task_loss
from pcl.engine.stack import Params, broadcast, mix, put, take, weighted_mean

__all__ = ["evaluate", "outputs", "score", "BACKENDS", "LocalSpec", "LocalTrainer", "default_backend", "make_step",
           "Linear", "Mixture", "Objective", "Prox", "Single", "TaskLoss", "task_loss", "Params", "broadcast", "mix",
           "put", "take", "weighted_mean"]
