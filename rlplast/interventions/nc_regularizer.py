"""The paper's neural-collapse regularizer: push the batch's penultimate features *away* from NC1 collapse."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from rlplast.errors import UserError
from rlplast.interventions.base import Intervention, register
from rlplast.metrics.collapse import nc1, nc1_quotient

if TYPE_CHECKING:
    from stable_baselines3.common.type_aliases import ReplayBufferSamples

    from rlplast.agents.dqn import PlasticDQN


class _FiniteGrad(torch.autograd.Function):
    """Identity whose backward replaces non-finite gradient entries by 0 (a guard, no host sync)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)


@register("nc_regularizer")
@dataclass
class NCRegularizer(Intervention):
    """``L = L_TD − coef · min(NC1_batch(h, a), cap)`` (Bonifazi et al. 2024, adapted to DQN).

    ``h`` are the penultimate features of the training batch (the input of the last linear layer,
    from the same forward pass as the TD loss), the classes are the *taken* actions stored in the
    batch and ``C`` is the number of actions. Subtracting NC1 rewards within-class spread relative
    to between-class separation, i.e. it pushes against collapse; ``cap`` bounds the reward (and
    gives zero gradient above it). Gradients flow through the pseudo-inverse of ``Σ_B``
    (``variant=pinv``) or through ``Tr Σ_W / Tr Σ_B`` (``variant=quotient``, smoother and cheaper).

    A batch in which fewer than two actions have ``n_min`` samples (or whose between-class scatter is
    zero) has no defined NC1: it contributes exactly zero to the loss and to the gradient, and is
    counted in ``train/nc_reg_skipped``. This is decided on the device, without a host sync.

    Logs (means over the updates since the last log): ``train/nc_reg_loss`` (the added term,
    skipped batches counting as 0), ``train/nc1_batch`` (batch NC1 over non-skipped batches, NaN if
    none) and ``train/nc_reg_skipped`` (number of skipped batches).
    """

    coef: float = 0.05
    """λ, weight of the NC1 reward (>= 0)."""
    cap: float = 200.0
    """NC1 values above ``cap`` are clipped (> 0)."""
    variant: str = "pinv"
    """pinv: Tr(Σ_W Σ_B^†)/C; quotient: Tr Σ_W / Tr Σ_B."""
    n_min: int = 2
    """Minimum samples of an action in the batch for it to count as a class (>= 1)."""

    VARIANTS: ClassVar[dict[str, Any]] = {"pinv": nc1, "quotient": nc1_quotient}

    def __post_init__(self) -> None:
        if self.coef < 0.0:
            raise UserError(f"intervention '{self.name}': coef must be >= 0, got {self.coef}")
        if self.cap <= 0.0:
            raise UserError(f"intervention '{self.name}': cap must be > 0, got {self.cap}")
        if self.variant not in self.VARIANTS:
            raise UserError(
                f"intervention '{self.name}': variant must be one of {', '.join(self.VARIANTS)}, "
                f"got {self.variant!r}"
            )
        if self.n_min < 1:
            raise UserError(f"intervention '{self.name}': n_min must be >= 1, got {self.n_min}")
        self.num_classes = 0
        self.skipped_total = 0
        # Sums start as Python zeros so they take the device of the first tensor added (no sync).
        self._term_sum: torch.Tensor | float = 0.0
        self._nc1_sum: torch.Tensor | float = 0.0
        self._valid_count: torch.Tensor | int = 0
        self._count = 0

    def setup(self, model: PlasticDQN) -> None:
        super().setup(model)
        self.num_classes = int(model.action_space.n)  # type: ignore[attr-defined]

    def term(self, features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        """The loss term ``−coef · min(NC1, cap)`` (0 where NC1 is undefined), features' dtype.

        Args:
            features: ``(N, D)`` penultimate features.
            labels: ``(N,)`` integer classes.
            num_classes: number of classes.

        Returns:
            A 0-dim tensor; also records the batch NC1 for logging.
        """
        value = self.VARIANTS[self.variant](
            _FiniteGrad.apply(features), labels.reshape(-1).long(), num_classes, self.n_min
        )
        valid = torch.isfinite(value)
        safe = torch.where(valid, value, torch.zeros_like(value))
        term = (-self.coef * torch.clamp(safe, max=self.cap)).to(features.dtype)
        self._term_sum = self._term_sum + term.detach()
        self._nc1_sum = self._nc1_sum + safe.detach()
        self._valid_count = self._valid_count + valid.detach().to(torch.int64)
        self._count += 1
        return term

    def loss(
        self, batch: ReplayBufferSamples, features: torch.Tensor, q_values: torch.Tensor
    ) -> torch.Tensor | None:
        return self.term(features, batch.actions, self.num_classes or q_values.shape[1])

    def log_values(self) -> dict[str, float]:
        if self._count == 0:
            return {}
        n_valid = int(self._valid_count)
        skipped = self._count - n_valid
        self.skipped_total += skipped
        out = {
            "train/nc_reg_loss": float(self._term_sum) / self._count,
            "train/nc1_batch": float(self._nc1_sum) / n_valid if n_valid else float("nan"),
            "train/nc_reg_skipped": float(skipped),
        }
        self._reset_stats()
        return out

    def _reset_stats(self) -> None:
        self._term_sum = 0.0
        self._nc1_sum = 0.0
        self._valid_count = 0
        self._count = 0

    def state_dict(self) -> dict[str, Any]:
        return {"skipped_total": self.skipped_total}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped_total = int(state["skipped_total"])
