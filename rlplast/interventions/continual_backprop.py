"""Continual backpropagation (Dohare, Hernandez-Garcia, Lan, Rahman, Mahmood, Sutton, Nature 2024)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from rlplast.errors import UserError
from rlplast.fields import config_field
from rlplast.interventions.base import Intervention, register
from rlplast.nets import FreshInit, hidden_pairs, zero_adam_moments

if TYPE_CHECKING:
    from stable_baselines3.common.type_aliases import ReplayBufferSamples

    from rlplast.agents.dqn import PlasticDQN


@register("continual_backprop")
@dataclass
class ContinualBackprop(Intervention):
    """Replace a small fraction of mature, low-utility hidden units after every update.

    For every hidden unit ``i`` of a hidden layer ``l`` (an ``nn.Linear`` whose outputs feed the
    next ``nn.Linear`` unit for unit, as in ReDo) the paper's *contribution utility* is tracked
    after every optimizer step:

        ``u_l[i] ← η·u_l[i] + (1 − η)·mean_batch|h_l,i| · Σ_k |w_l,i,k|``

    with ``h_l,i`` the unit's post-activation output on the update's training batch and
    ``w_l,i,k`` its outgoing weights (column ``i`` of the next layer, after the step). Every unit
    ages by one per update; units older than ``maturity_threshold`` are eligible. Each layer
    accumulates ``c_l ← c_l + ρ·n_eligible`` and replaces ``⌊c_l⌋`` eligible units of smallest
    utility (``c_l`` keeps the fraction), as in the paper's Algorithm 1: the unit's incoming
    weights are drawn from the layer's own initialiser (a fresh draw of the layer,
    ``reset_parameters``, inside :meth:`random_stream`), its bias is set to 0 (the authors' code),
    its outgoing weights to 0 (so the network's function is unchanged), and its utility and age
    to 0. The Adam moments (``exp_avg``, ``exp_avg_sq``) of exactly those rows, bias entries and
    columns are zeroed. Torch's Adam keeps one step count per tensor, so the steps are kept (the
    authors' ``AdamGnT`` restarts a step count per entry): a fresh entry's first updates use the
    tensor's bias correction, i.e. they are up to ``(1 − β₁)/√(1 − β₂)`` (≈ 3.2 for Adam's
    defaults) times Adam's usual first step. Not done: the authors' ``gnt.py`` bias-corrected
    utility and next-layer bias compensation (not part of the Nature paper's Algorithm 1).

    The activations come from a no-gradient forward pass of the online network on the update's
    training batch (``batch.observations``) inside :meth:`loss`, before the optimizer step — the
    pass the paper's utility uses, recomputed so that the same code runs on a population member
    (whose training pass is the stacked one); it adds one forward pass per update. The target
    network follows at its next sync. Replacement counts are decided on the host from the ages
    (no device synchronisation unless a unit is replaced).

    Logs ``intervention/cbp_units_replaced`` (units replaced so far).

    Example:
        >>> from rlplast.interventions import build_intervention
        >>> cbp = build_intervention({"name": "continual_backprop", "replacement_rate": 1e-4})
    """

    replacement_rate: float = config_field(
        1e-4, "ρ, units replaced per update as a fraction of a layer's mature units", min=0.0, max=1.0
    )
    maturity_threshold: int = config_field(
        10_000, "m, updates a unit must age before it can be replaced", min=0
    )
    decay_rate: float = config_field(0.99, "η, the decay of the running utility, in [0, 1)", min=0.0)

    def __post_init__(self) -> None:
        if not 0.0 <= self.replacement_rate <= 1.0:
            raise UserError(
                f"intervention '{self.name}': replacement_rate must be in [0, 1], got {self.replacement_rate}"
            )
        if self.maturity_threshold < 0:
            raise UserError(
                f"intervention '{self.name}': maturity_threshold must be >= 0, got {self.maturity_threshold}"
            )
        if not 0.0 <= self.decay_rate < 1.0:
            raise UserError(
                f"intervention '{self.name}': decay_rate must be in [0, 1), got {self.decay_rate}"
            )
        self.units_replaced = 0
        self.utility: list[Tensor] = []
        self.ages: list[np.ndarray] = []
        self.pending: list[float] = []
        #: ``mean_batch |h|`` of each hidden layer at the last :meth:`loss` call (None before).
        self.mean_activation: list[Tensor] | None = None

    def setup(self, model: PlasticDQN) -> None:
        super().setup(model)
        self._pairs = hidden_pairs(self.online_net)
        if not self._pairs:
            raise UserError(
                f"intervention '{self.name}': the Q-network has no hidden linear layer whose units feed "
                "the next linear layer one to one"
            )
        self._fresh = [FreshInit(layer) for layer, _ in self._pairs]
        device = self._pairs[0][0].weight.device
        self.utility = [torch.zeros(layer.out_features, device=device) for layer, _ in self._pairs]
        self.ages = [np.zeros(layer.out_features, dtype=np.int64) for layer, _ in self._pairs]
        self.pending = [0.0] * len(self._pairs)

    # ------------------------------------------------------------------ hooks
    @torch.no_grad()
    def loss(self, batch: ReplayBufferSamples, features: Tensor, q_values: Tensor) -> Tensor | None:
        """Record the hidden units' mean ``|h|`` on the training batch; adds no loss term."""
        captured: dict[int, Tensor] = {}
        handles = [
            nxt.register_forward_pre_hook(lambda _m, inp, i=i: captured.__setitem__(i, inp[0]))
            for i, (_, nxt) in enumerate(self._pairs)
        ]
        try:
            self.online_net(batch.observations)
        finally:
            for handle in handles:
                handle.remove()
        means = []
        for i, (layer, _) in enumerate(self._pairs):
            h = captured.get(i)
            if h is None or h.dim() != 2 or h.shape[1] != layer.out_features:
                raise RuntimeError(
                    f"intervention '{self.name}': hidden layer {i} has no (batch, {layer.out_features}) "
                    "activation in the online network's forward pass"
                )
            means.append(h.abs().mean(0))
        self.mean_activation = means
        return None

    @torch.no_grad()
    def after_update(self, n_updates: int, num_timesteps: int) -> None:
        means = self.mean_activation
        if means is None:
            return
        eta = self.decay_rate
        for i, (_, nxt) in enumerate(self._pairs):
            contribution = means[i] * nxt.weight.abs().sum(0)
            self.utility[i].mul_(eta).add_(contribution, alpha=1.0 - eta)
            ages = self.ages[i]
            ages += 1
            eligible = np.flatnonzero(ages > self.maturity_threshold)
            if not len(eligible):
                continue
            self.pending[i] += self.replacement_rate * len(eligible)
            n = int(self.pending[i])
            if n == 0:
                continue
            self.pending[i] -= n
            self._replace(i, eligible, min(n, len(eligible)))

    def _replace(self, i: int, eligible: np.ndarray, n: int) -> None:
        """Replace the ``n`` eligible units of layer ``i`` with the smallest utility."""
        layer, nxt = self._pairs[i]
        utility = self.utility[i]
        candidates = torch.as_tensor(eligible, device=utility.device)
        chosen = candidates[torch.topk(-utility[candidates], n).indices]
        units = chosen.cpu().numpy()
        mask = torch.zeros_like(utility, dtype=torch.bool)
        mask[chosen] = True
        with self.random_stream():  # a population member draws from its own stream
            new = self._fresh[i].draw()
        rows = mask[:, None]
        state = self.optimizer.state
        layer.weight.copy_(torch.where(rows, new["weight"], layer.weight))
        zero_adam_moments(state, layer.weight, rows)
        if layer.bias is not None:
            layer.bias.masked_fill_(mask, 0.0)
            zero_adam_moments(state, layer.bias, mask)
        nxt.weight.masked_fill_(mask[None, :], 0.0)
        zero_adam_moments(state, nxt.weight, mask[None, :])
        utility.masked_fill_(mask, 0.0)
        self.ages[i][units] = 0
        self.units_replaced += n

    # ------------------------------------------------------------------ logging and state
    def log_values(self) -> dict[str, float]:
        return {"intervention/cbp_units_replaced": float(self.units_replaced)}

    def state_dict(self) -> dict[str, Any]:
        return {
            "units_replaced": self.units_replaced,
            "utility": [u.clone() for u in self.utility],
            "ages": [torch.from_numpy(a.copy()) for a in self.ages],
            "pending": list(self.pending),
            "mean_activation": None
            if self.mean_activation is None
            else [m.clone() for m in self.mean_activation],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.utility and len(state["utility"]) != len(self.utility):
            raise ValueError(
                f"continual_backprop state has {len(state['utility'])} layers, the network {len(self.utility)}"
            )
        device = self.utility[0].device if self.utility else None
        self.units_replaced = int(state["units_replaced"])
        self.utility = [u.detach().clone().to(device) for u in state["utility"]]
        self.ages = [np.asarray(a, dtype=np.int64).copy() for a in state["ages"]]
        self.pending = [float(p) for p in state["pending"]]
        means = state["mean_activation"]
        self.mean_activation = None if means is None else [m.detach().clone().to(device) for m in means]
