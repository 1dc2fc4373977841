"""L2-init (Kumar et al. 2023, "Maintaining Plasticity via Regenerative Regularization")."""

from __future__ import annotations

from collections.abc import Sequence
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

    In a population, :meth:`stacked_loss` computes the term of every member that has it in one
    pass over the stacked parameters (a coefficient per member), instead of one small graph per
    member.
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
        # In a population: the group whose stacked pass computes this instance's term, and the
        # instance's row in it; θ₀'s version tells the group when to restack.
        self._group: tuple[_StackedL2, int] | None = None
        self._theta0_version = 0

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

    @classmethod
    def stacked_loss(
        cls,
        members: Sequence[tuple[int, Intervention]],
        params: Sequence[torch.Tensor],
        batch: Any,
        features: torch.Tensor,
        q_values: torch.Tensor,
    ) -> torch.Tensor | None:
        """The members' terms ``coef_i · Σ ‖θ_i − θ₀_i‖²`` in one pass over the stacked parameters."""
        first = members[0][1]
        assert isinstance(first, L2Init)
        group = first._group[0] if first._group is not None else _StackedL2(members, params)
        return group.loss([iv for _, iv in members if isinstance(iv, L2Init)], params)

    def log_values(self) -> dict[str, float]:
        if self._group is not None:
            group, row = self._group
            return group.log_values(row)
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
        self._theta0_version += 1


class _StackedL2:
    """The L2-init terms of several population members, computed on the stacked parameters.

    Holds the members' θ₀ stacked ``(m, *shape)`` (restacked when an instance loads another θ₀),
    their coefficients ``(m,)`` and the logging sums per row: the same float32 accumulation an
    instance does alone, so the logged values are the same. The instances themselves are passed
    to every :meth:`loss` (a checkpoint may restore them around a restored group).
    """

    def __init__(self, members: Sequence[tuple[int, Intervention]], params: Sequence[torch.Tensor]) -> None:
        instances = [iv for _, iv in members if isinstance(iv, L2Init)]
        rows = [i for i, _ in members]
        device, dtype = params[0].device, params[0].dtype
        n_members = params[0].shape[0]
        self.index = None if rows == list(range(n_members)) else torch.tensor(rows, device=device)
        self.coef = torch.tensor([iv.coef for iv in instances], dtype=dtype, device=device)
        self.theta0: list[torch.Tensor] = []
        self.versions: tuple[int, ...] | None = None
        self.loss_sum = torch.zeros(len(rows), dtype=dtype, device=device)
        self.last_sq_dist = torch.zeros_like(self.loss_sum)
        self.count = 0
        self.counted = [0] * len(rows)  # count at each row's last log
        for row, intervention in enumerate(instances):
            intervention._group = (self, row)

    def loss(self, instances: Sequence[L2Init], params: Sequence[torch.Tensor]) -> torch.Tensor:
        """The terms' sum; records each row's term and distance for logging."""
        versions = tuple(iv._theta0_version for iv in instances)
        if versions != self.versions:
            self.theta0 = [torch.stack(same) for same in zip(*(iv.theta0 for iv in instances), strict=True)]
            self.versions = versions
        rows = params if self.index is None else [p.index_select(0, self.index) for p in params]
        sq_dist = torch.stack(
            [(p - p0).pow(2).flatten(1).sum(1) for p, p0 in zip(rows, self.theta0, strict=True)], 1
        ).sum(1)
        terms = self.coef * sq_dist
        self.loss_sum += terms.detach()
        self.last_sq_dist = sq_dist.detach()
        self.count += 1
        return terms.sum()

    def log_values(self, row: int) -> dict[str, float]:
        count = self.count - self.counted[row]
        if count == 0:
            return {}
        out = {
            "train/l2_init_loss": float(self.loss_sum[row]) / count,
            "train/l2_init_distance": float(self.last_sq_dist[row]) ** 0.5,
        }
        self.loss_sum[row] = 0.0
        self.counted[row] = self.count
        return out
