"""PermuteActions: a random permutation of the Discrete action indices per task."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rlplast.envs.permute_observation import TaskPermutations
from rlplast.envs.schedule import TaskSequenceWrapper
from rlplast.errors import UserError


class PermuteActions(TaskSequenceWrapper):
    """Relabel the actions of a Discrete action space with one permutation per task.

    The RL analogue of label shuffling: the agent's action ``a`` runs the wrapped env's action
    ``start + permutation[a - start]``. Task 0 is the identity; every later task draws from
    ``task_rng(seed, k)`` a permutation no earlier task used, or, once all ``n!`` are used (2 actions:
    after task 1), one that differs from the previous task's, so every switch relabels the actions
    (:class:`~rlplast.envs.permute_observation.TaskPermutations`). With 2 actions the tasks
    alternate between the identity and the swap.

    Example:
        >>> import gymnasium as gym
        >>> from rlplast.envs import PermuteActions
        >>> env = PermuteActions(gym.make("Acrobot-v1"), steps_per_task=100, n_tasks=5, seed=0)
        >>> env.set_task(1)
        >>> sorted(int(env.action(a)) for a in range(3))
        [0, 1, 2]

    Args:
        env: An env with a ``Discrete`` action space.
        **schedule: ``steps_per_task``, ``n_tasks``, ``seed``, ``switch_at``, ``after_last``
            (see :class:`~rlplast.envs.schedule.TaskSequenceWrapper`).

    Raises:
        UserError: If the action space is not ``Discrete``.
    """

    def __init__(self, env: gym.Env, **schedule: Any) -> None:
        space = env.action_space
        if not isinstance(space, spaces.Discrete):
            raise UserError(f"PermuteActions needs a Discrete action space, got {space}")
        super().__init__(env, **schedule)
        self._n = int(space.n)
        self._start = int(space.start)
        self.permutation = np.arange(self._n)
        self._permutations = TaskPermutations(self.task_seed, self._n)

    def apply_task(self, task: int) -> None:
        """Use task ``task``'s permutation (the identity for task 0)."""
        if "_permutations" not in self.__dict__:  # unpickled from a checkpoint older than the cache
            self._permutations = TaskPermutations(self.task_seed, self._n)
        self.permutation = self._permutations(task)

    def action(self, action: Any) -> np.int64:
        """Map the agent's action index to the wrapped env's action index."""
        return np.int64(self._start + self.permutation[int(action) - self._start])
