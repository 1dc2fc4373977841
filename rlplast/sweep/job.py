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
from rlplast.errors import TrainingStopped, UserError, exception_text
from rlplast.io import atomic_write_text

if TYPE_CHECKING:
    from rlplast.sweep.plan import RunSpec


@dataclass(frozen=True)
class Job:
    """What a worker trains (picklable, so it travels through a pipe or to a Ray task).

    Attributes:
        config_text: the resolved config as YAML; the run's ``config.yaml`` will be this text.
        run_dir: the run directory.
        trust_checkpoint: continue from a checkpoint this user's key did not sign
            (``rlplast compare --trust-checkpoint``).
    """

    config_text: str
    run_dir: str
    trust_checkpoint: bool = False


@dataclass(frozen=True)
class PopulationJob:
    """What a worker trains with the population engine: the members of one method, in one process.

    Attributes:
        members: each member's :class:`Job` (resolved config text and run directory), in seed order.
        population_dir: the population's directory (its ``population.json`` and ``checkpoints/``).
        trust_checkpoint: continue from a checkpoint this user's key did not sign
            (``rlplast compare --trust-checkpoint``).
    """

    members: tuple[Job, ...]
    population_dir: str
    trust_checkpoint: bool = False


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


def execute(job: Job | PopulationJob, signals: Sequence[int] = ()) -> list[JobResult]:
    """Train a job (in a worker): one result per run, in the job's order. Never raises for a
    training failure (see :func:`run_job` and :func:`run_population_job`)."""
    if isinstance(job, PopulationJob):
        return run_population_job(job, signals)
    return [run_job(job, signals)]


def runs_of(job: Job | PopulationJob) -> int:
    """How many runs a job trains (and results it returns)."""
    return len(job.members) if isinstance(job, PopulationJob) else 1


def run_job(job: Job, signals: Sequence[int] = ()) -> JobResult:
    """Train one run of the grid (in a worker). Never raises for a training failure.

    A run directory holding a checkpoint of the same config continues from it (as
    ``rlplast train --resume``); otherwise the run starts from scratch. A checkpoint that this
    user's key did not sign (without ``job.trust_checkpoint``) fails the run: it is never replaced.

    Args:
        job: the payload.
        signals: stop signals the worker received so far (a list its signal handler appends to);
            when one arrived before training starts, the run is skipped as stopped.

    Returns:
        ``ok`` with the summary; a failure with one line (the full traceback is written to
        ``<run_dir>/error.txt``); or, when a signal stopped the run (after its checkpoint), ``stopped``.
    """
    from rlplast.checkpoint import UntrustedCheckpoint
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
            try:
                summary = resume_training(job.run_dir, quiet=True, trust_checkpoint=job.trust_checkpoint)
            except UntrustedCheckpoint:
                raise  # someone else's run: a failure, never replaced by a fresh one
            except UserError:
                pass  # every checkpoint corrupt: start again below
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


def run_population_job(job: PopulationJob, signals: Sequence[int] = ()) -> list[JobResult]:
    """Train the members of a population job (in a worker). Never raises for a training failure.

    A population directory holding checkpoints of exactly these members and configs continues from
    them (:func:`rlplast.population.run.resume_population`); otherwise the members start from
    scratch (their partial run directories and the population's checkpoints are replaced). A member
    that fails on its own is reported failed while the others finish; a failure of the whole
    population fails every member (each gets ``error.txt``).

    Args:
        job: the payload.
        signals: stop signals the worker received so far (see :func:`run_job`).

    Returns:
        One result per member, in the job's order; all ``stopped`` when a signal stopped the
        population (after its checkpoint).
    """
    from rlplast.checkpoint import UntrustedCheckpoint
    from rlplast.population.run import population_resumable, resume_population, run_population
    from rlplast.threads import set_cpu_threads

    set_cpu_threads(1)
    start = time.perf_counter()
    n = len(job.members)
    run_dirs = [Path(m.run_dir) for m in job.members]
    try:
        cfgs = [config_from_text(m.config_text) for m in job.members]
        if signals:
            return [_stopped(f"received {signal.Signals(signals[0]).name} before training", start)] * n
        result = None
        texts = [m.config_text for m in job.members]
        if population_resumable(job.population_dir, texts, run_dirs):
            try:
                result = resume_population(
                    cfgs, run_dirs, job.population_dir, quiet=True, trust_checkpoint=job.trust_checkpoint
                )
            except UntrustedCheckpoint:
                raise  # someone else's population: a failure, never replaced by a fresh one
            except UserError:
                pass  # every checkpoint corrupt: start again below
        if result is None:
            result = run_population(cfgs, run_dirs, job.population_dir, overwrite=True, quiet=True)
        wall = time.perf_counter() - start
        return [
            JobResult(ok=m.ok, wall_time_s=wall, error=m.error, summary=m.summary) for m in result.members
        ]
    except TrainingStopped as exc:
        if exc.exit_code > 128:  # a signal: the checkpoint is written, the members continue on a rerun
            line = str(exc).splitlines()[0].split("; the population continues")[0]
            return [_stopped(line, start)] * n
        return [_failure(str(d), exc, start) for d in run_dirs]
    except BaseException as exc:  # noqa: BLE001 - a worker reports every failure to the parent
        if isinstance(exc, KeyboardInterrupt):
            raise
        results = [_failure(str(d), exc, start) for d in run_dirs]
        with contextlib.suppress(OSError):
            _failure(job.population_dir, exc, start)
        return results


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
    line = exception_text(exc).splitlines()[0]
    return JobResult(ok=False, error=line, wall_time_s=time.perf_counter() - start)
