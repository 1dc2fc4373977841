"""When an event-style intervention fires: on an env-step interval, at task switches, or both.

Shared by ``reset_last_layers``, ``full_reset`` and ``shrink_perturb``. Semantics:

* ``interval`` — fires at the first gradient update at or after each multiple of ``every_steps``
  env steps (``num_timesteps``). Updates only happen every ``train_freq`` steps, so a reset lands at
  most ``train_freq`` steps late; if several boundaries pass between two updates it fires once.
  Step 0 is not a boundary.
* ``task_switch`` — fires on every :meth:`on_task_switch` call whose ``task_id`` differs from the
  previous call's (a repeated notification of the same task does not fire twice).
* ``both`` — either of the above, once per event: a task switch that arrives with no gradient
  update since the last firing (e.g. the interval fired at the update on the switch's step) does not
  fire again, and a switch firing counts as the firing for the interval boundary it falls in.
* ``every_update`` — after every optimizer step (only where a subclass allows it).

Default ``when``: ``interval`` if ``every_steps`` is given, otherwise ``task_switch``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rlplast.errors import UserError
from rlplast.interventions.base import Intervention


@dataclass
class ScheduledIntervention(Intervention, abc.ABC):
    """Base for interventions that act at discrete events; subclasses implement :meth:`fire`."""

    WHEN_CHOICES: ClassVar[tuple[str, ...]] = ("interval", "task_switch", "both")

    every_steps: int | None = field(
        default=None,
        metadata={
            "help": "env steps between interval firings (needed for when = interval or both)",
            "min": 0,
            "exclusive_min": True,
        },
    )
    when: str | None = field(
        default=None,
        metadata={
            "help": "interval, task_switch or both; default: interval if every_steps is set, else "
            "task_switch",
            "choices": [*WHEN_CHOICES, None],
        },
    )

    def __post_init__(self) -> None:
        if self.when is None:
            self.when = "interval" if self.every_steps is not None else "task_switch"
        if self.when not in self.WHEN_CHOICES:
            raise UserError(
                f"intervention '{self.name}': when must be one of {', '.join(self.WHEN_CHOICES)}, "
                f"got {self.when!r}"
            )
        if self.every_steps is not None and self.every_steps <= 0:
            raise UserError(f"intervention '{self.name}': every_steps must be > 0, got {self.every_steps}")
        needs_interval = self.when in ("interval", "both")
        if needs_interval and self.every_steps is None:
            raise UserError(f"intervention '{self.name}': when={self.when!r} needs every_steps (> 0)")
        if not needs_interval and self.every_steps is not None:
            raise UserError(
                f"intervention '{self.name}': every_steps is only used with when=interval or both, "
                f"got when={self.when!r}"
            )
        self.fires = 0
        self.last_fired_step: int | None = None
        self._last_boundary = 0
        self._last_task: int | None = None
        self._updates_since_fire = 1  # no firing yet: the first switch may fire

    # ------------------------------------------------------------------ hooks
    def after_update(self, n_updates: int, num_timesteps: int) -> None:
        self._updates_since_fire += 1
        if self.when == "every_update":
            self._fire_at(num_timesteps)
        elif self.when in ("interval", "both"):
            assert self.every_steps is not None
            boundary = num_timesteps // self.every_steps
            if boundary > self._last_boundary:
                self._last_boundary = boundary
                self._fire_at(num_timesteps)

    def on_task_switch(self, task_id: int, num_timesteps: int) -> None:
        is_new = task_id != self._last_task
        self._last_task = task_id
        if not is_new or self.when not in ("task_switch", "both"):
            return
        if self.when == "both":
            assert self.every_steps is not None
            self._last_boundary = max(self._last_boundary, num_timesteps // self.every_steps)
            if self._updates_since_fire == 0:  # nothing learned since the interval firing
                return
        self._fire_at(num_timesteps)

    def _fire_at(self, num_timesteps: int) -> None:
        with self.random_stream():  # a population member's re-draws come from its own stream
            self.fire()
        self.fires += 1
        self.last_fired_step = num_timesteps
        self._updates_since_fire = 0

    @abc.abstractmethod
    def fire(self) -> None:
        """Apply the intervention now (subclasses; runs inside :meth:`random_stream`)."""

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        return {
            "fires": self.fires,
            "last_fired_step": self.last_fired_step,
            "last_boundary": self._last_boundary,
            "last_task": self._last_task,
            "updates_since_fire": self._updates_since_fire,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fires = int(state["fires"])
        self.last_fired_step = state["last_fired_step"]
        self._last_boundary = int(state["last_boundary"])
        self._last_task = state["last_task"]
        self._updates_since_fire = int(state.get("updates_since_fire", 1))
