"""One job of a sweep: its payload, its result, and the function a worker runs for it.

A job's payload is the run's **resolved config as text** (what :func:`rlplast.config.dump_config`
writes to ``config.yaml``) and its run directory. Workers never read the user's YAML files, so the
run trains exactly the config that was planned and hashed, whatever happens to those files while the
sweep runs. Both backends (:mod:`rlplast.sweep.local`, :mod:`rlplast.sweep.ray`) run :func:`run_job`.
"""

from __future__ import annotations

import contextlib
import signal
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import yaml

from rlplast.config import Config, config_from_dict
from rlplast.errors import TrainingStopped, UserError
from rlplast.io import atomic_write_text

if TYPE_CHECKING:
    from rlplast.sweep.plan import RunSpec


@dataclass(frozen=True)
class Job:
    """What a worker trains (picklable, so it travels through a pipe or to a Ray task).

    Attributes:
        config_text: the resolved config as YAML; the run's ``config.yaml`` will be this text.
        run_dir: the run directory.
    """

    config_text: str
    run_dir: str


@dataclass
class JobResult:
    """How a job ended.

    Attributes:
        ok: the run finished and wrote ``summary.json``.
        wall_time_s: the job's wall time in its worker.
        error: one line saying why it did not finish (the traceback is in ``<run_dir>/error.txt``).
        stopped: a stop request ended it (after a checkpoint, if it was training): the run is
            ``interrupted``, not ``failed``, and continues on a rerun.
        summary: the run's summary (``ok`` only).
    """

    ok: bool
    wall_time_s: float = 0.0
    error: str | None = None
    stopped: bool = False
    summary: dict[str, Any] | None = None


class JobListener(Protocol):
    """What a backend tells the sweep about each job (see :class:`rlplast.sweep.compare.SweepRecorder`)."""

    def on_start(self, spec: RunSpec) -> None:
        """``spec`` was handed to a worker (or submitted)."""

    def on_end(self, spec: RunSpec, result: JobResult) -> None:
        """``spec``'s job ended with ``result``."""


def config_from_text(text: str) -> Config:
    """The :class:`~rlplast.config.Config` of a job's payload (a ``dump_config`` text)."""
    return config_from_dict(yaml.safe_load(text))


def run_job(job: Job, signals: Sequence[int] = ()) -> JobResult:
    """Train one run of the grid (in a worker). Never raises for a training failure.

    A run directory holding a checkpoint of the same config continues from it (as
    ``rlplast train --resume``); otherwise the run starts from scratch.

    Args:
        job: the payload.
        signals: stop signals the worker received so far (a list its signal handler appends to);
            when one arrived before training starts, the run is skipped as stopped.

    Returns:
        ``ok`` with the summary; a failure with one line (the full traceback is written to
        ``<run_dir>/error.txt``); or, when a signal stopped the run (after its checkpoint), ``stopped``.
    """
    from rlplast.threads import set_cpu_threads
    from rlplast.train import resume_training, run_training

    set_cpu_threads(1)
    start = time.perf_counter()
    try:
        cfg = config_from_text(job.config_text)
        if signals:  # stopped while starting up: nothing to checkpoint yet
            return _stopped(f"received {signal.Signals(signals[0]).name} before training", start)
        summary = None
        if resumable(Path(job.run_dir), job.config_text):
            with contextlib.suppress(UserError):  # every checkpoint corrupt: start again below
                summary = resume_training(job.run_dir, quiet=True)
        if summary is None:
            summary = run_training(cfg, job.run_dir, overwrite=True, quiet=True)
        return JobResult(ok=True, wall_time_s=time.perf_counter() - start, summary=summary)
    except TrainingStopped as exc:
        if exc.exit_code > 128:  # a signal: the checkpoint is written, the run continues on a rerun
            return _stopped(str(exc).splitlines()[0].split("; continue with")[0], start)
        return _failure(job.run_dir, exc, start)
    except BaseException as exc:  # noqa: BLE001 - a worker reports every failure to the parent
        if isinstance(exc, KeyboardInterrupt):
            raise
        return _failure(job.run_dir, exc, start)


def resumable(run_dir: Path, config_text: str) -> bool:
    """An unfinished run of the same config with a checkpoint: continue it instead of restarting."""
    from rlplast.checkpoint import list_checkpoints

    if (run_dir / "summary.json").exists() or not (run_dir / "config.yaml").is_file():
        return False
    if (run_dir / "config.yaml").read_text() != config_text:
        return False
    return (run_dir / "checkpoints").is_dir() and bool(list_checkpoints(run_dir / "checkpoints"))


def _stopped(message: str, start: float) -> JobResult:
    return JobResult(ok=False, stopped=True, error=message, wall_time_s=time.perf_counter() - start)


def _failure(run_dir: str, exc: BaseException, start: float) -> JobResult:
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(run_dir) / "error.txt", traceback.format_exc())
    line = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    return JobResult(ok=False, error=line, wall_time_s=time.perf_counter() - start)
