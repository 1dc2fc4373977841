"""The task schedule shared by every shifting environment, and the wrapper lifecycle.

Semantics (one clock per env copy, never reset by episode ends):

* ``t`` counts the ``step()`` calls made so far (0-based; the first call is step 0).
* The *block* of step ``t`` is ``t // steps_per_task``; the block maps to a task with
  ``after_last="cycle"`` → ``block % n_tasks`` or ``after_last="hold"`` → ``min(block, n_tasks - 1)``.
* ``switch_at="step"``: step ``t`` runs under the task of its block. With ``steps_per_task=100``,
  steps 0..99 (the first 100 calls) run under task 0 and the 101st call (step 100) is the first step
  of task 1. A ``reset()`` also applies a switch that is due, so an episode that ends exactly at the
  boundary starts the next one already in the new task.
* ``switch_at="episode"``: when the clock enters a new block the switch becomes *pending*; it is
  applied by the next ``reset()``, which then starts the first episode of the block's task (tasks are
  taken from the clock, so several boundaries crossed inside one long episode skip tasks).

``info["task_id"]`` is the task under which a ``step()`` ran, or under which a ``reset()`` returned its
observation. Task ``k``'s parameters are a pure function of ``(seed, k)``; see :func:`task_rng`.

Lifecycle of a :class:`TaskSequenceWrapper` subclass (the hooks it may override):

* ``__init__``: call ``super().__init__(env, **schedule)``, then set up state (task 0's values).
* :meth:`~TaskSequenceWrapper.apply_task` ``(k)``: called with ``k = 0`` as soon as construction is
  complete, then whenever a task is applied: a due switch (at the start of the first ``step()`` of
  the new block with ``switch_at="step"``; in the next ``reset()`` with ``"episode"``), a
  :meth:`~TaskSequenceWrapper.set_task` or a :meth:`~TaskSequenceWrapper.load_schedule_state`.
* :meth:`~TaskSequenceWrapper.action` ``(a)``, :meth:`~TaskSequenceWrapper.observation` ``(obs)``,
  :meth:`~TaskSequenceWrapper.reward` ``(r)``: transformations (identity by default), applied on
  every step (``observation`` also on every reset) under the task that step runs under, the one
  ``info["task_id"]`` reports: a switch is applied before the action of its first step is
  transformed, never between a step's action and its observation and reward.
"""

from __future__ import annotations

import abc
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from rlplast.errors import UserError

SWITCH_AT = ("step", "episode")
AFTER_LAST = ("cycle", "hold")


def task_rng(seed: int, task: int) -> np.random.Generator:
    """Return the random generator that draws task ``task``'s parameters.

    A pure function of ``(seed, task)``, so every copy of an env and every resumed run agrees.

    Args:
        seed: The schedule seed (not the episode seed given to ``reset``).
        task: The task index ``k >= 0``.

    Returns:
        A fresh ``numpy`` generator seeded with ``[seed, task]``.
    """
    return np.random.default_rng([int(seed), int(task)])


def check_schedule_args(
    steps_per_task: Any, n_tasks: Any, switch_at: Any, after_last: Any, seed: Any = 0
) -> None:
    """Raise :class:`UserError` with a one-line message when a schedule argument is invalid."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"seed (the schedule seed) must be an integer >= 0, got {seed!r}")
    if isinstance(steps_per_task, bool) or not isinstance(steps_per_task, (int, np.integer)):
        raise UserError(f"steps_per_task must be a positive integer, got {steps_per_task!r}")
    if steps_per_task <= 0:
        raise UserError(f"steps_per_task must be a positive integer, got {steps_per_task}")
    if isinstance(n_tasks, bool) or not isinstance(n_tasks, (int, np.integer)) or n_tasks < 1:
        raise UserError(f"n_tasks must be an integer >= 1, got {n_tasks!r}")
    if switch_at not in SWITCH_AT:
        raise UserError(f"switch_at must be one of {', '.join(SWITCH_AT)}; got {switch_at!r}")
    if after_last not in AFTER_LAST:
        raise UserError(f"after_last must be one of {', '.join(AFTER_LAST)}; got {after_last!r}")


class _AppliesTheFirstTask(abc.ABCMeta):
    """Applies task 0 once a wrapper's construction is complete (its outermost ``__init__`` returned)."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        wrapper = super().__call__(*args, **kwargs)
        wrapper._apply_first_task()
        return wrapper


