"""Task switches and finished episodes."""

from __future__ import annotations

import math
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rlplast.callbacks.base import RunCallback, StepRecord
from rlplast.io import append_line

if TYPE_CHECKING:
    from rlplast.agents import PlasticDQN

#: The header line of ``episodes.csv``.
EPISODES_HEADER = "step,episode_return,episode_length,task_id"


class TaskSwitches(RunCallback):
    """Runs the agent's interventions' task-switch hooks when the env reports a new ``task_id``."""

    model: PlasticDQN

    def on_task_switch(self, task_id: int) -> None:
        """Pass the switch to the agent (:meth:`~rlplast.agents.PlasticDQN.notify_task_switch`)."""
        self.model.notify_task_switch(task_id)


class EpisodeLog(RunCallback):
    """Finished episodes: ``episodes.csv`` rows, returns per task and the window of recent episodes.

    Rows are kept in memory and appended with one write by :meth:`flush` (at every logging row
    and before every checkpoint, so the file always matches the latest checkpoint).

    Args:
        path: ``episodes.csv`` (its header is written when a new run starts).
        window_size: how many recent episodes the rollout means average over (SB3's
            ``stats_window_size``).
        record: the step record (the task of each episode).
    """

    def __init__(self, path: str | Path, window_size: int, record: StepRecord) -> None:
        super().__init__()
        self.path = Path(path)
        self.record = record
        self.window: deque[tuple[float, int]] = deque(maxlen=window_size)
        self.task_returns: dict[int, list[float]] = {}
        self.all_returns: list[float] = []
        self.pending: list[str] = []
        self.resumed = False

    def _on_training_start(self) -> None:
        if not self.resumed:
            append_line(self.path, EPISODES_HEADER)

    def on_episode_end(self, step: int, episode_return: float, length: int) -> None:
        """Record an episode that ended at env step ``step`` (its task: the step record's)."""
        task = self.record.task_id
        if task is None:
            task = 0
        self.window.append((episode_return, length))
        self.all_returns.append(episode_return)
        self.task_returns.setdefault(task, []).append(episode_return)
        self.pending.append(f"{step},{episode_return!r},{length},{task}")

    def _on_training_end(self) -> None:
        self.flush()

    def flush(self) -> None:
        """Append the pending rows to ``episodes.csv``."""
        if self.pending:
            append_line(self.path, "\n".join(self.pending))
            self.pending = []

    # ------------------------------------------------------------------ statistics
    @property
    def count(self) -> int:
        """Episodes finished so far."""
        return len(self.all_returns)

    def window_return(self) -> float:
        """Mean return of the recent episodes (NaN before the first)."""
        return float(np.mean([r for r, _ in self.window])) if self.window else math.nan

    def window_length(self) -> float:
        """Mean length of the recent episodes (NaN before the first)."""
        return float(np.mean([n for _, n in self.window])) if self.window else math.nan

    def mean_return(self) -> float | None:
        """Mean return over all episodes (None before the first)."""
        return float(sum(self.all_returns) / len(self.all_returns)) if self.all_returns else None

    def returns_per_task(self) -> dict[str, float]:
        """Mean return of each task's episodes, keyed by task id as a string."""
        return {str(k): float(np.mean(v)) for k, v in sorted(self.task_returns.items())}

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"task_returns": self.task_returns, "all_returns": self.all_returns, "window": self.window}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.task_returns = state["task_returns"]
        self.all_returns = state["all_returns"]
        self.window = state["window"]
        self.resumed = True
