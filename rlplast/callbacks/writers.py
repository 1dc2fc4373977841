"""The callbacks that write one run directory, composed once for every engine.

``rlplast train`` (one PlasticDQN) and the population engine (one run directory per member) write
the same files with the same columns because both build them here: the step record, the episode
log (``episodes.csv``), the logging rows (``metrics.csv`` / TensorBoard) with their row callbacks —
the non-finite guard, the metrics and the evaluation — in one order. Each engine adds what is its
own: the single run its task-switch hook, progress bar and checkpoints; the population its own
checkpoints of all members.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlplast.callbacks.base import StepRecord, StopRequest
from rlplast.callbacks.episodes import EpisodeLog
from rlplast.callbacks.eval import Evaluation
from rlplast.callbacks.guard import NonFiniteGuard
from rlplast.callbacks.metrics import Metrics, MetricsProbe
from rlplast.callbacks.rows import LogRows, RowCallback

if TYPE_CHECKING:
    import gymnasium as gym

    from rlplast.config import Config
    from rlplast.runlog import RunLogger


@dataclass
class RunWriters:
    """One run directory's writers (see the module docstring); build them with :meth:`build`.

    Attributes:
        record: the current task (read by the episode log, the rows and the evaluation).
        episodes: ``episodes.csv``, returns per task, the window of recent episodes.
        rows: the logging rows.
        guard: the non-finite guard (a row callback).
        metrics: the collapse and plasticity columns (a row callback), or None without metrics.
        evaluation: the ``eval/…`` columns (a row callback), or None with ``eval.enabled: false``.
    """

    record: StepRecord
    episodes: EpisodeLog
    rows: LogRows
    guard: NonFiniteGuard
    metrics: Metrics | None = None
    evaluation: Evaluation | None = None

    @classmethod
    def build(
        cls,
        cfg: Config,
        run_dir: str | Path,
        run_logger: RunLogger,
        window: int,
        probe: MetricsProbe | None,
        stop: StopRequest,
        make_env: Callable[[], gym.Env],
        extra_row_callbacks: list[RowCallback] | None = None,
    ) -> RunWriters:
        """The writers of the run directory ``run_dir`` for ``cfg``.

        Args:
            cfg: the run's config.
            run_dir: the run directory.
            run_logger: where rows go.
            window: episodes the rollout means average over (``agent.stats_window_size``).
            probe: the metrics probe, or None without metrics.
            stop: the run's stop request (the guard requests a stop on non-finite values with
                ``train.on_nonfinite: stop``; no final row after a stop).
            make_env: makes a copy of the run's env (for the evaluation).
            extra_row_callbacks: called after the others with each row (e.g. the progress bar).
        """
        record = StepRecord()
        episodes = EpisodeLog(Path(run_dir) / "episodes.csv", window, record)
        metrics = Metrics(probe, cfg.metrics.every_steps) if probe is not None else None
        # greedy returns on every task seen so far, on env copies of its own (eval.enabled)
        evaluation = (
            Evaluation(cfg.eval, make_env, cfg.train.seed, record, cfg.train.total_steps)
            if cfg.eval.enabled
            else None
        )
        guard = NonFiniteGuard(stop if cfg.train.on_nonfinite == "stop" else None)
        row_callbacks: list[Any] = [c for c in (guard, metrics, evaluation) if c is not None]
        row_callbacks += list(extra_row_callbacks or [])
        rows = LogRows(run_logger, cfg.train.log_every_steps, record, episodes, stop, row_callbacks)
        return cls(record, episodes, rows, guard, metrics, evaluation)

    @property
    def callbacks(self) -> list[Any]:
        """The writers as a run's callbacks, in the order they are called."""
        children = [self.episodes, self.metrics, self.evaluation, self.guard, self.rows]
        return [c for c in children if c is not None]

    @property
    def parts(self) -> list[Any]:
        """The writers whose state a checkpoint keeps (:class:`~rlplast.callbacks.Stateful`)."""
        parts = [self.record, self.episodes, self.rows, self.metrics, self.evaluation]
        return [p for p in parts if p is not None]

    def close(self) -> None:
        """Release what the writers hold besides the run logger (the evaluation's env)."""
        if self.evaluation is not None:
            self.evaluation.close()
