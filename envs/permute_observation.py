"""PermuteObservation: a fixed random permutation of the observation vector per task."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rlplast.envs.schedule import TaskSequenceWrapper, task_rng
from rlplast.errors import UserError


def draw_permutation(rng: np.random.Generator, n: int) -> np.ndarray:
    """Draw a permutation of ``range(n)`` that is not the identity (when ``n >= 2``)."""
    identity = np.arange(n)
    perm = rng.permutation(n)
    while n >= 2 and np.array_equal(perm, identity):
        perm = rng.permutation(n)
    return perm


class PermuteObservation(TaskSequenceWrapper):
    """Shuffle the entries of a Box observation with one fixed permutation per task.

    The RL analogue of permuted MNIST. The observation is flattened, permuted and reshaped;
    task 0 is the identity and every later task draws a non-identity permutation from
    ``task_rng(seed, k)``. Because each entry can land in any position, the observation space
    becomes a Box of the same shape and dtype whose bounds are the min/max of the original bounds.

    Example:
        >>> import gymnasium as gym
        >>> from rlplast.envs import PermuteObservation
        >>> env = PermuteObservation(gym.make("CartPole-v1"), steps_per_task=100, n_tasks=5, seed=0)
        >>> obs, info = env.reset(seed=1)
        >>> obs.shape, info["task_id"]
        ((4,), 0)

    Args:
        env: An env with a ``Box`` observation space.
        **schedule: ``steps_per_task``, ``n_tasks``, ``seed``, ``switch_at``, ``after_last``
            (see :class:`~rlplast.envs.schedule.TaskSequenceWrapper`).
    """

    def __init__(self, env: gym.Env, **schedule: Any) -> None:
        super().__init__(env, **schedule)
        space = env.observation_space
        if not isinstance(space, spaces.Box):
            raise UserError(f"PermuteObservation needs a Box observation space, got {space}")
        self._shape = space.shape
        self._size = int(np.prod(space.shape))
        self.observation_space = spaces.Box(
            low=np.full(space.shape, np.min(space.low), dtype=space.dtype),
            high=np.full(space.shape, np.max(space.high), dtype=space.dtype),
            dtype=space.dtype,
        )
        self.permutation = np.arange(self._size)
        self._init_task()

    def apply_task(self, task: int) -> None:
        """Use task ``task``'s permutation (the identity for task 0)."""
        if task == 0:
            self.permutation = np.arange(self._size)
        else:
            self.permutation = draw_permutation(task_rng(self.task_seed, task), self._size)

    def observation(self, observation: Any) -> np.ndarray:
        """Entry ``i`` of the output is entry ``permutation[i]`` of the flattened input."""
        flat = np.asarray(observation).reshape(-1)
        return flat[self.permutation].reshape(self._shape)
