"""PermuteObservation: a fixed random permutation of the observation vector per task."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rlplast.envs.schedule import TaskSequenceWrapper, task_rng
from rlplast.errors import UserError


def _count_permutations(n: int) -> float:
    return float(math.factorial(n)) if n <= 20 else math.inf


class TaskPermutations:
    """The permutation of each task: task 0 is the identity, every later task a new one.

    Task ``k >= 1`` draws from ``task_rng(seed, k)`` until the permutation differs from those of
    all earlier tasks (so never the identity); once all ``n!`` permutations are used (a small ``n``,
    e.g. 2 actions) it only has to differ from task ``k − 1``'s, so every switch changes the task.
    The sequence is a pure function of ``(seed, n)``, computed once per task and cached.

    Args:
        seed: The schedule seed.
        n: The number of permuted entries.
    """

    def __init__(self, seed: int, n: int) -> None:
        self.seed, self.n = int(seed), int(n)
        self._perms: list[np.ndarray] = [np.arange(self.n)]
        self._seen: set[bytes] = {self._perms[0].tobytes()}

    def __call__(self, task: int) -> np.ndarray:
        """Task ``task``'s permutation (a fresh copy)."""
        while len(self._perms) <= task:
            k = len(self._perms)
            previous = self._perms[-1]
            fresh = len(self._seen) < _count_permutations(self.n)
            rng = task_rng(self.seed, k)
            perm = rng.permutation(self.n)
            if self.n >= 2:
                while (perm.tobytes() in self._seen) if fresh else np.array_equal(perm, previous):
                    perm = rng.permutation(self.n)
            self._perms.append(perm)
            self._seen.add(perm.tobytes())
        return self._perms[task].copy()


class PermuteObservation(TaskSequenceWrapper):
    """Shuffle the entries of a Box observation with one fixed permutation per task.

    The RL analogue of permuted MNIST. The observation is flattened, permuted and reshaped;
    task 0 is the identity and every later task draws a permutation that no earlier task used from
    ``task_rng(seed, k)`` (:class:`TaskPermutations`). Because each entry can land in any position, the observation space
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
        self._permutations = TaskPermutations(self.task_seed, self._size)

    def apply_task(self, task: int) -> None:
        """Use task ``task``'s permutation (the identity for task 0)."""
        if "_permutations" not in self.__dict__:  # unpickled from a checkpoint older than the cache
            self._permutations = TaskPermutations(self.task_seed, self._size)
        self.permutation = self._permutations(task)

    def observation(self, observation: Any) -> np.ndarray:
        """Entry ``i`` of the output is entry ``permutation[i]`` of the flattened input."""
        flat = np.asarray(observation).reshape(-1)
        return flat[self.permutation].reshape(self._shape)
