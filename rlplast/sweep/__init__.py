"""Sweeps: one config over a grid of methods × seeds, run in parallel and resumable (``rlplast compare``).

Modules, in the order a sweep uses them:

- :mod:`~rlplast.sweep.plan` — the grid: :class:`RunSpec` per (method, seed) with its resolved
  config, :func:`plan_sweep`, and :func:`check_runs` (what ``rlplast train`` checks before writing);
- :mod:`~rlplast.sweep.manifest` — :class:`Manifest`, the parent's atomic writer of
  ``manifest.json`` (its format and reading live in :mod:`rlplast.rundir`);
- :mod:`~rlplast.sweep.job` — a job's payload (:class:`Job`: the resolved config text and the run
  directory), its :class:`JobResult`, and :func:`run_job`, which a worker runs;
- :mod:`~rlplast.sweep.local` and :mod:`~rlplast.sweep.ray` — the two backends;
- :mod:`~rlplast.sweep.signals` and :mod:`~rlplast.sweep.progress` — stopping on SIGTERM/SIGINT,
  and the progress lines;
- :mod:`~rlplast.sweep.compare` — :func:`run_compare`, which runs these steps in order.

Sweeps meet the analysis (``rlplast report``) only through run directories and :mod:`rlplast.rundir`.

Example:
    >>> from rlplast.sweep import run_compare
    >>> result = run_compare("configs/cartpole.yaml", ["vanilla", "reset"], seeds=2)  # doctest: +SKIP
"""

from __future__ import annotations

from rlplast.sweep.compare import SweepRecorder, SweepResult, run_compare
from rlplast.sweep.job import Job, JobResult, run_job
from rlplast.sweep.manifest import Manifest, is_done
from rlplast.sweep.plan import WORKER_OVERRIDES, RunSpec, check_runs, plan_sweep
from rlplast.sweep.progress import Progress
from rlplast.sweep.signals import STOP_SIGNALS, StopRequest

__all__ = [
    "STOP_SIGNALS",
    "WORKER_OVERRIDES",
    "Job",
    "JobResult",
    "Manifest",
    "Progress",
    "RunSpec",
    "StopRequest",
    "SweepRecorder",
    "SweepResult",
    "check_runs",
    "is_done",
    "plan_sweep",
    "run_compare",
    "run_job",
]
