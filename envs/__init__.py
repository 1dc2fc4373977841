"""Shifting environments: task-sequence wrappers registered under the ``rlplast/`` namespace.

Importing this package registers the ``rlplast/...`` ids with Gymnasium (see ``list_envs()``).
``GameSequence``/``MinAtarGames`` live in :mod:`rlplast.envs.game_sequence` (MinAtar is imported
only when such an env is built).
"""

from __future__ import annotations

from rlplast.envs.change_dynamics import DYNAMICS, ChangeDynamics
from rlplast.envs.factory import make_env
from rlplast.envs.game_sequence import GameSequence, MinAtarGames
from rlplast.envs.offset_observation import OffsetObservation
from rlplast.envs.permute_actions import PermuteActions
from rlplast.envs.permute_observation import PermuteObservation
from rlplast.envs.registration import ENVS, format_env_table, list_envs, register_envs
from rlplast.envs.schedule import TaskSequenceWrapper, find_task_wrapper, task_rng

register_envs()

__all__ = [
    "DYNAMICS",
    "ENVS",
    "ChangeDynamics",
    "GameSequence",
    "MinAtarGames",
    "OffsetObservation",
    "PermuteActions",
    "PermuteObservation",
    "TaskSequenceWrapper",
    "find_task_wrapper",
    "format_env_table",
    "list_envs",
    "make_env",
    "register_envs",
    "task_rng",
]
