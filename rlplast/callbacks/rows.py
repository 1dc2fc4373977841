"""Logging rows: one ``metrics.csv`` row (and TensorBoard point) every ``log_every_steps`` env steps."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from rlplast.callbacks.base import RunCallback, StepRecord, StopRequest
from rlplast.callbacks.episodes import EpisodeLog
from rlplast.runlog import RunLogger

if TYPE_CHECKING:
    from rlplast.agents import PlasticDQN


class RowCallback(Protocol):
    """Something that adds to, inspects or shows each logging row before it is written."""

    def on_row(self, step: int, previous_step: int, row: dict[str, Any]) -> None:
        """Called with the row of ``step``; ``previous_step`` is the step of the row before (0 at first)."""


class LogRows(RunCallback):
    """Writes a logging row whenever the step counter crosses a multiple of ``every_steps``, and
    a last row when training ends (unless stopped).

    A row holds the base columns of :data:`rlplast.runlog.BASE_COLUMNS`: wall clock, task, episode
    statistics, exploration rate and the agent's training statistics since the previous row
    (:meth:`~rlplast.agents.PlasticDQN.pop_train_stats`). ``train/loss`` and ``train/grad_norm``
    are left empty when no update happened since the previous row, the episode means before the
    first episode ends. ``row_callbacks`` then see the row in order (and may add columns) before it
    is written.

    Args:
        run_logger: where rows go.
        every_steps: env steps between rows (``train.log_every_steps``).
        record: the step record (the current task).
        episodes: the episode log (flushed before each row, so both files cover the same steps).
        stop: the run's stop request (no last row after a stop: the run is resumed from its checkpoint).
        row_callbacks: called with each row before it is written.
    """

    per_step = True
    model: PlasticDQN

    def __init__(
        self,
        run_logger: RunLogger,
        every_steps: int,
        record: StepRecord,
        episodes: EpisodeLog,
        stop: StopRequest,
        row_callbacks: Sequence[RowCallback] = (),
    ) -> None:
        super().__init__()
        self.run_logger = run_logger
        self.every = every_steps
        self.record = record
        self.episodes = episodes
        self.stop = stop
        self.row_callbacks = list(row_callbacks)
        self.last_log_step = 0
        self.last_n_updates = 0.0
        self.elapsed_before = 0.0  # wall time of earlier sessions of a resumed run
        self.start_time = 0.0
        self.last_time = 0.0

    def elapsed(self) -> float:
        """Wall-clock seconds of training, earlier sessions of a resumed run included."""
        return self.elapsed_before + (time.perf_counter() - self.start_time if self.start_time else 0.0)

    def _on_training_start(self) -> None:
        self.start_time = self.last_time = time.perf_counter()

    def _on_step(self) -> bool:
        step = self.num_timesteps
        if step // self.every > self.last_log_step // self.every:
            self.write_row(step)
        return True

    def _on_training_end(self) -> None:
        step = self.model.num_timesteps
        if self.stop.reason is None and step != self.last_log_step:
            self.write_row(step)

    def write_row(self, step: int) -> None:
        """Build, pass round and write the row of ``step``."""
        now = time.perf_counter()
        episodes = self.episodes
        episodes.flush()
        none_yet = episodes.count == 0
        row: dict[str, Any] = {
            "time_s": self.elapsed(),
            "steps_per_s": (step - self.last_log_step) / max(now - self.last_time, 1e-9),
            "shift/task_id": self.record.task,
            "rollout/episodes": episodes.count,
            "rollout/ep_return_mean": None if none_yet else episodes.window_return(),
            "rollout/ep_len_mean": None if none_yet else episodes.window_length(),
            "rollout/exploration_rate": float(self.model.exploration_rate),
        }
        row.update(self.model.pop_train_stats())
        if not row["train/n_updates"] > self.last_n_updates:  # no update since the previous row
            row["train/loss"] = row["train/grad_norm"] = None
        self.last_n_updates = row["train/n_updates"]
        for callback in self.row_callbacks:
            callback.on_row(step, self.last_log_step, row)
        self.run_logger.write(step, row)
        self.last_log_step = step
        self.last_time = time.perf_counter()

    def state_dict(self) -> dict[str, Any]:
        return {
            "last_log_step": self.last_log_step,
            "last_n_updates": self.last_n_updates,
            "elapsed_before": self.elapsed(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_log_step = state["last_log_step"]
        self.last_n_updates = state["last_n_updates"]
        self.elapsed_before = state["elapsed_before"]
