"""Optimal model averaging on neural networks (Grimberg, Hartley, Karimireddy, Jaggi, "Optimal Model Averaging:
Towards Personalized Collaborative Learning", arXiv 2110.12946; spec docs/papers/optimal-model-averaging.md).

The paper shows, for scalar mean estimation, that some weight α on the global model always beats the local model,
with α* = E[(L−μ)(L−G)] / E[(L−G)²] (closed forms in ``pcl.theory.averaging``). Its neural-network use here is our
design: a Local model per client and a FedAvg global model are trained side by side from the same initialisation
(each round: one local-training pass for every client, then one FedAvg round), and client i predicts with

    (1 − α_i)·softmax(local_i(x)) + α_i·softmax(global(x))     (regression: the same mixture of outputs).

Predictions, not parameters, are interpolated by default: the scalar theory averages two estimators, and the
mixture of two predictors is the direct analogue, well defined for any pair of networks. Parameter interpolation
(``interpolate: params``) is only meaningful when both models lie in one basin (a shared FedAvg starting point and
short training); local models trained for many rounds from a random init need not, and their average can be worse
than both. It is offered because it is cheap, not as the default.

α_i per client is either fixed (``alpha``) or chosen at every evaluation on the client's VALIDATION split over
``alpha_grid`` (never on test) by validation loss or accuracy (``select_by``; accuracy ties go to the lower loss,
remaining ties to the smaller α). The chosen α_i per client is recorded as the diagnostic ``alpha``
(diagnostics.csv).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

from pcl.algorithms.base import Algorithm, register
from pcl.algorithms.fedavg import FedAvg, FedAvgHparams, FedAvgRunHparams
from pcl.algorithms.hparams import param
from pcl.algorithms.local import Local
from pcl.data.types import ClientData
from pcl.engine import Params, outputs, score

INTERPOLATE = ("predictions", "params")
SELECT_BY = ("loss", "acc")


@dataclass
class ModelAveragingHparams(FedAvgHparams):
    """Optimal model averaging (Grimberg et al. 2021, arXiv 2110.12946) of Local and FedAvg models; the neural
    version is our design. ``alpha``: fixed weight on the global model in [0, 1], or None to pick α_i per client
    on validation over ``alpha_grid`` by ``select_by`` ('loss' or 'acc'); ``interpolate``: 'predictions' or
    'params'. The local-training fields (lr, local_epochs, ...) are shared by the Local and the FedAvg model."""

    alpha: float | None = param(None, ge=0, le=1)
    alpha_grid: list[float] = param(default_factory=lambda: [round(0.05 * i, 2) for i in range(21)], ge=0, le=1,
                                    min_items=1)
    select_by: str = param("loss", choices=SELECT_BY)
    interpolate: str = param("predictions", choices=INTERPOLATE)


@register("model_averaging")
class ModelAveraging(Algorithm):
    Hparams = ModelAveragingHparams

    def __init__(self, hp, ctx) -> None:
        super().__init__(hp, ctx)
        if hp.select_by == "acc" and ctx.federation.num_classes == 0:
            raise ValueError("select_by='acc' needs a classification task; this federation is regression")
        # the FedAvg part trains the whole model (nothing frozen) with the shared local-training fields
        fedavg_hp = FedAvgRunHparams(**{f.name: getattr(hp, f.name) for f in fields(FedAvgHparams)})
        self._local, self._fedavg = Local(hp, ctx), FedAvg(fedavg_hp, ctx)

    def init(self) -> dict:
        w = self.ctx.init_params()
        return {"params": self.ctx.broadcast(w), "global": w}

    def round(self, state: dict, t: int) -> dict:
        return {**self._local.round(state, t), "global": self._fedavg.round(state, t)["global"]}

    def personalized(self, state: dict) -> Params:
        """The local models (the α = 0 end); evaluation uses the mixture, see :meth:`evaluate`."""
        return state["params"]

    def evaluate(self, state: dict, splits: tuple[str, ...]) -> dict[str, dict[str, torch.Tensor]]:
        need = splits if self.hp.alpha is not None else tuple(dict.fromkeys(("val", *splits)))
        predict = {s: self._predictor(state, self.ctx.data(s)) for s in need}
        k = self.ctx.num_clients
        alpha = torch.full((k,), float(self.hp.alpha), device=self.ctx.device) if self.hp.alpha is not None else self.select(predict["val"])
        self.ctx.diagnose("alpha", alpha)
        return {s: self._score(predict[s](alpha), self.ctx.data(s)) for s in splits}

    def select(self, predict: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """α_i per client: the grid value with the best validation score of the mixture."""
        data, k = self.ctx.data("val"), self.ctx.num_clients
        grid = torch.tensor(self.hp.alpha_grid, dtype=torch.float32, device=self.ctx.device)
        scores = [self._score(predict(torch.full((k,), float(a), device=grid.device)), data) for a in grid]
        loss = torch.stack([s["loss"] for s in scores])  # [grid, K]
        if self.hp.select_by == "acc":
            acc = torch.stack([s["acc"] for s in scores])
            loss = loss.masked_fill(acc < acc.max(0).values, float("inf"))  # best accuracy, then lowest loss
        return grid[loss.argmin(0)]

    # --- predictions of the mixture -----------------------------------------------------------------------
    @property
    def _probabilities(self) -> bool:
        return self.ctx.federation.num_classes > 0 and self.hp.interpolate == "predictions"

    def _score(self, out: torch.Tensor, data: ClientData) -> dict[str, torch.Tensor]:
        return score(out, data, probabilities=self._probabilities)

    def _predictor(self, state: dict, data: ClientData) -> Callable[[torch.Tensor], torch.Tensor]:
        """A function of α ``[K]`` giving every client's outputs ``[K, n, out]`` on ``data`` for that α."""
        model, local, glob = self.ctx.model, state["params"], self.ctx.broadcast(state["global"])
        per_client = lambda a, v: a.to(v).reshape(-1, *([1] * (v.dim() - 1)))  # noqa: E731
        if self.hp.interpolate == "params":
            return lambda a: outputs(model, {n: local[n] + per_client(a, v) * (glob[n] - v) for n, v in local.items()},
                                     data)
        lo, go = outputs(model, local, data), outputs(model, glob, data)
        if self._probabilities:
            lo, go = lo.softmax(-1), go.softmax(-1)
        return lambda a: (1 - per_client(a, lo)) * lo + per_client(a, lo) * go
