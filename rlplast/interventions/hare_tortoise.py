"""Hare & Tortoise (Lee, Cho, Kim, Kim, Min, Choo, Lyle 2024, "Slow and Steady Wins the Race")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from rlplast.errors import UserError
from rlplast.fields import config_field
from rlplast.interventions._schedule import ScheduledIntervention
from rlplast.interventions.base import register

if TYPE_CHECKING:
    from rlplast.agents.dqn import PlasticDQN


@register("hare_tortoise")
@dataclass
class HareTortoise(ScheduledIntervention):
    """A slow EMA copy of the online network, into which the online network is reset at events.

    The online network is the *hare* (fast): it is trained, acts, and gives the TD loss, as in
    plain DQN; the target network keeps DQN's own sync schedule. The *tortoise* (slow) is a copy
    of the online parameters outside the model, updated after every optimizer step as

        ``θ_slow ← (1 − α)·θ_slow + α·θ_fast``  (computed as ``θ_slow + α·(θ_fast − θ_slow)``)

    and at each event (every ``every_steps`` env steps and/or at task switches, see
    :mod:`._schedule`) the hare is reset to the tortoise, ``θ_fast ← θ_slow``, in place; the
    tortoise is used for nothing else (not for acting, not for targets). At a reset the online
    parameters' Adam state (moments and steps) is cleared (``reset_optimizer``) and the target
    network takes the new online weights (``target: copy``: online and target coincide right after
    a reset, as in a third-party JAX DQN implementation whose EMA target network is the tortoise)
    or keeps its own (``target: keep``). ``θ_slow`` starts as the initial online network. The
    default ``α = 0.001`` (EMA momentum 0.999) and clearing the optimizer at a reset are our
    choices, not checked against the authors' code (see ``docs/interventions.md``).

    Logs ``intervention/hare_resets`` (resets so far) and ``intervention/hare_tortoise_distance``
    (``‖θ_fast − θ_slow‖`` at the logging step).

    Example:
        >>> from rlplast.interventions import build_intervention
        >>> ht = build_intervention({"name": "hare_tortoise", "alpha": 0.001, "when": "task_switch"})
    """

    TARGET_CHOICES: ClassVar[tuple[str, ...]] = ("copy", "keep")

    alpha: float = config_field(
        1e-3, "α, the EMA rate of the slow network per update, in (0, 1)", min=0.0, exclusive_min=True
    )
    reset_optimizer: bool = config_field(True, "clear the online network's Adam state at a reset")
    target: str = config_field(
        "copy",
        "at a reset: copy (the target network takes the reset online weights) or keep",
        choices=list(TARGET_CHOICES),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.alpha < 1.0:
            raise UserError(f"intervention '{self.name}': alpha must be in (0, 1), got {self.alpha}")
        if self.target not in self.TARGET_CHOICES:
            raise UserError(
                f"intervention '{self.name}': target must be one of {', '.join(self.TARGET_CHOICES)}, "
                f"got {self.target!r}"
            )
        #: The tortoise: one tensor per online parameter (set at setup).
        self.slow: list[torch.Tensor] = []

    def setup(self, model: PlasticDQN) -> None:
        super().setup(model)
        self._fast = list(self.online_net.parameters())
        self._target = list(self.target_net.parameters())
        self.slow = [p.detach().clone() for p in self._fast]

    @torch.no_grad()
    def after_update(self, n_updates: int, num_timesteps: int) -> None:
        torch._foreach_lerp_(self.slow, [p.detach() for p in self._fast], self.alpha)
        super().after_update(n_updates, num_timesteps)  # the schedule: a reset follows the EMA step

    @torch.no_grad()
    def fire(self) -> None:
        """Reset the hare (online network) to the tortoise now."""
        for fast, slow in zip(self._fast, self.slow, strict=True):
            fast.copy_(slow)
        if self.reset_optimizer:
            for fast in self._fast:
                self.optimizer.state.pop(fast, None)
        if self.target == "copy":
            for target, fast in zip(self._target, self._fast, strict=True):
                target.copy_(fast)

    @torch.no_grad()
    def log_values(self) -> dict[str, float]:
        values = {"intervention/hare_resets": float(self.fires)}
        if self.slow:
            sq = torch.stack([(f - s).pow(2).sum() for f, s in zip(self._fast, self.slow, strict=True)])
            values["intervention/hare_tortoise_distance"] = float(sq.sum().sqrt())
        return values

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "slow": [t.clone() for t in self.slow]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        slow = state["slow"]
        if self.slow and len(slow) != len(self.slow):
            raise ValueError(f"hare_tortoise state has {len(slow)} tensors, the network has {len(self.slow)}")
        if self.slow:
            with torch.no_grad():
                for dst, src in zip(self.slow, slow, strict=True):
                    dst.copy_(src)
        else:
            self.slow = [t.detach().clone() for t in slow]
