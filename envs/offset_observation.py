"""OffsetObservation: a constant Gaussian offset added to the observation per task."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rlplast.envs.schedule import TaskSequenceWrapper, task_rng
from rlplast.errors import UserError


class OffsetObservation(TaskSequenceWrapper):
    """Add a per-task offset ``eps_k ~ N(0, sigma^2 I)`` to every observation (TRAC / C-CHAIN setup).

    Task 0 has no offset; task ``k >= 1`` draws ``eps_k`` from ``task_rng(seed, k)``. The offsets of all
    ``n_tasks`` tasks are known in advance, so the observation space's finite bounds are widened by the
    smallest and largest offset of each entry (infinite bounds stay infinite).

    Example:
        >>> import gymnasium as gym
        >>> from rlplast.envs import OffsetObservation
        >>> env = OffsetObservation(gym.make("CartPole-v1"), sigma=2.0, steps_per_task=100, n_tasks=10)
        >>> env.set_task(3)
        >>> env.offset.shape
        (4,)

    Args:
        env: An env with a floating-point ``Box`` observation space.
        sigma: Standard deviation of each offset entry (default 2.0).
        **schedule: ``steps_per_task``, ``n_tasks``, ``seed``, ``switch_at``, ``after_last``
            (see :class:`~rlplast.envs.schedule.TaskSequenceWrapper`).
    """

    def __init__(self, env: gym.Env, sigma: float = 2.0, **schedule: Any) -> None:
        super().__init__(env, **schedule)
        space = env.observation_space
        if not isinstance(space, spaces.Box) or not np.issubdtype(space.dtype, np.floating):
            raise UserError(f"OffsetObservation needs a floating-point Box observation space, got {space}")
        if not np.isfinite(sigma) or sigma < 0:
            raise UserError(f"sigma must be a finite number >= 0, got {sigma!r}")
        self.sigma = float(sigma)
        self._dtype = space.dtype
        offsets = np.stack([self._draw(k, space.shape) for k in range(self.n_tasks)])
        with np.errstate(invalid="ignore"):
            low = (space.low + offsets.min(axis=0)).astype(space.dtype)
            high = (space.high + offsets.max(axis=0)).astype(space.dtype)
        self.observation_space = spaces.Box(low=low, high=high, dtype=space.dtype)
        self.offset = np.zeros(space.shape, dtype=space.dtype)

    def _draw(self, task: int, shape: tuple[int, ...]) -> np.ndarray:
        if task == 0:
            return np.zeros(shape, dtype=self._dtype)
        return task_rng(self.task_seed, task).normal(0.0, self.sigma, size=shape).astype(self._dtype)

    def apply_task(self, task: int) -> None:
        """Use task ``task``'s offset (zero for task 0)."""
        self.offset = self._draw(task, self.offset.shape)

    def observation(self, observation: Any) -> np.ndarray:
        """Return ``observation + offset`` in the space's dtype."""
        return (np.asarray(observation) + self.offset).astype(self._dtype)
