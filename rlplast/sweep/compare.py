"""``rlplast compare``: one config, a grid of methods × seeds, run in parallel, resumable.

A *method* is a config overlay: ``methods/<name>.yaml`` beside the base config (or an explicit
``.yaml`` path) merged on top of the base config before the ``--set`` overrides. Every run of the
grid writes an ordinary run directory ``<out>/runs/<method>-s<seed>/``; the sweep's state lives in
``<out>/manifest.json``, rewritten atomically by the parent process only (the single writer).

Run states: ``pending`` (planned), ``running`` (handed to a worker), ``done`` (``summary.json``
written), ``failed`` (the worker raised; the message is in the manifest and the traceback in the
run's ``error.txt``), ``interrupted`` (SIGTERM/SIGINT stopped the sweep; the run wrote a checkpoint
if it was training). Rerunning the same command skips ``done`` runs whose ``summary.json`` exists,
continues every other run from its checkpoint (same resolved config) or else restarts it from
scratch (its partial run directory is deleted first).

Everything ``rlplast train`` rejects before it writes (config, env id and action space, interventions,
metric names, device) is checked for every run in the parent before the sweep directory is created.

**Engines.** With ``train.engine: population`` (or ``--engine population``) the runs that are not
done are trained as populations (:mod:`rlplast.population`), one job each: the runs that can share
one (same config apart from seed and interventions) are split into one population per worker
(:func:`~rlplast.sweep.plan.plan_jobs`), whose checkpoints live in
``<out>/populations/<first run>..<last run>/``; the manifest still has one entry per run (member)
with the same states, and each member writes its ordinary run directory. The population engine's
own checks (agent options, network, interventions per member, replay memory for that many
members) run in the parent too.

Example:
    >>> result = run_compare("configs/cartpole.yaml", ["vanilla", "reset"], seeds=2)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlplast.errors import TrainingStopped, UserError
from rlplast.methods import DEFAULT_METHODS
from rlplast.rundir import MANIFEST, check_output_dir, make_output_dir
from rlplast.sweep.job import JobResult
from rlplast.sweep.local import run_local
from rlplast.sweep.manifest import Manifest, check_previous, finished_unrecorded, is_done, now
from rlplast.sweep.plan import JobPlan, RunSpec, check_populations, check_runs, plan_jobs, plan_sweep
from rlplast.sweep.progress import Progress
from rlplast.sweep.ray import import_ray, run_ray
from rlplast.sweep.signals import StopRequest

BACKENDS = ("local", "ray")
#: How a method's seeds are trained (``train.engine``; ``--engine``).
ENGINES = ("single", "population")


@dataclass
class SweepResult:
    """What :func:`run_compare` did.

    Attributes:
        out: the sweep directory.
        total: runs in the grid.
        skipped: runs already done before this invocation.
        done: runs finished in this invocation.
        failed: names of runs that failed.
        interrupted: names of runs a signal stopped (see :func:`run_compare`).
        report_dir: where the report was written (None when no run finished).
        wall_time_s: wall time of this invocation.
    """

    out: Path
    total: int
    skipped: int = 0
    done: int = 0
    failed: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)
    report_dir: Path | None = None
    wall_time_s: float = 0.0


class SweepRecorder:
    """Records what happens to each run: its manifest entry, the result's counts, progress and notes.

    The backends call :meth:`on_start` when they hand a run to a worker and :meth:`on_end` with its
    :class:`~rlplast.sweep.job.JobResult`; the parent process is the only caller.

    Args:
        manifest: the sweep's manifest (written on every change).
        result: the invocation's counts (updated).
        progress: where progress lines go.

    Attributes:
        notes: each metric note a finished run reported (workers train quietly) -> the runs.
    """

    def __init__(self, manifest: Manifest, result: SweepResult, progress: Progress) -> None:
        self.manifest = manifest
        self.result = result
        self.progress = progress
        self.notes: dict[str, list[str]] = {}

    def on_start(self, spec: RunSpec) -> None:
        """``spec`` was handed to a worker: ``running`` (a population member also records its
        population's directory)."""
        extra = {"population": spec.population} if spec.population is not None else {}
        self.manifest.set(spec, "running", started=now(), **extra)

    def on_end(self, spec: RunSpec, res: JobResult) -> None:
        """``spec``'s job ended: ``done``, ``interrupted`` (a stop request) or ``failed``."""
        wall = float(res.wall_time_s or 0.0)
        if res.ok:
            self.manifest.set(spec, "done", error=None, wall_time_s=wall, finished=now())
            self.result.done += 1
            for note in (res.summary or {}).get("notes", []):
                self.notes.setdefault(note, []).append(spec.name)
        elif res.stopped:
            self.manifest.set(spec, "interrupted", error=res.error, wall_time_s=wall, finished=now())
            self.result.interrupted.append(spec.name)
            self.progress.say(f"{spec.name} interrupted: {res.error}")
            return
        else:
            self.manifest.set(spec, "failed", error=res.error, wall_time_s=wall, finished=now())
            self.result.failed.append(spec.name)
        self.progress.update(spec.name, res.ok, wall, str(res.error or ""))

    def interrupt_unstarted(self, todo: list[RunSpec], signal_name: str) -> None:
        """Mark the runs of ``todo`` still ``pending`` or ``running`` as ``interrupted``."""
        for spec in todo:
            if self.manifest.state(spec) in ("pending", "running"):
                self.manifest.set(spec, "interrupted", error=f"not started: {signal_name}")
                self.result.interrupted.append(spec.name)

    def print_notes(self, runs: int) -> None:
        """Each distinct metric note once, with how many of ``runs`` reported it."""
        for note, names in self.notes.items():
            print(f"rlplast compare: note from {len(names)} of {runs} runs: {note}", file=sys.stderr)


def check_options(
    backend: str, ray_address: str | None, workers: int | None, engine: str | None = None
) -> tuple[int, bool]:
    """Check the backend and engine options.

    Returns:
        ``(workers, uncapped)``: the runs at once (default ``os.cpu_count()``), and whether every
        run is submitted at once instead (a Ray cluster given without ``workers``: Ray queues them
        by free CPUs).

    Raises:
        UserError: an unknown backend or engine, ``ray_address`` without the ray backend,
            ``workers`` < 1.
    """
    if engine is not None and engine not in ENGINES:
        raise UserError(f"--engine: unknown engine '{engine}'; valid: {', '.join(ENGINES)}")
    if backend not in BACKENDS:
        raise UserError(f"--backend: unknown backend '{backend}'; valid: {', '.join(BACKENDS)}")
    if ray_address and backend != "ray":
        raise UserError(f"--ray-address needs --backend ray (the backend is '{backend}')")
    uncapped = workers is None and backend == "ray" and bool(ray_address)
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    return workers, uncapped


def check_out_dir(out_dir: Path, report: bool) -> None:
    """Refuse an unusable sweep directory before anything is written.

    Raises:
        UserError: ``out_dir`` (or its ``report/``) is not a folder, or it holds a training run.
    """
    check_output_dir(out_dir, "sweep")
    if report:
        check_output_dir(out_dir / "report", "report")
    if out_dir.is_dir() and not (out_dir / MANIFEST).exists():
        held = [f for f in ("config.yaml", "summary.json") if (out_dir / f).exists()]
        if held:
            raise UserError(
                f"--out {out_dir} holds a training run ({', '.join(held)}) and no {MANIFEST}, so it is not "
                "a sweep directory; choose another --out"
            )


def check_checkpoints(plans: list[JobPlan], trust: bool = False) -> None:
    """Refuse, before anything is written, to continue from checkpoints this user did not write.

    A run (or population) that will continue from its checkpoint loads pickled objects from it
    (:mod:`rlplast.checkpoint`), so its newest checkpoint must be signed with this user's key — a
    sweep copied from someone else is refused — unless ``trust``. The key itself is created here if
    needed, so that the workers' checkpoints can be signed.

    Raises:
        UserError: a checkpoint not signed with this user's key (without ``trust``), naming it and
            how to proceed; an unusable checkpoint key.
    """
    from rlplast.checkpoint import UntrustedCheckpoint, checkpoint_key, latest_checkpoint
    from rlplast.population.run import population_resumable
    from rlplast.sweep.job import resumable

    for plan in plans:
        if plan.population_dir is None:
            spec = plan.specs[0]
            if not resumable(spec.run_dir, spec.config_text):
                continue
            folder, start_over = spec.run_dir / "checkpoints", spec.run_dir
        else:
            texts = [s.config_text for s in plan.specs]
            if not population_resumable(plan.population_dir, texts, [s.run_dir for s in plan.specs]):
                continue
            folder, start_over = plan.population_dir / "checkpoints", plan.population_dir
        try:
            latest_checkpoint(folder, trust)
        except UntrustedCheckpoint as exc:
            raise UntrustedCheckpoint(f"{exc} (to start it again: delete {start_over})") from None
    checkpoint_key()


def select_todo(
    manifest: Manifest, specs: list[RunSpec], finished: dict[str, dict[str, Any]]
) -> list[RunSpec]:
    """The runs to train, each recorded ``pending``; the others are done and stay as they are.

    A run ``done`` in the manifest is skipped. One that finished unrecorded (``finished``) is recorded
    ``done``. Every other run is trained: its partial run directory is deleted unless it holds
    checkpoints (the run then continues from them when its config is the same). A population
    member's partial run directory is left to its population job, which continues it from the
    population's checkpoint or else replaces it.
    """
    todo: list[RunSpec] = []
    for spec in specs:
        if is_done(spec, manifest.runs.get(spec.name)):
            continue
        if spec.name in finished:  # finished while the manifest was not listening: keep it
            wall = finished[spec.name].get("wall_time_s")
            manifest.set(spec, "done", error=None, wall_time_s=wall, finished=now())
            continue
        partial = spec.run_dir.exists() and not (spec.run_dir / "checkpoints").is_dir()
        if partial and spec.engine != "population":
            shutil.rmtree(spec.run_dir)  # a partial run without checkpoints: start it again
        manifest.forget(spec)
        todo.append(spec)
    for spec in todo:
        manifest.set(spec, "pending", error=None, wall_time_s=None)
    return todo


def run_compare(
    config_path: str | Path,
    methods: list[str] | None = None,
    seeds: int = 5,
    overrides: list[str] | None = None,
    out: str | Path | None = None,
    workers: int | None = None,
    backend: str = "local",
    ray_address: str | None = None,
    quiet: bool = False,
    report: bool = True,
    engine: str | None = None,
    trust_checkpoint: bool = False,
) -> SweepResult:
    """Run (or resume) the methods × seeds grid and write the report.

    The steps: check the options, plan every run (:func:`~rlplast.sweep.plan.plan_sweep`), check the
    sweep directory and what it already holds, check every run as ``rlplast train`` would
    (:func:`~rlplast.sweep.plan.check_runs`) — all before anything is written — then record the
    runs to train as ``pending``, train them on the backend, and write the report.

    Args:
        config_path: the base YAML config.
        methods: method names (``methods/<name>.yaml`` beside the config) or ``.yaml`` paths; None:
            :data:`rlplast.methods.DEFAULT_METHODS` (said on stderr once the input is checked).
        seeds: seeds ``0 .. seeds-1``.
        overrides: ``--set`` overrides applied to every run (not ``train.seed``: use ``seeds``).
        out: the sweep directory (default ``sweeps/<config stem>``).
        workers: runs at once (default ``os.cpu_count()``; on a Ray cluster given by ``ray_address``,
            the default is no cap: Ray schedules the runs by free CPUs).
        backend: ``local`` (worker processes on this machine) or ``ray``.
        ray_address: address of an existing Ray cluster (``ray`` backend only; default: a local one).
        quiet: no progress lines.
        report: write the report when the grid is finished.
        engine: ``single`` or ``population`` for every run (``train.engine``; None: the config's).
        trust_checkpoint: continue runs and populations from checkpoints this user's key did not
            sign (a sweep copied from elsewhere; see :func:`check_checkpoints`).

    Returns:
        What this invocation did.

    Raises:
        UserError: bad input, found before any run starts (nothing is written).
        TrainingStopped: SIGTERM or SIGINT stopped the sweep (``exit_code`` 128 + the signal number);
            the unfinished runs are marked ``interrupted`` and continue on a rerun.
    """
    workers, uncapped = check_options(backend, ray_address, workers, engine)
    overrides = list(overrides or [])
    if engine is not None:
        overrides.append(f"train.engine={engine}")
    out_dir, specs = plan_sweep(config_path, methods, seeds, overrides, out)
    check_out_dir(out_dir, report)
    if backend == "ray":
        import_ray()  # fail before anything starts
    previous = check_previous(out_dir, specs)
    finished = finished_unrecorded(specs, previous)
    check_runs(config_path, specs)
    # The populations to train (the methods' unfinished seeds), checked as the engine checks them.
    entries = previous.get("runs", {})
    unfinished = [s for s in specs if not is_done(s, entries.get(s.name)) and s.name not in finished]
    planned = plan_jobs(out_dir, unfinished, None if uncapped else workers)
    check_populations(config_path, planned, None if uncapped or ray_address else workers)
    check_checkpoints(planned, trust_checkpoint)
    if methods is None:
        print(f"rlplast compare: no --methods given: running {', '.join(DEFAULT_METHODS)}", file=sys.stderr)

    start = time.perf_counter()
    stop = StopRequest()
    with stop.installed():
        make_output_dir(out_dir, "sweep")
        manifest = Manifest(
            out_dir, config_path, overrides, list(dict.fromkeys(spec.method for spec in specs))
        )
        todo = select_todo(manifest, specs, finished)
        plans = plan_jobs(out_dir, todo, None if uncapped else workers)
        for plan in plans:
            plan.trust_checkpoint = trust_checkpoint
        result = SweepResult(out=out_dir, total=len(specs), skipped=len(specs) - len(todo))
        progress = Progress(len(specs), result.skipped, quiet)
        n_methods = len({spec.method for spec in specs})
        populations = [p for p in plans if p.population_dir is not None]
        as_populations = (
            f" ({len(populations)} populations of {'/'.join(str(len(p.specs)) for p in populations)} runs)"
            if populations
            else ""
        )
        progress.say(
            f"{len(specs)} runs ({n_methods} methods × {seeds} seeds), "
            f"{result.skipped} already done, {len(todo)} to run{as_populations} on {backend} "
            f"{'(as the cluster allows)' if uncapped else f'with {workers} workers'}; "
            f"sweep directory: {out_dir}"
        )
        recorder = SweepRecorder(manifest, result, progress)
        stop.notice = progress.say
        if todo and not stop.requested:
            if backend == "ray":
                run_ray(plans, len(plans) if uncapped else workers, ray_address, recorder, stop)
            else:
                run_local(plans, workers, recorder, stop)
        if stop.requested:
            recorder.interrupt_unstarted(todo, stop.name)
            raise TrainingStopped(
                f"received {stop.name}: {len(result.interrupted)} unfinished runs marked interrupted "
                f"({result.done} finished); rerun the same command to continue them (sweep: {out_dir})",
                exit_code=128 + stop.received[0],
            )
    result.wall_time_s = time.perf_counter() - start
    if not quiet:
        recorder.print_notes(len(todo))

    if report and any(e.get("state") == "done" for e in manifest.runs.values()):
        from rlplast.analysis import write_report

        result.report_dir = write_report(out_dir)
    return result