class TaskSequenceWrapper(gym.Wrapper, metaclass=_AppliesTheFirstTask):
    """Base wrapper that runs an env through a sequence of tasks on a global step clock.

    Subclasses implement :meth:`apply_task` and override the :meth:`observation`, :meth:`action`
    or :meth:`reward` transformation they need; the base class owns the clock, the switching and
    ``info["task_id"]``, and applies task 0 right after construction. See the module docstring for
    the lifecycle and the exact switching semantics.

    Example:
        >>> import gymnasium as gym
        >>> from rlplast.envs import PermuteObservation
        >>> env = PermuteObservation(gym.make("CartPole-v1"), steps_per_task=2, n_tasks=3)
        >>> _, info = env.reset(seed=0)
        >>> [env.step(0)[4]["task_id"] for _ in range(5)]
        [0, 0, 1, 1, 2]

    Args:
        env: The environment to wrap.
        steps_per_task: Steps of the clock per task (> 0).
        n_tasks: Number of distinct tasks (>= 1); task 0 is the unshifted env.
        seed: Schedule seed; task ``k``'s parameters come from ``task_rng(seed, k)``.
        switch_at: ``"step"`` (switch exactly at the boundary) or ``"episode"`` (at the next reset).
        after_last: ``"cycle"`` (back to task 0) or ``"hold"`` (stay in the last task).
    """

    def __init__(
        self,
        env: gym.Env,
        steps_per_task: int = 20_000,
        n_tasks: int = 10,
        seed: int = 0,
        switch_at: str = "step",
        after_last: str = "cycle",
    ) -> None:
        check_schedule_args(steps_per_task, n_tasks, switch_at, after_last, seed)
        super().__init__(env)
        self.steps_per_task = int(steps_per_task)
        self.n_tasks = int(n_tasks)
        self.task_seed = int(seed)
        self.switch_at = switch_at
        self.after_last = after_last
        self._t = 0
        self._block = 0
        self._task = 0
        self._task_applied = False

    # --- to implement -------------------------------------------------------------------------
    @abc.abstractmethod
    def apply_task(self, task: int) -> None:
        """Make ``task`` the active task (draw its parameters with ``task_rng(self.task_seed, task)``).

        Called with task 0 right after construction, then whenever a task is applied (a due
        switch, :meth:`set_task`, :meth:`load_schedule_state`); :attr:`task_id` is already
        ``task`` during the call. Task 0 should be the unshifted env.
        """

    def observation(self, observation: Any) -> Any:
        """Transform an observation of the wrapped env (identity by default).

        Called on every ``step()`` and ``reset()``, under the task that step or reset runs under.
        """
        return observation

    def action(self, action: Any) -> Any:
        """Transform an agent action into one of the wrapped env (identity by default).

        Called on every ``step()`` before the wrapped env steps, under the task the step runs under.
        """
        return action

    def reward(self, reward: SupportsFloat) -> SupportsFloat:
        """Transform the reward of a step (identity by default).

        Called on every ``step()``, under the task the step ran under (``info["task_id"]``).
        """
        return reward

    def _apply_first_task(self) -> None:
        """Apply task 0 unless a task was applied already (called once construction is complete)."""
        if not self.__dict__.get("_task_applied", False):
            self.set_task(self._task)

    def _init_task(self) -> None:
        """Apply task 0 now. Not needed any more: construction applies it (kept for older subclasses)."""
        self.set_task(self._task)

    # --- schedule -----------------------------------------------------------------------------
    @property
    def task_id(self) -> int:
        """The active task."""
        return self._task

    @property
    def total_steps(self) -> int:
        """Number of ``step()`` calls made so far (the clock)."""
        return self._t

    def task_for_block(self, block: int) -> int:
        """Map a clock block (``t // steps_per_task``) to a task index."""
        if self.after_last == "cycle":
            return block % self.n_tasks
        return min(block, self.n_tasks - 1)

    def set_task(self, task: int) -> None:
        """Apply ``task`` now; the schedule resumes switching at the next clock boundary."""
        if isinstance(task, bool) or not isinstance(task, (int, np.integer)) or not 0 <= task < self.n_tasks:
            raise UserError(f"task must be an integer in [0, n_tasks={self.n_tasks}), got {task!r}")
        self._task = int(task)
        self._task_applied = True
        self.apply_task(self._task)

    @property
    def switch_pending(self) -> bool:
        """Whether the clock has entered a new block whose switch is not applied yet."""
        return self._t // self.steps_per_task != self._block

    def _maybe_switch(self) -> None:
        block = self._t // self.steps_per_task
        if block != self._block:
            self._block = block
            task = self.task_for_block(block)
            if task != self._task:
                self.set_task(task)

    def schedule_state(self) -> dict[str, Any]:
        """Return the schedule's JSON-serialisable state (for checkpoints)."""
        return {
            "step": self._t,
            "task_id": self._task,
            "block": self._block,
            "pending": self.switch_pending,
        }

    def load_schedule_state(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`schedule_state` (re-applies its task; ``pending`` is derived)."""
        try:
            step, task, block = int(state["step"]), int(state["task_id"]), int(state["block"])
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"bad schedule state {state!r}: needs integer step, task_id, block") from e
        if step < 0 or task < 0 or block < 0:
            raise UserError(f"bad schedule state {state!r}: values must be >= 0")
        self._t, self._block = step, block
        self.set_task(task)

    # --- gymnasium API ------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Apply a due switch, reset the wrapped env and report ``info["task_id"]``."""
        self.prepare_reset()
        return self.finish_reset(*self.env.reset(seed=seed, options=options))

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step under the scheduled task, advance the clock and report ``info["task_id"]``."""
        return self.finish_step(*self.env.step(self.prepare_step(action)))

    # --- the two halves of step() and reset() -------------------------------------------------
    # step() is finish_step(*self.env.step(prepare_step(action))) and reset() is
    # prepare_reset(), then finish_reset(*self.env.reset(...)): a vector env that steps the wrapped
    # envs of several copies together (rlplast.envs.cartpole_batch) calls the halves around its own
    # step, so each copy's clock, switches and transformations are this class's.
    def prepare_step(self, action: Any) -> Any:
        """Apply a due switch (``switch_at="step"``); return the wrapped env's action."""
        if self.switch_at == "step":
            self._maybe_switch()
        return self.action(action)

    def finish_step(
        self, obs: Any, reward: SupportsFloat, terminated: bool, truncated: bool, info: dict[str, Any]
    ) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Advance the clock; transform what the wrapped env's step returned; add ``task_id``."""
        self._t += 1
        info = dict(info)
        info["task_id"] = self._task
        return self.observation(obs), self.reward(reward), terminated, truncated, info

    def prepare_reset(self) -> None:
        """Apply a due switch before the wrapped env resets."""
        self._maybe_switch()

    def finish_reset(self, obs: Any, info: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Transform what the wrapped env's reset returned; add ``task_id``."""
        info = dict(info)
        info["task_id"] = self._task
        return self.observation(obs), info


def find_task_wrapper(env: gym.Env) -> TaskSequenceWrapper:
    """Return the :class:`TaskSequenceWrapper` inside ``env`` (e.g. under ``gym.make``'s wrappers).

    Raises:
        UserError: If ``env`` contains no task-sequence wrapper.
    """
    current: Any = env
    while current is not None:
        if isinstance(current, TaskSequenceWrapper):
            return current
        current = getattr(current, "env", None)
    raise UserError(f"{env} has no TaskSequenceWrapper (not a shifting environment)")
