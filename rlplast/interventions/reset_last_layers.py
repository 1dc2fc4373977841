"""Reset the last linear layers of the Q-network (Nikishin et al. 2022, "The Primacy Bias in Deep RL")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from rlplast.errors import UserError
from rlplast.interventions._schedule import ScheduledIntervention
from rlplast.interventions.base import register
from rlplast.nets import copy_parameters, drop_optimizer_state, linear_layers, reinitialise

if TYPE_CHECKING:
    from rlplast.agents.dqn import PlasticDQN


@register("reset_last_layers")
@dataclass
class ResetLastLayers(ScheduledIntervention):
    """Re-initialise the last ``n_layers`` linear layers of the online Q-network in place.

    Layers are counted backwards from the output over every ``nn.Linear`` of the online network
    (features extractor included). Each chosen layer is re-drawn with its own initialiser
    (``reset_parameters``), copied into the same layer of the target network, and exactly its
    parameters lose their optimizer state (Adam moments and step). Nothing else changes: other
    layers, their optimizer state and the replay buffer are kept.

    Fires on an env-step interval and/or at task switches (see :mod:`._schedule`); logs
    ``intervention/resets`` (resets so far).

    Example:
        >>> from rlplast.interventions import build_intervention
        >>> reset = build_intervention({"name": "reset_last_layers", "every_steps": 20_000})
    """

    n_layers: int = field(
        default=1,
        metadata={
            "help": "how many linear layers to reset, counted from the output layer backwards",
            "min": 1,
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_layers < 1:
            raise UserError(f"intervention '{self.name}': n_layers must be >= 1, got {self.n_layers}")

    def setup(self, model: PlasticDQN) -> None:
        super().setup(model)
        layers = linear_layers(self.online_net)
        if self.n_layers > len(layers):
            raise UserError(
                f"intervention '{self.name}': n_layers={self.n_layers} but the Q-network has only "
                f"{len(layers)} linear layers"
            )
        self.layer_names = [name for name, _ in layers[-self.n_layers :]]
        self._layers = [module for _, module in layers[-self.n_layers :]]

    @torch.no_grad()
    def fire(self) -> None:
        """Reset the chosen layers now."""
        for layer in self._layers:
            reinitialise(layer)
            drop_optimizer_state(self.optimizer, layer.parameters())
        copy_parameters(self.online_net, self.target_net, self.layer_names)

    def log_values(self) -> dict[str, float]:
        return {"intervention/resets": float(self.fires)}
