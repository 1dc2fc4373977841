"""L2-init (Kumar et al. 2023, "Maintaining Plasticity via Regenerative Regularization")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from rlplast.errors import UserError
from rlplast.interventions.base import Intervention, register

if TYPE_CHECKING:
    from stable_baselines3.common.type_aliases import ReplayBufferSamples

    from rlplast.agents.dqn import PlasticDQN


@register("l2_init")
@dataclass
class L2Init(Intervention):
    """Pull the online parameters towards their initial values: ``coef · Σ ‖θ − θ₀‖²``.

    ``θ₀`` is a snapshot of the online Q-network's parameters taken at setup (that is, at
    initialisation) and is stored in :meth:`state_dict`, so a resumed run keeps the same anchor.
    The term is added to the TD loss on every gradient step; it differentiates through
    :meth:`parameters_for_loss` (in a population: slices of the stacked parameters). Logs
    ``train/l2_init_loss`` (mean of the term since the last log) and ``train/l2_init_distance``
    (‖θ − θ₀‖ at the last update).
    """

    coef: float = field(
        default=1e-4,
        metadata={"help": "λ, the weight of the penalty (the literature uses 1e-2 .. 1e-5)", "min": 0.0},
    )

    def __post_init__(self) -> None:
        if self.coef < 0.0:
            raise UserError(f"intervention '{self.name}': coef must be >= 0, got {self.coef}")
        self.theta0: list[torch.Tensor] = []
        self._loss_sum: torch.Tensor | float = 0.0
        self._last_sq_dist: torch.Tensor | float = 0.0
        self._count = 0

    def setup(self, model: PlasticDQN) -> None:
        super().setup(model)
        self._params = list(self.online_net.parameters())
        self.theta0 = [p.detach().clone() for p in self._params]

    def loss(
        self, batch: ReplayBufferSamples, features: torch.Tensor, q_values: torch.Tensor
    ) -> torch.Tensor | None:
        params = self.parameters_for_loss()
        sq_dist = torch.stack([(p - p0).pow(2).sum() for p, p0 in zip(params, self.theta0, strict=True)])
        sq_dist = sq_dist.sum()
        term = self.coef * sq_dist
        self._loss_sum = self._loss_sum + term.detach()
        self._last_sq_dist = sq_dist.detach()
        self._count += 1
        return term

    def log_values(self) -> dict[str, float]:
        if self._count == 0:
            return {}
        out = {
            "train/l2_init_loss": float(self._loss_sum) / self._count,
            "train/l2_init_distance": float(self._last_sq_dist) ** 0.5,
        }
        self._reset_stats()
        return out

    def _reset_stats(self) -> None:
        self._loss_sum = 0.0
        self._last_sq_dist = 0.0
        self._count = 0

    def state_dict(self) -> dict[str, Any]:
        return {"theta0": [t.clone() for t in self.theta0]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        theta0 = state["theta0"]
        if self.theta0 and len(theta0) != len(self.theta0):
            raise ValueError(f"l2_init state has {len(theta0)} tensors, the network has {len(self.theta0)}")
        device = self._params[0].device if getattr(self, "_params", None) else None
        self.theta0 = [t.detach().clone().to(device) for t in theta0]
