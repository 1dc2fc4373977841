"""Reset the whole Q-network: re-initialise every module, keep the replay buffer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from rlplast.interventions._nets import reinitialise, resettable_modules
from rlplast.interventions._schedule import ScheduledIntervention
from rlplast.interventions.base import register

if TYPE_CHECKING:
    from rlplast.agents.dqn import PlasticDQN


@register("full_reset")
@dataclass
class FullReset(ScheduledIntervention):
    """Re-initialise the online Q-network in place, copy it into the target, clear the optimizer.

    Every module of the online network that has ``reset_parameters`` is re-drawn in place (global
    torch RNG), the whole online network is copied into the target network, and the optimizer
    state is cleared (Adam moments and steps of every parameter). The replay buffer is kept, so the
    agent relearns from its stored experience.

    Fires on an env-step interval and/or at task switches (see :mod:`._schedule`); logs
    ``intervention/full_resets``.
    """

    def setup(self, model: PlasticDQN) -> None:
        super().setup(model)
        self._modules = [m for _, m in resettable_modules(model.policy.q_net)]

    @torch.no_grad()
    def fire(self) -> None:
        """Reset the network now."""
        policy = self.model.policy
        for module in self._modules:
            reinitialise(module)
        for p_dst, p_src in zip(policy.q_net_target.parameters(), policy.q_net.parameters(), strict=True):
            p_dst.copy_(p_src)
        for b_dst, b_src in zip(policy.q_net_target.buffers(), policy.q_net.buffers(), strict=True):
            b_dst.copy_(b_src)
        policy.optimizer.state.clear()

    def log_values(self) -> dict[str, float]:
        return {"intervention/full_resets": float(self.fires)}
