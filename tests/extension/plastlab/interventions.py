"""A head-noise intervention (docs/interventions.md), written with the public helpers only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rlplast.fields import config_field
from rlplast.interventions import Intervention, register


@register("plastlab_head_noise")
@dataclass
class HeadNoise(Intervention):
    """Every ``every_updates`` updates add N(0, std²) noise to the output layer's weights."""

    std: float = config_field(1e-3, "standard deviation of the noise", min=0.0)
    every_updates: int = config_field(1000, "gradient updates between injections", min=1)
    sync_target: bool = config_field(True, "copy the noisy layer into the target network")

    def __post_init__(self) -> None:
        self.injections = 0
        self.noise_norm = 0.0

    @torch.no_grad()
    def after_update(self, n_updates: int, num_timesteps: int) -> None:
        if n_updates % self.every_updates:
            return
        weight = self.last_layer.weight
        noise = torch.randn_like(weight) * self.std
        weight.add_(noise)  # in place: the optimizer keeps its tensors
        if self.sync_target:
            self.target_last_layer.weight.copy_(weight)
        assert self.optimizer.param_groups  # the optimizer is reachable too
        self.injections += 1
        self.noise_norm = float(noise.norm())

    def log_values(self) -> dict[str, float]:
        return {
            "intervention/head_noise_injections": float(self.injections),
            "intervention/head_noise_norm": self.noise_norm,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"injections": self.injections}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.injections = int(state["injections"])
