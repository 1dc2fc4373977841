"""A training run's callbacks: one job each, composed with SB3's ``CallbackList``.

* :class:`TaskSwitches` — the interventions' task-switch hooks when the env reports a new task;
* :class:`EpisodeLog` — ``episodes.csv``, returns per task, the window of recent episodes;
* :class:`LogRows` — a ``metrics.csv`` / TensorBoard row every ``train.log_every_steps``;
* :class:`Metrics` — collapse and plasticity columns every ``metrics.every_steps``;
* :class:`Evaluation` — greedy returns on every task seen so far every ``eval.every_steps``;
* :class:`NonFiniteGuard` — reports (and by default stops on) a non-finite loss, norm or parameter;
* :class:`Progress` — the progress bar;
* :class:`Checkpoints` — checkpoints at iteration ends; stops training when a stop is requested.

:class:`RunWriters` builds the callbacks that write a run directory (record, episodes, rows and
their row callbacks) once for both engines: ``rlplast train`` and the population engine.

:class:`RunCallbacks` (a ``CallbackList``) reads each env step's ``infos`` once into a shared
:class:`StepRecord` and calls each callback only for the events it defines (see
:mod:`rlplast.callbacks.base`); :func:`rlplast.train.train` puts them together.
"""

from rlplast.callbacks.base import RunCallback, RunCallbacks, Stateful, StepRecord, StopRequest
from rlplast.callbacks.checkpoints import Checkpoints, checkpoint_due
from rlplast.callbacks.episodes import EPISODES_HEADER, EpisodeLog, TaskSwitches
from rlplast.callbacks.eval import Evaluation
from rlplast.callbacks.guard import NonFiniteGuard
from rlplast.callbacks.metrics import Metrics, MetricsProbe
from rlplast.callbacks.progress import Progress
from rlplast.callbacks.rows import LogRows, RowCallback
from rlplast.callbacks.writers import RunWriters

__all__ = [
    "EPISODES_HEADER",
    "Checkpoints",
    "EpisodeLog",
    "Evaluation",
    "LogRows",
    "Metrics",
    "MetricsProbe",
    "NonFiniteGuard",
    "Progress",
    "RowCallback",
    "RunCallback",
    "RunCallbacks",
    "RunWriters",
    "Stateful",
    "StepRecord",
    "StopRequest",
    "TaskSwitches",
    "checkpoint_due",
]
