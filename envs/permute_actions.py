"""PermuteActions: a random permutation of the Discrete action indices per task."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rlplast.envs.permute_observation import draw_permutation
from rlplast.envs.schedule import TaskSequenceWrapper, task_rng
from rlplast.errors import UserError


class PermuteActions(TaskSequenceWrapper):
    """Relabel the actions of a Discrete action space with one permutation per task.

    The RL analogue of label shuffling: the agent's action ``a`` runs the wrapped env's action
    ``start + permutation[a - start]``. Task 0 is the identity; every later task draws a
    non-identity permutation from ``task_rng(seed, k)`` (when there are at least 2 actions).

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
        self._init_task()

    def apply_task(self, task: int) -> None:
        """Use task ``task``'s permutation (the identity for task 0)."""
        if task == 0:
            self.permutation = np.arange(self._n)
        else:
            self.permutation = draw_permutation(task_rng(self.task_seed, task), self._n)

    def action(self, action: Any) -> np.int64:
        """Map the agent's action index to the wrapped env's action index."""
        return np.int64(self._start + self.permutation[int(action) - self._start])
