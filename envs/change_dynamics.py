"""ChangeDynamics: classic-control physics parameters drawn per task."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
from gymnasium.envs.classic_control.acrobot import AcrobotEnv
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

from rlplast.envs.schedule import TaskSequenceWrapper, task_rng
from rlplast.errors import UserError, unknown


def _cartpole_derived(env: Any) -> None:
    # CartPoleEnv caches these two products in __init__; keep them in step with their factors.
    env.total_mass = env.masspole + env.masscart
    env.polemass_length = env.masspole * env.length


def _acrobot_derived(env: Any) -> None:
    # Keep each link's centre of mass at its middle, as in the default (length 1, centre 0.5).
    env.LINK_COM_POS_1 = 0.5 * env.LINK_LENGTH_1
    env.LINK_COM_POS_2 = 0.5 * env.LINK_LENGTH_2


@dataclass(frozen=True)
class DynamicsSpec:
    """Which physics attributes of an env class change, their ranges and the derived attributes.

    Attributes:
        ranges: Attribute name → ``(low, high)``; task ``k >= 1`` draws each uniformly.
        derive: Recomputes attributes cached from the changed ones (may do nothing).
    """

    ranges: Mapping[str, tuple[float, float]]
    derive: Callable[[Any], None]


#: Supported env classes. Defaults are CartPole's gravity 9.8, half pole length 0.5, cart mass 1.0,
#: force 10.0 and Acrobot's link masses and lengths 1.0; the ranges go from about half to 1.5-2x them.
DYNAMICS: dict[type, DynamicsSpec] = {
    CartPoleEnv: DynamicsSpec(
        ranges={
            "gravity": (4.9, 14.7),
            "length": (0.25, 1.0),
            "masscart": (0.5, 2.0),
            "force_mag": (5.0, 15.0),
        },
        derive=_cartpole_derived,
    ),
    AcrobotEnv: DynamicsSpec(
        ranges={
            "LINK_MASS_1": (0.5, 2.0),
            "LINK_MASS_2": (0.5, 2.0),
            "LINK_LENGTH_1": (0.5, 1.5),
            "LINK_LENGTH_2": (0.5, 1.5),
        },
        derive=_acrobot_derived,
    ),
}


class ChangeDynamics(TaskSequenceWrapper):
    """Change a classic-control env's physics per task (task 0 keeps the default physics).

    Task ``k >= 1`` draws every parameter of :data:`DYNAMICS` for the env's class uniformly from its
    range with ``task_rng(seed, k)`` and writes it onto ``env.unwrapped``; a switch in the middle of an
    episode changes the physics from the next step on. Observations and actions are untouched.

    Example:
        >>> import gymnasium as gym
        >>> from rlplast.envs import ChangeDynamics
        >>> env = ChangeDynamics(gym.make("CartPole-v1"), steps_per_task=100, n_tasks=5, seed=0)
        >>> env.params["gravity"]
        9.8
        >>> env.set_task(2)
        >>> 4.9 <= env.params["gravity"] <= 14.7
        True

    Args:
        env: A CartPole or Acrobot env (possibly wrapped).
        ranges: Optional overrides ``{name: (low, high)}`` of the default ranges.
        **schedule: ``steps_per_task``, ``n_tasks``, ``seed``, ``switch_at``, ``after_last``
            (see :class:`~rlplast.envs.schedule.TaskSequenceWrapper`).

    Raises:
        UserError: For an unsupported env or an unknown / empty range.
    """

    def __init__(
        self, env: gym.Env, ranges: Mapping[str, tuple[float, float]] | None = None, **schedule: Any
    ) -> None:
        super().__init__(env, **schedule)
        base = env.unwrapped
        spec = next((s for cls, s in DYNAMICS.items() if isinstance(base, cls)), None)
        if spec is None:
            supported = ", ".join(cls.__name__ for cls in DYNAMICS)
            raise UserError(f"ChangeDynamics supports {supported}; got {type(base).__name__}")
        self._spec = spec
        self.ranges: dict[str, tuple[float, float]] = dict(spec.ranges)
        for name, bounds in (ranges or {}).items():
            if name not in spec.ranges:
                raise unknown(f"{type(base).__name__} dynamics parameter", name, spec.ranges)
            low, high = (float(b) for b in bounds)
            if not low <= high:
                raise UserError(f"range for {name} must have low <= high, got {bounds!r}")
            self.ranges[name] = (low, high)
        self.defaults = {name: float(getattr(base, name)) for name in self.ranges}
        self.params: dict[str, float] = dict(self.defaults)

    def apply_task(self, task: int) -> None:
        """Write task ``task``'s physics onto the unwrapped env (the defaults for task 0)."""
        if task == 0:
            params = dict(self.defaults)
        else:
            rng = task_rng(self.task_seed, task)
            params = {name: float(rng.uniform(lo, hi)) for name, (lo, hi) in self.ranges.items()}
        base = self.env.unwrapped
        for name, value in params.items():
            setattr(base, name, value)
        self._spec.derive(base)
        self.params = params
