"""The members' environments (one copy each, in a Gymnasium vector env) and their episodes.

Each member gets its own copy of the env, made as a single run would make it
(:func:`rlplast.envs.make_env` for an id), stepped through ``gymnasium.vector.SyncVectorEnv`` with
``autoreset_mode=SAME_STEP``: an env that ends an episode is reset within the same ``step`` and
its true last observation comes in ``infos["final_obs"]`` — stable-baselines3's ``DummyVecEnv``
semantics. When every member's env is a plain CartPole (``gym.make("CartPole-v1")`` and its
kwargs), or every one a shifting ``rlplast/`` CartPole (one of rlplast's shifts around one), the
members are stepped instead as one :class:`rlplast.envs.cartpole_batch.CartPoleBatch` — the same
dynamics, seeding, time limit, task schedules and autoreset, the CartPole physics as arrays,
bitwise equal per member (tested), several times faster than S ``CartPoleEnv.step`` calls.

Member ``i``'s env is seeded by the first reset with ``seeds[i]``, as SB3 seeds a single run's env (``model.set_random_seed(seed)`` → ``env.seed(seed)`` → ``reset(seed=seed)``).

Episode returns and lengths, and the task id each step ran under, are tracked on the host from
what the vector env returns anyway (:class:`EpisodeTracker`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from rlplast.envs.cartpole_batch import batch_cartpoles
from rlplast.errors import UserError

__all__ = ["EnvSource", "Episode", "EpisodeTracker", "TaskSwitch", "make_member_envs", "step_task_ids"]

#: An env id, one env factory for every member, or one factory per member.
EnvSource = str | Callable[[], gym.Env] | Sequence[Callable[[], gym.Env]]


def _make_by_id(env_id: str, kwargs: Mapping[str, Any] | None, import_module: str | None) -> gym.Env:
    from rlplast.envs.factory import make_env

    return make_env(env_id, kwargs, import_module=import_module)


def make_member_envs(
    env: EnvSource,
    n_members: int,
    env_kwargs: Mapping[str, Any] | None = None,
    import_module: str | None = None,
    batched: bool = True,
) -> gym.vector.VectorEnv:
    """One env per member in a vector env with same-step autoreset (not yet reset).

    Args:
        env: an env id (made with :func:`rlplast.envs.make_env` and ``env_kwargs``/``import_module``),
            a factory called once per member, or one factory per member.
        n_members: S.
        env_kwargs: keyword arguments for an env id.
        import_module: module to import before making an env id.
        batched: step (shifting) CartPoles as one :class:`~rlplast.envs.cartpole_batch.CartPoleBatch`
            (False: always a ``SyncVectorEnv`` of the made envs).

    Raises:
        UserError: a bad id or kwargs, a non-Discrete action space, or members whose observation
            or action spaces differ.
    """
    if isinstance(env, str):
        factories: list[Callable[[], gym.Env]] = [
            functools.partial(_make_by_id, env, env_kwargs, import_module)
        ] * n_members
    elif callable(env):
        factories = [env] * n_members
    else:
        factories = list(env)
        if len(factories) != n_members:
            raise UserError(f"population: {len(factories)} env factories for {n_members} members")
    made: list[gym.Env] = []
    try:
        for factory in factories:
            made.append(factory())
        _check_spaces(made)
    except BaseException:
        for e in made:
            e.close()
        raise
    batch = batch_cartpoles(made) if batched else None
    if batch is not None:
        if batch.tasks is None:  # plain CartPoles: the batch replaces them (it keeps task wrappers)
            for e in made:
                e.close()
        return batch
    return gym.vector.SyncVectorEnv(
        [functools.partial(_given, e) for e in made], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )


def _given(env: gym.Env) -> gym.Env:
    return env


def _check_spaces(envs: Sequence[gym.Env]) -> None:
    first = envs[0]
    if not isinstance(first.action_space, gym.spaces.Discrete):
        raise UserError(
            f"population: the env has a {type(first.action_space).__name__} action space; "
            "DQN needs a Discrete action space"
        )
    for i, e in enumerate(envs[1:], start=1):
        if e.observation_space != first.observation_space:
            raise UserError(
                f"population: member {i}'s observation space {e.observation_space} differs from "
                f"member 0's {first.observation_space}; all members need the same spaces"
            )
        if e.action_space != first.action_space:
            raise UserError(
                f"population: member {i}'s action space {e.action_space} differs from member 0's "
                f"{first.action_space}; all members need the same spaces"
            )


def step_task_ids(infos: Mapping[str, Any], done: np.ndarray) -> np.ndarray | None:
    """The ``task_id`` each member's step ran under, ``(S,)`` int64 (-1 where not reported), or
    None when no env reports one. For a member whose episode ended, the step's info is in
    ``infos["final_info"]`` (the top level then holds the reset's info)."""
    if "task_id" not in infos:
        return None
    tasks = np.where(infos["_task_id"], infos["task_id"], -1).astype(np.int64)
    final = infos.get("final_info")
    if final is not None and "task_id" in final:
        tasks = np.where(final["_task_id"], final["task_id"], tasks).astype(np.int64)
    return tasks


@dataclass(frozen=True)
class Episode:
    """One finished episode of one member (``step``: the env step, 1-based, that ended it)."""

    member: int
    step: int
    episode_return: float
    length: int
    task_id: int


@dataclass(frozen=True)
class TaskSwitch:
    """A member's env reported a new task at ``step`` (not recorded for the first task)."""

    member: int
    step: int
    task_id: int


class EpisodeTracker:
    """Per-member running episode returns and lengths, finished episodes and task switches.

    Returns are summed in float64 and rounded to 6 decimals, as SB3's ``Monitor`` reports them;
    an episode's task is the task of its last step (as the single-run training callback records it).
    """

    def __init__(self, n_members: int) -> None:
        self.returns = np.zeros(n_members, dtype=np.float64)
        self.lengths = np.zeros(n_members, dtype=np.int64)
        #: Current task per member (-1 before any env reported one).
        self.task = np.full(n_members, -1, dtype=np.int64)
        self.episodes: list[Episode] = []
        self.switches: list[TaskSwitch] = []

    def update(self, step: int, rewards: np.ndarray, done: np.ndarray, infos: Mapping[str, Any]) -> None:
        """Account one env step of every member (``step``: the env step count after it)."""
        self.returns += rewards
        self.lengths += 1
        tasks = step_task_ids(infos, done)
        if tasks is not None:
            changed = (tasks != self.task) & (tasks >= 0)
            if changed.any():
                for i in np.flatnonzero(changed & (self.task >= 0)):
                    self.switches.append(TaskSwitch(int(i), step, int(tasks[i])))
                self.task = np.where(changed, tasks, self.task)
        if done.any():
            for i in np.flatnonzero(done):
                task = int(self.task[i])
                self.episodes.append(
                    Episode(
                        int(i), step, round(float(self.returns[i]), 6), int(self.lengths[i]), max(task, 0)
                    )
                )
            self.returns[done] = 0.0
            self.lengths[done] = 0

    def pop_episodes(self) -> list[Episode]:
        """Episodes finished since the last call."""
        out, self.episodes = self.episodes, []
        return out

    def pop_switches(self) -> list[TaskSwitch]:
        """Task switches since the last call."""
        out, self.switches = self.switches, []
        return out
