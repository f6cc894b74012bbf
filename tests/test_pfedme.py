"""pFedMe's personalized model and the benchmark grids of pFedMe, Per-FedAvg and FedRep."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import pcl.algorithms.fedrep  # noqa: F401  (registration)
import pcl.algorithms.perfedavg  # noqa: F401
import pcl.algorithms.pfedme  # noqa: F401
from pcl.algorithms import ALGORITHMS, Context, make_hparams
from pcl.engine import LocalTrainer
from pcl.models import build_model

EXPERIMENTS = sorted((Path(__file__).parent.parent / "workflow/config/experiments").glob("benchmark_*.yaml"))


def _pfedme(fed, **hp):
    model = build_model({"name": "linear"}, fed.input_shape, fed.num_classes)
    ctx = Context(model, fed, LocalTrainer(model), seed=0)
    cls = ALGORITHMS["pfedme"]
    return cls(make_hparams(cls.Hparams, hp), ctx)


@pytest.mark.parametrize("explicit", [False, True])
def test_personalized_model_takes_the_inner_step_not_the_outer_one(digits_fed, explicit):
    """One full-batch fine-tune step from w: the pull to w has zero gradient there, so theta = w - inner_lr grad f_i(w)
    (autograd, independently), at the paper's tiny outer lr eta = 0.005; a fine-tune at eta would barely move."""
    sizes = _pfedme(digits_fed).ctx.train.n
    c = int(sizes.argmax())  # the largest client: one batch of all its data is exactly one epoch
    n = int(sizes[c])
    alg = _pfedme(digits_fed, lr=0.005, inner_lr=0.2, lam=15.0, finetune_epochs=1.0, batch_size=n,
                  **({"finetune_lr": 0.2} if explicit else {}))
    ctx = alg.ctx
    ctx.rngs.begin("init", 0)
    state = alg.init()
    ctx.rngs.begin("eval", 0)
    theta = alg.personalized(state)
    w = {k: v.clone().requires_grad_() for k, v in state["global"].items()}
    x, y = ctx.train.x[c, :n], ctx.train.y[c, :n]
    loss = torch.nn.functional.cross_entropy(torch.nn.functional.linear(x.flatten(1), w["fc.weight"], w["fc.bias"]), y)
    grads = dict(zip(w, torch.autograd.grad(loss, list(w.values()))))
    for k in w:
        torch.testing.assert_close(theta[k][c], state["global"][k] - 0.2 * grads[k], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_benchmark_grids_build_and_keep_the_pfedme_step_stable(path):
    """Each of the three methods declares 3 valid configurations; pFedMe's keep lr lam and inner_lr lam below 1,
    inside the stable range of the outer step and of the inner/fine-tune steps (both diverge at 2)."""
    algorithms = yaml.safe_load(path.read_text())["algorithms"]
    for name in ("pfedme", "perfedavg", "fedrep"):
        assert len(algorithms[name]) == 3, name
        for setting, values in algorithms[name].items():
            hp = make_hparams(ALGORITHMS[name].Hparams, values)
            if name == "pfedme":
                inner = hp.lr if hp.inner_lr is None else hp.inner_lr
                assert hp.lr * hp.lam <= 1 and inner * hp.lam <= 1, setting
