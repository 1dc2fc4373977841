"""Shrink-and-perturb (Ash & Adams 2020): θ ← λ·θ + σ·θ_fresh."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch

from rlplast.errors import UserError
from rlplast.interventions._schedule import ScheduledIntervention
from rlplast.interventions.base import register
from rlplast.nets import FreshInit, covered_parameter_names, shrink_perturb_

if TYPE_CHECKING:
    from rlplast.agents.dqn import PlasticDQN


@register("shrink_perturb")
@dataclass
class ShrinkPerturb(ScheduledIntervention):
    """Shrink the online weights towards zero and add a little of a fresh initialisation.

    At each event every parameter of the online network becomes ``shrink·θ + perturb·θ_fresh``
    (:func:`rlplast.nets.shrink_perturb_`, the map the supervised track uses too), where
    ``θ_fresh`` is a fresh initialisation drawn at that moment (global torch RNG) in a private
    scratch copy of the network (:class:`rlplast.nets.FreshInit`) — no module of the network is
    replaced. Parameters no initialiser covers are left alone. Optimizer state is kept.

    The target network (``target``): ``same`` applies the same map with the *same* ``θ_fresh``
    (``θ⁻ ← shrink·θ⁻ + perturb·θ_fresh``), keeping its lag behind the online network — right for
    ``every_update``; ``copy`` copies the new online weights into the target.

    ``when``: interval, task_switch, both (see :mod:`._schedule`) or every_update (after every
    optimizer step; then use ``shrink`` close to 1, e.g. 0.9999 — the defaults are per event, as in
    the paper's code). Logs ``intervention/shrink_perturbs``.
    """

    WHEN_CHOICES: ClassVar[tuple[str, ...]] = ("interval", "task_switch", "both", "every_update")
    TARGET_CHOICES: ClassVar[tuple[str, ...]] = ("same", "copy")

    when: str | None = field(
        default=None,
        metadata={
            "help": "interval, task_switch, both or every_update (after every optimizer step); "
            "default: interval if every_steps is set, else task_switch",
            "choices": [*WHEN_CHOICES, None],
        },
    )
    shrink: float = field(
        default=0.6,
        metadata={
            "help": "λ, the factor on the current weights",
            "min": 0.0,
            "exclusive_min": True,
            "max": 1.0,
        },
    )
    perturb: float = field(
        default=0.01, metadata={"help": "σ, the factor on the fresh initialisation", "min": 0.0}
    )
    target: str = field(
        default="same",
        metadata={
            "help": "the target network: same (the same map with the same θ_fresh) or copy (copy of "
            "the new online network)",
            "choices": list(TARGET_CHOICES),
        },
    )

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
        q_net = self.online_net
        self._fresh = FreshInit(q_net)
        covered = covered_parameter_names(q_net)
        target_params = dict(self.target_net.named_parameters())
        # Every parameter an initialiser covers: names, online and target tensors (same order).
        self._names = [n for n, _ in q_net.named_parameters() if n in covered]
        self._online = [p for n, p in q_net.named_parameters() if n in covered]
        self._target = [target_params[n] for n in self._names]

    @torch.no_grad()
    def fire(self) -> None:
        """Shrink and perturb now."""
        drawn = self._fresh.draw()
        fresh = [drawn[n] for n in self._names]
        shrink_perturb_(self._online, fresh, self.shrink, self.perturb)
        if self.target == "same":
            shrink_perturb_(self._target, fresh, self.shrink, self.perturb)
        else:
            for target, param in zip(self._target, self._online, strict=True):
                target.copy_(param)

    def log_values(self) -> dict[str, float]:
        return {"intervention/shrink_perturbs": float(self.fires)}
