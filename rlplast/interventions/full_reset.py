"""Reset the whole Q-network: re-initialise every module, keep the replay buffer."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlplast.interventions._schedule import ScheduledIntervention
from rlplast.interventions.base import register
from rlplast.nets import copy_parameters, reinitialise


@register("full_reset")
@dataclass
class FullReset(ScheduledIntervention):
    """Re-initialise the online Q-network in place, copy it into the target, clear the optimizer.

    Every module of the online network that has ``reset_parameters`` is re-drawn in place
    (:func:`rlplast.nets.reinitialise`, global torch RNG), the whole online network is copied into
    the target network, and the optimizer state is cleared (Adam moments and steps of every
    parameter). The replay buffer is kept, so the agent relearns from its stored experience.

    Fires on an env-step interval and/or at task switches (see :mod:`._schedule`); logs
    ``intervention/full_resets``.
    """

    @torch.no_grad()
    def fire(self) -> None:
        """Reset the network now."""
        reinitialise(self.online_net)
        copy_parameters(self.online_net, self.target_net)
        self.optimizer.state.clear()

    def log_values(self) -> dict[str, float]:
        return {"intervention/full_resets": float(self.fires)}
