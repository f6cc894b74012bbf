"""FedSim (Pillutla, Malik, Mohamed, Rabbat, Sanjabi, Xiao, ICML 2022, "Federated Learning with Partial Model
Personalization"; official code ``pfl/optim/fedsim.py``): each sampled client updates its shared part u and personal
part v simultaneously, (u, v) <- (u, v) - (gamma_u grad_u f_i, gamma_v grad_v f_i), for the local epochs, from
(u^(k), v_i^(k)); it keeps v_i^(k+1) = v_{i,tau} and returns u_{i,tau} (server round: ``pcl.algorithms.partial``).

One optimizer over all parameters, as the code; gamma_v (``personal_lr``) may differ from gamma_u (``lr``), as the
paper's update allows (the code has one lr; its TODO). The code also stops after ``max_num_pfl_updates`` (1000)
steps, which binds only for clients with more than 1000 batches per epoch; pcl runs ``local_epochs`` or exactly
``local_steps`` (no cap). The paper's notation is [R] reconstructed (its full text was not available).
"""
from __future__ import annotations

from pcl.algorithms.base import register
from pcl.algorithms.partial import PartialPersonalization


@register("fedsim")
class FedSim(PartialPersonalization):
    def local_update(self, params, clients, state):
        return self.ctx.local_train(params, clients, self.hp, group_lr=self.group_lr(),
                                    **self.regularizer(state, clients))
