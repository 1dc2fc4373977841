"""Shrink-and-perturb (Ash & Adams 2020): θ ← λ·θ + σ·θ_fresh."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from rlplast.errors import UserError
from rlplast.interventions._nets import FreshInit, covered_parameter_names
from rlplast.interventions._schedule import ScheduledIntervention
from rlplast.interventions.base import register

if TYPE_CHECKING:
    from rlplast.agents.dqn import PlasticDQN


@register("shrink_perturb")
@dataclass
class ShrinkPerturb(ScheduledIntervention):
    """Shrink the online weights towards zero and add a little of a fresh initialisation.

    At each event every parameter of the online network becomes ``shrink·θ + perturb·θ_fresh``,
    where ``θ_fresh`` is a fresh initialisation drawn at that moment (global torch RNG) in a private
    scratch copy of the network — no module of the network is replaced. Optimizer state is kept.

    The target network (``target``): ``same`` applies the same map with the *same* ``θ_fresh``
    (``θ⁻ ← shrink·θ⁻ + perturb·θ_fresh``), keeping its lag behind the online network — right for
    ``every_update``; ``copy`` copies the new online weights into the target.

    ``when``: interval, task_switch, both (see :mod:`._schedule`) or every_update (after every
    optimizer step; then use ``shrink`` close to 1, e.g. 0.9999 — the defaults are per event, as in
    the paper's code). Logs ``intervention/shrink_perturbs``.
    """

    shrink: float = 0.6
    """λ, the factor on the current weights, in (0, 1]."""
    perturb: float = 0.01
    """σ, the factor on the fresh initialisation, >= 0."""
    target: str = "same"
    """What happens to the target network: same (same map) or copy (copy of the online net)."""

    WHEN_CHOICES: ClassVar[tuple[str, ...]] = ("interval", "task_switch", "both", "every_update")
    TARGET_CHOICES: ClassVar[tuple[str, ...]] = ("same", "copy")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.shrink <= 1.0:
            raise UserError(f"intervention '{self.name}': shrink must be in (0, 1], got {self.shrink}")
        if self.perturb < 0.0:
            raise UserError(f"intervention '{self.name}': perturb must be >= 0, got {self.perturb}")
        if self.target not in self.TARGET_CHOICES:
            raise UserError(
                f"intervention '{self.name}': target must be one of {', '.join(self.TARGET_CHOICES)}, "
                f"got {self.target!r}"
            )

    def setup(self, model: PlasticDQN) -> None:
        super().setup(model)
        q_net = model.policy.q_net
        self._fresh = FreshInit(q_net)
        covered = covered_parameter_names(q_net)
        target_params = dict(model.policy.q_net_target.named_parameters())
        # (name, online parameter, target parameter) for every parameter an initialiser covers.
        self._params = [(n, p, target_params[n]) for n, p in q_net.named_parameters() if n in covered]

    @torch.no_grad()
    def fire(self) -> None:
        """Shrink and perturb now."""
        fresh = self._fresh.draw()
        for name, param, target in self._params:
            param.mul_(self.shrink).add_(fresh[name], alpha=self.perturb)
            if self.target == "same":
                target.mul_(self.shrink).add_(fresh[name], alpha=self.perturb)
            else:
                target.copy_(param)

    def log_values(self) -> dict[str, float]:
        return {"intervention/shrink_perturbs": float(self.fires)}
