"""FedAlt (Pillutla, Malik, Mohamed, Rabbat, Sanjabi, Xiao, ICML 2022, "Federated Learning with Partial Model
Personalization"; official code ``pfl/optim/fedalt.py``): each sampled client first updates its personal part for
tau_v steps with u = u^(k) frozen, v <- v - gamma_v grad_v f_i(u^(k), v), keeping v_i^(k+1); then its shared part for
tau_u steps from u^(k) with v_i^(k+1) frozen, u <- u - gamma_u grad_u f_i(u, v_i^(k+1)), returning u_{i,tau_u}
(server round: ``pcl.algorithms.partial``).

tau_v is ``personal_epochs`` or ``personal_steps`` (exactly one; 0 = no personal step), tau_u is ``local_epochs`` or
``local_steps``; the code uses one epoch for both and one lr (its TODO), each phase with a fresh optimizer, as here.
The code caps the personal phase at ``max_num_pfl_updates`` (1000) steps, which binds only for clients with more than
1000 batches per epoch (and leaks one step per extra epoch, its quirk 2); pcl runs the given epochs or exactly the
given steps instead. The paper's notation is [R] reconstructed (its full text was not available).
"""
from __future__ import annotations

from dataclasses import dataclass

from pcl.algorithms.base import register
from pcl.algorithms.hparams import param
from pcl.algorithms.partial import PartialHparams, PartialPersonalization


@dataclass
class FedAltHparams(PartialHparams):
    """``personal_epochs``/``personal_steps``: tau_v, as epochs or steps (set exactly one; 0 skips the personal
    step)."""

    personal_epochs: float | None = param(1.0, ge=0)
    personal_steps: int | None = param(None, ge=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.personal_epochs is None) == (self.personal_steps is None):
            raise ValueError(f"personal_epochs={self.personal_epochs!r}, personal_steps={self.personal_steps!r}: "
                             "set exactly one of them (set the other to null)")


@register("fedalt")
class FedAlt(PartialPersonalization):
    Hparams = FedAltHparams

    def local_update(self, params, clients, state):
        hp = self.hp
        if self.personal and self.personal_lr > 0 and (hp.personal_epochs or hp.personal_steps):
            params = self.ctx.local_train(params, clients, hp, trainable=self.personal, lr=self.personal_lr,
                                          local_epochs=hp.personal_epochs, local_steps=hp.personal_steps,
                                          **self.regularizer(state, clients))
        return self.ctx.local_train(params, clients, hp, trainable=self.shared)
