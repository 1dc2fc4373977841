"""Gymnasium registrations of the ``rlplast/`` environments and the table behind ``rlplast envs``.

To add an id here, add one :class:`EnvEntry` to :data:`ENVS`; the registry-driven tests pick it up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from rlplast.envs.change_dynamics import ChangeDynamics
from rlplast.envs.offset_observation import OffsetObservation
from rlplast.envs.permute_actions import PermuteActions
from rlplast.envs.permute_observation import PermuteObservation
from rlplast.envs.schedule import TaskSequenceWrapper

NAMESPACE = "rlplast/"

#: Keyword arguments of :func:`make_shifted` that the registered ids set and users do not.
INTERNAL_KWARGS = ("base_id", "shift")

#: Shift name → wrapper class, for :func:`make_shifted`.
SHIFTS: dict[str, type[TaskSequenceWrapper]] = {
    "permute_observation": PermuteObservation,
    "permute_actions": PermuteActions,
    "offset_observation": OffsetObservation,
    "change_dynamics": ChangeDynamics,
}

#: Schedule defaults of the classic-control ids.
SCHEDULE_DEFAULTS: dict[str, Any] = {
    "steps_per_task": 20_000,
    "n_tasks": 10,
    "seed": 0,
    "switch_at": "step",
    "after_last": "cycle",
}


def make_shifted(
    base_id: str, shift: str, render_mode: str | None = None, **kwargs: Any
) -> TaskSequenceWrapper:
    """Build ``SHIFTS[shift](gym.make(base_id), **kwargs)`` (the entry point of the shifted ids).

    Args:
        base_id: Gymnasium id of the env to shift (made with its own time limit).
        shift: A key of :data:`SHIFTS`.
        render_mode: Passed to the base env.
        **kwargs: Schedule arguments and the shift's own arguments.
    """
    base = gym.make(base_id, render_mode=render_mode, disable_env_checker=True)
    return SHIFTS[shift](base, **kwargs)


def make_minatar_sequence(
    games: tuple[str, ...] | list[str] = ("space_invaders", "asterix", "seaquest"),
    sticky_action_prob: float = 0.1,
    difficulty_ramping: bool = True,
    render_mode: str | None = None,
    **schedule: Any,
) -> TaskSequenceWrapper:
    """Build the MinAtar game sequence (the entry point of ``rlplast/MinAtarSequence-v0``).

    Args:
        games: MinAtar games in task order.
        sticky_action_prob: MinAtar's sticky-action probability.
        difficulty_ramping: MinAtar's difficulty ramping.
        render_mode: Unused (MinAtarGames does not render); accepted for ``gym.make``.
        **schedule: ``steps_per_task``, ``n_tasks``, ``seed``, ``switch_at``, ``after_last``.
    """
    from rlplast.envs.game_sequence import GameSequence, MinAtarGames

    del render_mode
    env = MinAtarGames(
        games=games, sticky_action_prob=sticky_action_prob, difficulty_ramping=difficulty_ramping
    )
    return GameSequence(env, **schedule)


@dataclass(frozen=True)
class EnvEntry:
    """One registered id: its description, entry point and default keyword arguments."""

    id: str
    description: str
    entry_point: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    needs: str | None = None  # optional extra the env needs, e.g. "minatar" or "box2d"


def _shifted(
    env_id: str, description: str, base_id: str, shift: str, needs: str | None = None, **extra: Any
) -> EnvEntry:
    return EnvEntry(
        id=env_id,
        description=description,
        entry_point="rlplast.envs.registration:make_shifted",
        kwargs={"base_id": base_id, "shift": shift, **SCHEDULE_DEFAULTS, **extra},
        needs=needs,
    )


ENVS: list[EnvEntry] = [
    _shifted(
        "rlplast/PermutedCartPole-v0",
        "CartPole-v1, observation vector permuted per task",
        "CartPole-v1",
        "permute_observation",
    ),
    _shifted(
        "rlplast/PermutedAcrobot-v0",
        "Acrobot-v1, observation vector permuted per task",
        "Acrobot-v1",
        "permute_observation",
    ),
    _shifted(
        "rlplast/ActionShuffledCartPole-v0",
        "CartPole-v1, action indices permuted per task",
        "CartPole-v1",
        "permute_actions",
    ),
    _shifted(
        "rlplast/ActionShuffledAcrobot-v0",
        "Acrobot-v1, action indices permuted per task",
        "Acrobot-v1",
        "permute_actions",
    ),
    _shifted(
        "rlplast/OffsetCartPole-v0",
        "CartPole-v1, observation offset eps_k ~ N(0, sigma^2 I) per task",
        "CartPole-v1",
        "offset_observation",
        sigma=2.0,
    ),
    _shifted(
        "rlplast/OffsetAcrobot-v0",
        "Acrobot-v1, observation offset eps_k ~ N(0, sigma^2 I) per task",
        "Acrobot-v1",
        "offset_observation",
        sigma=2.0,
    ),
    _shifted(
        "rlplast/OffsetLunarLander-v0",
        "LunarLander-v3 (Box2D), observation offset eps_k ~ N(0, sigma^2 I) per task",
        "LunarLander-v3",
        "offset_observation",
        needs="box2d",
        sigma=2.0,
    ),
    _shifted(
        "rlplast/ShiftingCartPole-v0",
        "CartPole-v1, gravity / pole length / cart mass / force drawn per task",
        "CartPole-v1",
        "change_dynamics",
    ),
    _shifted(
        "rlplast/ShiftingAcrobot-v0",
        "Acrobot-v1, link masses and lengths drawn per task",
        "Acrobot-v1",
        "change_dynamics",
    ),
    EnvEntry(
        id="rlplast/MinAtarSequence-v0",
        description="MinAtar SpaceInvaders -> Asterix -> Seaquest, 10x10x10 obs, 6 shared actions",
        entry_point="rlplast.envs.registration:make_minatar_sequence",
        kwargs={
            "games": ("space_invaders", "asterix", "seaquest"),
            "steps_per_task": 100_000,
            "n_tasks": 3,
            "seed": 0,
            "switch_at": "episode",
            "after_last": "cycle",
            "sticky_action_prob": 0.1,
            "difficulty_ramping": True,
        },
        needs="minatar",
    ),
]


def register_envs() -> None:
    """Register every entry of :data:`ENVS` with Gymnasium (idempotent)."""
    for entry in ENVS:
        if entry.id not in gym.registry:
            gym.register(id=entry.id, entry_point=entry.entry_point, kwargs=dict(entry.kwargs))


def list_envs() -> list[dict[str, Any]]:
    """Return every ``rlplast/`` id in Gymnasium's registry with its description and default kwargs.

    Ids registered by extension packages under ``rlplast/`` appear too, with the spec's docstring-less
    description ``""``.

    Returns:
        Dicts ``{"id", "description", "kwargs"}`` in registration order; ``kwargs`` omits the internal
        ``base_id``/``shift`` of shifted ids, which appear as ``"base"`` and ``"shift"`` instead.
    """
    described = {e.id: e for e in ENVS}
    rows = []
    for env_id, spec in gym.registry.items():
        if not env_id.startswith(NAMESPACE):
            continue
        kwargs = dict(spec.kwargs)
        entry = described.get(env_id)
        row: dict[str, Any] = {
            "id": env_id,
            "description": entry.description if entry else "",
            "base": kwargs.pop("base_id", None),
            "shift": kwargs.pop("shift", None),
            "kwargs": kwargs,
        }
        rows.append(row)
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def format_env_table() -> str:
    """Return the text ``rlplast envs`` prints: one block per id with description and defaults."""
    lines = []
    for row in list_envs():
        lines.append(row["id"])
        if row["description"]:
            lines.append(f"    {row['description']}")
        defaults = " ".join(f"{k}={_fmt(v)}" for k, v in row["kwargs"].items())
        if defaults:
            lines.append(f"    defaults: {defaults}")
    lines.append("")
    lines.append("Any Gymnasium id works too; set kwargs in the config's env.kwargs.")
    return "\n".join(lines)
