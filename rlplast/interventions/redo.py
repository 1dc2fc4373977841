"""ReDo: recycle dormant neurons (Sokar, Agarwal, Castro, Evci 2023, "The Dormant Neuron Phenomenon")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from rlplast.errors import UserError
from rlplast.interventions.base import Intervention, register
from rlplast.nets import FreshInit, hidden_pairs, zero_adam_moments

if TYPE_CHECKING:
    from rlplast.agents.dqn import PlasticDQN


@register("redo")
@dataclass
class ReDo(Intervention):
    """Every ``every_updates`` updates, re-initialise the τ-dormant units of the hidden layers.

    A hidden unit ``i`` of a layer has score ``s_i = E|h_i| / mean_k E|h_k|`` (``h`` its
    post-activation output, the expectation over ``batch_size`` observations drawn from the replay
    buffer) and is dormant when ``s_i ≤ tau``. For each dormant unit: its incoming weights and bias
    are set from a fresh initialisation of that layer (global torch RNG), its outgoing weights (the
    matching column of the next linear layer) are zeroed, and the Adam moments (``exp_avg``,
    ``exp_avg_sq``) of exactly those rows, bias entries and columns are zeroed; Adam's step count
    and everything else are kept. The target network is left to its own sync schedule.

    Hidden layers are the ``nn.Linear`` layers of the online network whose outputs feed the next
    ``nn.Linear`` unit for unit (an MLP's hidden layers); convolutions are not recycled.
    Observations are drawn with the intervention's own ``numpy`` generator (seeded by ``seed``)
    through the model's public replay accessors (``replay_size()``, ``replay_states()``), so the
    global NumPy RNG — and thus the replay sampling of training — is untouched, and a population
    member samples its own replay the same way.

    Logs ``intervention/redo_dormant_fraction`` (over all hidden units, at the latest check),
    ``intervention/redo_units_reset`` (units recycled so far) and ``intervention/redo_checks``.
    """

    every_updates: int = field(default=1000, metadata={"help": "gradient updates between checks", "min": 1})
    tau: float = field(
        default=0.025, metadata={"help": "dormancy threshold τ on the normalised score", "min": 0.0}
    )
    batch_size: int = field(
        default=256, metadata={"help": "replay observations used to score the units", "min": 1}
    )
    seed: int = field(
        default=0, metadata={"help": "seed of the generator that picks those observations", "min": 0}
    )

    def __post_init__(self) -> None:
        if self.every_updates < 1:
            raise UserError(
                f"intervention '{self.name}': every_updates must be >= 1, got {self.every_updates}"
            )
        if self.tau < 0.0:
            raise UserError(f"intervention '{self.name}': tau must be >= 0, got {self.tau}")
        if self.batch_size < 1:
            raise UserError(f"intervention '{self.name}': batch_size must be >= 1, got {self.batch_size}")
        if self.seed < 0:
            raise UserError(f"intervention '{self.name}': seed must be >= 0, got {self.seed}")
        self.rng = np.random.default_rng(self.seed)
        self.checks = 0
        self._units_reset: torch.Tensor | int = 0
        self._dormant_fraction: torch.Tensor | float = float("nan")

    def setup(self, model: PlasticDQN) -> None:
        super().setup(model)
        self.q_net = self.online_net
        # (layer, next layer) pairs whose next layer reads the layer's units one to one (checked
        # again on every forward pass, from the shape of the next layer's input).
        self._pairs = hidden_pairs(self.q_net)
        if not self._pairs:
            raise UserError(
                f"intervention '{self.name}': the Q-network has no hidden linear layer whose units feed "
                "the next linear layer one to one (e.g. agent.activation: crelu), so no unit can be recycled"
            )
        self._fresh = [FreshInit(layer) for layer, _ in self._pairs]

    # ------------------------------------------------------------------ hooks
    def after_update(self, n_updates: int, num_timesteps: int) -> None:
        if n_updates % self.every_updates == 0:
            obs = self.sample_observations()
            if obs is not None:
                self.recycle(obs)

    def sample_observations(self) -> Any:
        """``batch_size`` observations from the replay buffer (own RNG), as tensors; None if empty.

        Positions and envs are drawn with :attr:`rng`; the observations come through the model's
        ``replay_states`` (normalised as the network sees them in training) on the model's device.
        """
        model = self.model
        upper = model.replay_size()
        if upper == 0:
            return None
        idx = self.rng.integers(0, upper, size=self.batch_size)
        env_idx = self.rng.integers(0, model.n_envs, size=self.batch_size)
        obs, _ = model.replay_states(idx, env_idx, normalize=True)
        return obs

    # ------------------------------------------------------------------ the method
    def hidden_activations(self, obs: Any) -> list[torch.Tensor | None]:
        """Post-activation outputs of each hidden layer (None where not one-to-one with units)."""
        captured: dict[int, torch.Tensor] = {}
        handles = []
        for i, (_, nxt) in enumerate(self._pairs):
            handles.append(
                nxt.register_forward_pre_hook(lambda _m, inp, i=i: captured.__setitem__(i, inp[0]))
            )
        try:
            with torch.no_grad():
                self.q_net(obs)
        finally:
            for handle in handles:
                handle.remove()
        out: list[torch.Tensor | None] = []
        for i, (layer, _) in enumerate(self._pairs):
            h = captured.get(i)
            ok = h is not None and h.dim() == 2 and h.shape[1] == layer.out_features
            out.append(h if ok else None)
        return out

    def dormant_masks(self, obs: Any) -> list[torch.Tensor | None]:
        """τ-dormant mask of each hidden layer's units (None for layers that are not recycled)."""
        masks: list[torch.Tensor | None] = []
        for h in self.hidden_activations(obs):
            if h is None:
                masks.append(None)
                continue
            mean_abs = h.abs().mean(0)
            score = mean_abs / (mean_abs.mean() + 1e-9)
            masks.append(score <= self.tau)
        return masks

    @torch.no_grad()
    def recycle(self, obs: Any) -> list[torch.Tensor | None]:
        """Score the units on ``obs`` and recycle the dormant ones; returns the masks."""
        masks = self.dormant_masks(obs)
        state = self.optimizer.state
        n_dormant: torch.Tensor | int = 0
        n_units = 0
        # Incoming weights first, for every layer; then outgoing weights, so that a dormant unit's
        # outgoing weights are zero even when the next layer's dormant rows were re-drawn.
        for (layer, _), fresh, mask in zip(self._pairs, self._fresh, masks, strict=True):
            if mask is None:
                continue
            with self.random_stream():  # a population member draws from its own stream
                new = fresh.draw()
            rows = mask[:, None]
            layer.weight.copy_(torch.where(rows, new["weight"], layer.weight))
            zero_adam_moments(state, layer.weight, rows)
            if layer.bias is not None:
                layer.bias.copy_(torch.where(mask, new["bias"], layer.bias))
                zero_adam_moments(state, layer.bias, mask)
        for (_, nxt), mask in zip(self._pairs, masks, strict=True):
            if mask is None:
                continue
            cols = mask[None, :]
            nxt.weight.masked_fill_(cols, 0.0)
            zero_adam_moments(state, nxt.weight, cols)
            n_dormant = n_dormant + mask.sum()
            n_units += mask.numel()
        self.checks += 1
        if n_units:
            self._units_reset = self._units_reset + n_dormant
            self._dormant_fraction = n_dormant / n_units
        return masks

    # ------------------------------------------------------------------ logging and state
    def log_values(self) -> dict[str, float]:
        return {
            "intervention/redo_dormant_fraction": float(self._dormant_fraction),
            "intervention/redo_units_reset": float(self._units_reset),
            "intervention/redo_checks": float(self.checks),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "rng": self.rng.bit_generator.state,
            "checks": self.checks,
            "units_reset": int(self._units_reset),
            "dormant_fraction": float(self._dormant_fraction),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.checks = int(state["checks"])
        self._units_reset = int(state["units_reset"])
        self._dormant_fraction = float(state["dormant_fraction"])
