"""PDBO: Personalized Decentralized Bilevel Optimization with Hyper-Gradient Push (Terashita & Hara, arXiv 2210.02129
v1, 2022, "…over Stochastic and Directed Networks"; official code hitachi-rd-cv/pdbo-hgp tag v1,
``method_task/run_hyper_step.py``, ``task/hyperopt.py``). Client-wise hyperparameters λ_i, initialised at 0:

    every hyper-step (= one pcl round; ``train.rounds`` = the paper's 21 hyper-steps):
        retrain SGP for ``sgp_steps`` steps from the SAME initial weights with the current λ   (pcl.algorithms.sgp)
        v_i <- HGP (depth ``depth``) of F(λ) = (1/n) Σ_i [f_i(z_i*(λ)) + (γ/2)||λ_i||²]           (pcl.bilevel.hgp)
        Adam step on λ_i (lr ``hyper_lr``)
The round's evaluation is of the model trained with the λ of that hyper-step; pcl's ``best_val`` selection then
reports test accuracy at the hyper-step with the best mean validation accuracy, as the paper does.

Hyperparameter types (``hyper``), [R] reconstructed from the code:
* ``da``: per-class loss weights C·softmax(λ_i) in g_i (``TaskLoss(class_weights=...)``), no regularizer;
* ``mtl``: ``num_learners`` shared learners mixed with client weights softmax(λ_i) (``Mixture``), loss -log of the
  mixed probability, at test time too; γ = 1e-2;
* ``da_mtl``: both, γ = 1e-2 (learners) and 5e-4 (classes).
g_i also has (wd/2)||z||², wd = 1e-3. The outer loss f_i is the personal model's mean CE on the client's TRAINING set
(``use_train_for_outer_loss=True``, as every official config); False uses its validation set (then the validation
split informs λ as well as the selection). HGP linearises SGP at the final step size (lr × 0.01) with damping 1.
The paper's LRs are 0.05 (DA) and 0.25 (MTL, DA&MTL); set ``lr`` accordingly. See pcl.bilevel.hgp for one deliberate
deviation in the (α, β) mix (the direct term ∂F/∂λ is kept for α < 1).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import vmap
from torch.nn import functional as F

from pcl.algorithms.base import register
from pcl.algorithms.hparams import param
from pcl.algorithms.sgp import SGP, SGPHparams, edge_estimates
from pcl.bilevel import check_reverse_links, default_alpha_beta, hgp, sampled_mixing
from pcl.engine import Mixture, Objective, Params, Single, TaskLoss, score
from pcl.engine.batches import make_plan
from pcl.engine.optim import Adam
from pcl.topology import debias

HYPER_TYPES = ("da", "mtl", "da_mtl")


@dataclass
class PDBOHparams(SGPHparams):
    """pdbo-hgp v1 paper configs: 600 SGP steps, HGP depth 200, Adam lr 0.1 on λ, (α, β) = (0.9, 0.1) on stochastic
    graphs and (1, 0) on static ones (None: by the graph), damping 1, 3 learners, γ as in the module docstring
    (``gamma_classes`` None: 0 for DA, 5e-4 for DA&MTL). ``hgp_edges``: 'sampled' (messages over the current edges,
    divided by the edge probability) or 'expected' (the exact expected operator, deterministic); ``edge_estimates``:
    'empirical' (SGP's running averages, as the paper) or 'exact' (closed form from the graph's rates).
    ``steps_per_round`` is unused: a round retrains ``sgp_steps`` steps."""

    hyper: str = param("da", choices=HYPER_TYPES)
    sgp_steps: int = param(600, ge=1)
    depth: int = param(200, ge=0)
    hyper_lr: float = param(0.1, gt=0)
    num_learners: int = param(3, ge=1)
    gamma_learners: float = param(1e-2, ge=0)
    gamma_classes: float | None = param(None, ge=0)
    alpha: float | None = param(None, ge=0, le=1)
    beta: float | None = param(None, ge=0, le=1)
    damping: float = param(1.0, ge=0, le=1)
    hgp_edges: str = param("sampled", choices=("sampled", "expected"))
    edge_estimates: str = param("empirical", choices=("empirical", "exact"))
    use_train_for_outer_loss: bool = param(True)


@register("pdbo")
class PDBO(SGP):
    Hparams = PDBOHparams

    @property
    def mixture(self) -> bool:
        return self.hp.hyper in ("mtl", "da_mtl")

    @property
    def class_weighted(self) -> bool:
        return self.hp.hyper in ("da", "da_mtl")

    @property
    def objective(self) -> Objective:
        return Objective(predict=Mixture("mixture") if self.mixture else Single(),
                         loss=TaskLoss("class_weights" if self.class_weighted else None))

    def extras(self, lam: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """λ -> the objective's per-client tensors (works stacked [K, .] and for one client [.])."""
        out = {}
        if "learners" in lam:
            out["mixture"] = torch.softmax(lam["learners"], -1)
        if "classes" in lam:
            out["class_weights"] = lam["classes"].shape[-1] * torch.softmax(lam["classes"], -1)
        return out

    def regularizer(self, lam: dict[str, torch.Tensor]) -> torch.Tensor:
        gamma_c = self.hp.gamma_classes if self.hp.gamma_classes is not None else (
            5e-4 if self.hp.hyper == "da_mtl" else 0.0)
        gammas = {"learners": self.hp.gamma_learners, "classes": gamma_c}
        return sum(0.5 * gammas[n] * (v ** 2).sum() for n, v in lam.items())

    def init(self) -> dict:
        k, num_classes = self.ctx.num_clients, self.ctx.federation.num_classes
        if num_classes < 1:
            raise ValueError("pdbo needs a classification task (class weights, mixture of class probabilities)")
        x0 = self.ctx.init_params(independent=self.hp.num_learners if self.mixture else 0)
        dtype, lam = next(iter(x0.values())).dtype, {}
        if self.mixture:
            lam["learners"] = torch.zeros(k, self.hp.num_learners, dtype=dtype)
        if self.class_weighted:
            lam["classes"] = torch.zeros(k, num_classes, dtype=dtype)
        state = self.fresh(self.ctx.broadcast(x0))
        return {**state, "init": x0, "lam": lam, "lam_used": lam, "adam": Adam().init(lam)}

    # --- the two halves of a hyper-step -------------------------------------------------------------------------
    def inner_loss(self, z, lam, batch):
        xb, yb = batch
        wd = 0.5 * self.hp.weight_decay * sum((p ** 2).sum() for p in z.values())
        return self.objective.value(self.ctx.model, z, {}, xb, yb, self.extras(lam)) + wd

    def outer_loss(self, z, lam, data):
        xs, ys, mask = data
        out = self.objective.predict(self.ctx.model, z, xs, self.extras(lam))
        ce = F.cross_entropy(out, ys, reduction="none")
        return (ce * mask).sum() / mask.sum() + self.regularizer(lam)

    def hypergradient(self, state: dict, lam: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        hp, topo, train = self.hp, self.topology, self.ctx.train
        if hp.edge_estimates == "exact":
            pbar, rates = topo.expected_push_sum(), topo.expected()
        else:
            pbar, rates = edge_estimates(state)
        check_reverse_links(pbar, rates)
        outer = train if hp.use_train_for_outer_loss else self.ctx.data("val")
        plan = make_plan(train.n.cpu(), hp.batch_size, steps=max(hp.depth, 1), generator=self.ctx.rng("hgp_batches"))
        rows = torch.arange(self.ctx.num_clients)[:, None]

        def batches(m):
            idx = plan.index[m].to(train.x.device)
            return train.x[rows, idx], train.y[rows, idx]

        if hp.hgp_edges == "expected":
            mixing = lambda m: pbar  # noqa: E731
        else:
            mixing = lambda m: sampled_mixing(topo, self.ctx.rng("hgp_graph"), pbar, rates)  # noqa: E731
        alpha, beta = default_alpha_beta(topo.graph)
        alpha = hp.alpha if hp.alpha is not None else alpha
        beta = hp.beta if hp.beta is not None else beta
        return hgp(self.inner_loss, self.outer_loss, state["x"], state["w"], lam,
                   outer_data=(outer.x, outer.y, outer.mask().to(outer.x.dtype)), batches=batches, mixing=mixing,
                   depth=hp.depth, lr=hp.lr_at(hp.sgp_steps - 1), damping=hp.damping, alpha=alpha, beta=beta)

    def round(self, state: dict, t: int):
        lam = state["lam"]
        trained = self.sgp(self.fresh(self.ctx.broadcast(state["init"])), self.hp.sgp_steps,
                           objective=self.objective, extras=self.extras(lam))
        v = self.hypergradient(trained, lam)
        lam_new, adam = Adam().update(lam, v, state["adam"], {n: self.hp.hyper_lr for n in lam}, t + 1)
        norm = torch.sqrt(sum((g.reshape(len(g), -1) ** 2).sum(1) for g in v.values()))
        new = {**trained, "init": state["init"], "lam": lam_new, "lam_used": lam, "adam": adam}
        return new, {**self.diagnostics(trained), "hypergrad_norm": norm}

    # --- evaluation: each client's personal model, mixed with its own weights where λ has learner weights --------
    def personalized(self, state: dict) -> Params:
        return debias(state["x"], state["w"])

    def evaluate(self, state: dict, splits: tuple[str, ...]) -> dict[str, dict[str, torch.Tensor]]:
        z, extras, model = self.personalized(state), self.extras(state["lam_used"]), self.ctx.model
        predict = vmap(lambda p, e, x: self.objective.predict(model, p, x, e))
        out = {}
        for s in splits:
            data = self.ctx.data(s)
            with torch.no_grad():
                pred = predict(z, extras, data.x)
            out[s] = score(pred.exp(), data, probabilities=True) if self.mixture else score(pred, data)
        return out
