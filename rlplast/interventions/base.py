"""The intervention interface: three hooks that do nothing by default, plus state for checkpoints.

An intervention is a dataclass whose fields are its config parameters (validated in
``__post_init__``), registered by name in :data:`INTERVENTIONS`. PlasticDQN calls the hooks:

* :meth:`Intervention.setup` once, after the networks and the optimizer exist;
* :meth:`Intervention.loss` inside every gradient step, with the replay batch and the
  penultimate features and Q-values of the online network's single forward pass;
* :meth:`Intervention.after_update` after every optimizer step;
* :meth:`Intervention.on_task_switch` when the environment reports a new ``task_id``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from rlplast.errors import UserError, closest
from rlplast.registry import Registry

if TYPE_CHECKING:
    from stable_baselines3.common.type_aliases import ReplayBufferSamples

    from rlplast.agents.dqn import PlasticDQN


class Intervention:
    """Base class. Subclasses are dataclasses; every hook is optional."""

    name: ClassVar[str] = ""

    def setup(self, model: PlasticDQN) -> None:
        """Called once the model's networks and optimizer exist. Keep references here."""
        self.model = model

    def loss(
        self, batch: ReplayBufferSamples, features: torch.Tensor, q_values: torch.Tensor
    ) -> torch.Tensor | None:
        """An extra loss term added to the TD loss (``None`` adds nothing).

        Args:
            batch: the replay batch of this gradient step.
            features: penultimate features of ``batch.observations`` (input of the last linear layer).
            q_values: Q-values of all actions, shape ``(batch, n_actions)``.
        """
        return None

    def after_update(self, n_updates: int, num_timesteps: int) -> None:
        """Called after every optimizer step with the update count and the env step count."""

    def on_task_switch(self, task_id: int, num_timesteps: int) -> None:
        """Called when the environment reports a new task."""

    def log_values(self) -> dict[str, float]:
        """Scalars to log at this logging step (keys like ``train/…``). Called once per logging step."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (counters, θ₀, schedules)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


INTERVENTIONS: Registry[type[Intervention]] = Registry("intervention")


def register(name: str):
    """Class decorator: register an intervention dataclass under ``name``."""

    def deco(cls: type[Intervention]) -> type[Intervention]:
        cls.name = name
        INTERVENTIONS.register(name)(cls)
        return cls

    return deco


def build_intervention(spec: dict[str, Any]) -> Intervention:
    """Build an intervention from a config entry such as ``{name: redo, tau: 0.025}``.

    Raises:
        UserError: unknown name, unknown parameter or invalid value (messages list valid choices).
    """
    if not isinstance(spec, dict) or "name" not in spec:
        raise UserError(f"each intervention needs a 'name' key, got {spec!r}")
    params = dict(spec)
    cls = INTERVENTIONS.get(str(params.pop("name")))
    fields: dict[str, dataclasses.Field] = (
        {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    )
    for key in params:
        if key not in fields:
            raise UserError(
                f"unknown parameter '{key}' for intervention '{cls.name}'{closest(key, fields)}; "
                f"valid: {', '.join(fields) or '(none)'}"
            )
    for key, value in params.items():
        params[key] = _coerce(cls.name, key, fields[key].type, value)
    try:
        return cls(**params)
    except (TypeError, ValueError, OverflowError) as exc:
        # A value the intervention's own checks let through but its set-up rejects (e.g. a seed
        # NumPy refuses): still one line naming the intervention, never a traceback.
        raise UserError(f"intervention '{cls.name}': {exc}") from None


def _coerce(owner: str, key: str, annotation: Any, value: Any) -> Any:
    """Check a parameter against its annotation (``int``, ``float``, ``bool``, ``str``, ``None``, unions).

    Ints are accepted for floats, and YAML's ``1e-4`` (read as a string) is parsed as a float.
    Numbers must be finite (``.nan`` / ``.inf`` are rejected for every intervention, like config fields).
    """
    allowed = str(annotation).replace(" ", "").split("|")
    simple = {"float", "int", "bool", "str", "None"}
    if not all(t in simple for t in allowed):
        return value
    is_num = isinstance(value, (int, float)) and not isinstance(value, bool)
    for typ in allowed:
        if typ == "int" and isinstance(value, int) and not isinstance(value, bool):
            return value
        if typ == "float" and is_num:
            return _finite(owner, key, float(value), value)
        if typ == "float" and isinstance(value, str):
            try:
                as_float = float(value)
            except ValueError:
                pass
            else:
                return _finite(owner, key, as_float, value)
        if (typ == "bool" and isinstance(value, bool)) or (typ == "str" and isinstance(value, str)):
            return value
        if typ == "None" and value is None:
            return value
    raise UserError(
        f"intervention '{owner}': parameter '{key}' must be {' or '.join(allowed)}, got {value!r}"
    )


def _finite(owner: str, key: str, number: float, value: Any) -> float:
    if not math.isfinite(number):
        raise UserError(f"intervention '{owner}': parameter '{key}' must be a finite number, got {value!r}")
    return number
