"""A fresh agent at every task switch: the "from scratch" baseline of continual-learning protocols."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from rlplast.interventions._schedule import ScheduledIntervention
from rlplast.interventions.base import register
from rlplast.nets import copy_parameters, reinitialise


@register("from_scratch")
@dataclass
class FromScratch(ScheduledIntervention):
    """Start a fresh agent: new network, empty optimizer and replay buffer, schedules from the start.

    When it fires (by default at every task switch), everything a new agent would not have is
    thrown away, so each task is learned as the first one was, for the same budget:

    * every module of the online network that has ``reset_parameters`` is re-drawn in place
      (:func:`rlplast.nets.reinitialise`, global torch RNG) and copied into the target network;
    * the optimizer state is cleared (Adam's moments and step counts of every parameter);
    * the replay buffer is emptied (:meth:`~rlplast.agents.PlasticDQN.clear_replay`);
    * the exploration schedule and the warm-up restart at this step
      (:meth:`~rlplast.agents.PlasticDQN.restart_schedules`): ε starts again from
      ``exploration_initial_eps`` and decays over ``exploration_fraction`` × ``train.total_steps``
      steps, and the agent acts uniformly at random, without updates, for ``learning_starts``
      steps, as at the start of the run.

    What is not a new agent's: the env (the running episode goes on, in the new task) and the
    target network's update period, which keeps counting. Unlike ``full_reset`` (the "reset
    oracle", which keeps the replay buffer and the exploration schedule), nothing learned on an
    earlier task reaches the next one. ``configs/methods/from_scratch.yaml`` uses it as the
    reference of forward transfer and of normalised scores in ``rlplast report``.

    Fires on an env-step interval and/or at task switches (see :mod:`._schedule`); logs
    ``intervention/fresh_starts``.
    """

    # A population member's view has no replay buffer or schedules of its own to restart.
    per_member: ClassVar[bool] = False
    per_member_reason: ClassVar[str] = (
        "it empties the agent's replay buffer and restarts its exploration schedule, which a "
        "population shares between members"
    )

    @torch.no_grad()
    def fire(self) -> None:
        """Start the fresh agent now."""
        reinitialise(self.online_net)
        copy_parameters(self.online_net, self.target_net)
        self.optimizer.state.clear()
        self.model.clear_replay()
        self.model.restart_schedules()

    def log_values(self) -> dict[str, float]:
        return {"intervention/fresh_starts": float(self.fires)}
