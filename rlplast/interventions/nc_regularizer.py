"""The paper's neural-collapse regularizer: push the batch's penultimate features *away* from NC1 collapse."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from rlplast.errors import UserError
from rlplast.interventions._nc1_fused import nc1_penalty, nc1_penalty_grad
from rlplast.interventions.base import Intervention, register
from rlplast.metrics.collapse import nc1_quotient

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
    (``variant=pinv``; value and gradient in closed form, see ``_nc1_fused``, equal to autograd
    through :func:`rlplast.metrics.collapse.nc1`) or through ``Tr Σ_W / Tr Σ_B``
    (``variant=quotient``, smoother).

    A batch in which fewer than two actions have ``n_min`` samples (or whose between-class scatter is
    zero) has no defined NC1: it contributes exactly zero to the loss and to the gradient, and is
    counted in ``train/nc_reg_skipped``. This is decided on the device, without a host sync.

    Logs (means over the updates since the last log): ``train/nc_reg_loss`` (the added term,
    skipped batches counting as 0), ``train/nc1_batch`` (batch NC1 over non-skipped batches, NaN if
    none) and ``train/nc_reg_skipped`` (number of skipped batches).
    """

    VARIANTS: ClassVar[tuple[str, ...]] = ("pinv", "quotient")
    _FOLD: ClassVar[int] = 1024

    coef: float = field(default=0.05, metadata={"help": "λ, weight of the NC1 reward", "min": 0.0})
    cap: float = field(
        default=200.0,
        metadata={
            "help": "NC1 values above cap are clipped (no reward, no gradient)",
            "min": 0.0,
            "exclusive_min": True,
        },
    )
    variant: str = field(
        default="pinv",
        metadata={"help": "pinv: Tr(Σ_W Σ_B^†)/C; quotient: Tr Σ_W / Tr Σ_B", "choices": list(VARIANTS)},
    )
    n_min: int = field(
        default=2,
        metadata={"help": "minimum samples of an action in the batch for it to count as a class", "min": 1},
    )

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
        # Batch NC1 values (0-dim, NaN when undefined) since the last log, so an update adds no
        # bookkeeping operations; every _FOLD values they are reduced on the device into
        # _folded = [Σ term, Σ valid NC1, #valid, #batches] (no host sync), the rest at log time.
        self._values: list[float | torch.Tensor] = []
        self._folded: torch.Tensor | None = None

    def setup(self, model: PlasticDQN) -> None:
        super().setup(model)
        self.num_classes = int(self.model.action_space.n)  # type: ignore[attr-defined]

    def term(self, features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        """The loss term ``−coef · min(NC1, cap)`` (0 where NC1 is undefined), features' dtype.

        Args:
            features: ``(N, D)`` penultimate features.
            labels: ``(N,)`` integer classes.
            num_classes: number of classes.

        Returns:
            A 0-dim tensor; also records the batch NC1 for logging.
        """
        labels = labels.reshape(-1).long()
        if self.variant == "pinv":
            term, value = nc1_penalty(features, labels, num_classes, self.n_min, self.coef, self.cap)
        else:
            value = nc1_quotient(_FiniteGrad.apply(features), labels, num_classes, self.n_min)
            # NaN (undefined) -> 0 with zero gradient; above the cap the clamp's gradient is 0.
            safe = torch.nan_to_num(value, nan=0.0)
            term = (torch.clamp(safe, max=self.cap) * -self.coef).to(features.dtype)
        self._record(value.detach())
        return term

    def _record(self, value: float | torch.Tensor) -> None:
        self._values.append(value)
        if len(self._values) >= self._FOLD:
            self._fold()

    def loss(
        self, batch: ReplayBufferSamples, features: torch.Tensor, q_values: torch.Tensor
    ) -> torch.Tensor | None:
        """The term's gradient, added to the features' gradient by a tensor hook (``pinv``).

        The term's *value* never enters the TD loss that is logged, so for ``variant=pinv`` nothing is
        added to the loss graph: the closed-form ``∂term/∂features`` is computed here and
        :meth:`add_feature_gradient` adds it to the features' gradient during ``backward()`` (a
        tensor hook in a single run; in a population, on the stacked features) — the same
        parameter update as adding :meth:`term` to the loss (tested), without an autograd node, a
        loss addition or a gradient accumulation per step. ``variant=quotient`` returns :meth:`term`.
        """
        num_classes = self.num_classes or q_values.shape[1]
        if self.variant != "pinv" or not features.requires_grad:
            return self.term(features, batch.actions, num_classes)
        value, grad = nc1_penalty_grad(features, batch.actions, num_classes, self.n_min, self.coef, self.cap)
        self._record(value)
        if grad is not None:
            self.add_feature_gradient(features, grad)
        return None

    def _fold(self) -> None:
        if any(isinstance(v, float) for v in self._values):  # the NumPy path (CPU): plain floats
            values = torch.tensor([float(v) for v in self._values], dtype=torch.float64)
        else:
            values = torch.stack(self._values).to(torch.float64)  # type: ignore[arg-type]
        self._values = []
        valid = torch.isfinite(values)
        safe = torch.where(valid, values, torch.zeros_like(values))
        terms = torch.clamp(safe, max=self.cap) * -self.coef
        sums = torch.stack([terms.sum(), safe.sum(), valid.sum().to(values.dtype)])
        sums = torch.cat([sums, sums.new_tensor([float(len(values))])])
        self._folded = sums if self._folded is None else self._folded + sums

    def log_values(self) -> dict[str, float]:
        if self._values:
            self._fold()
        if self._folded is None:
            return {}
        term_sum, nc1_sum, n_valid_f, count_f = self._folded.tolist()
        self._folded = None
        n_valid, count = int(n_valid_f), int(count_f)
        skipped = count - n_valid
        self.skipped_total += skipped
        return {
            "train/nc_reg_loss": term_sum / count,
            "train/nc1_batch": nc1_sum / n_valid if n_valid else float("nan"),
            "train/nc_reg_skipped": float(skipped),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"skipped_total": self.skipped_total}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped_total = int(state["skipped_total"])
