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

Example:
    >>> result = run_compare("configs/cartpole.yaml", ["vanilla", "reset"], seeds=2)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rlplast.config import Config, dump_config, load_config, parse_override, read_yaml
from rlplast.errors import TrainingStopped, UserError
from rlplast.io import atomic_write_json, atomic_write_text
from rlplast.methods import resolve_method
from rlplast.rundir import MANIFEST, check_output_dir, make_output_dir, read_manifest, read_summary

#: Signals that stop a sweep gracefully (the workers checkpoint); exit code 128 + signal number.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: Overrides every sweep run gets: no progress bar and one torch thread per worker process
#: (two 2-thread processes on 2 cores run ~7× slower than two 1-thread ones).
WORKER_OVERRIDES = ["train.progress=false", "train.torch_threads=1"]


@dataclass
class RunSpec:
    """One cell of the grid.

    Attributes:
        method: method name (the overlay's stem).
        seed: training seed.
        run_dir: the run directory.
        overlay: the method's partial config.
        overrides: every ``--set`` override of this run (the sweep's, then the seed and worker ones).
        config_hash: hash of the resolved config, to spot a rerun with a different config.
    """

    method: str
    seed: int
    run_dir: Path
    overlay: dict[str, Any]
    overrides: list[str]
    config_hash: str = ""
    overlay_path: Path | None = None
    config: Config | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        """``<method>-s<seed>``, the run directory's name and the manifest key."""
        return f"{self.method}-s{self.seed}"


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


# ------------------------------------------------------------------------------------ planning
def _check_overrides(overrides: list[str]) -> None:
    """Parse every ``--set`` once (format errors first) and refuse ``train.seed`` (``--seeds`` sets it)."""
    for text in overrides:
        parts, value = parse_override(text)
        if parts == ["train", "seed"] or (parts == ["train"] and isinstance(value, dict) and "seed" in value):
            raise UserError(
                f"--set {text}: compare gives each run its own seed, 0 .. S-1 for --seeds S; "
                "drop train.seed and use --seeds (one run with a chosen seed: rlplast train --seed N)"
            )


def _run_fixed_overrides(seed: int) -> list[str]:
    """The overrides every run gets after the user's ``--set``: its seed and the worker settings."""
    return [f"train.seed={seed}", *WORKER_OVERRIDES]


def _blame(
    exc: UserError,
    config_path: str | Path,
    overlay: dict[str, Any],
    seed: int,
    method: tuple[str, Path],
    check: Callable[[Config], None] | None = None,
) -> UserError:
    """Prefix ``exc`` with what introduced it: the base config, the method overlay or the ``--set``.

    The layers are added one at a time (base, then the overlay, then ``--set``); the first layer whose
    config fails (to load, or ``check``) is blamed.
    """

    def fails(overlays: list[dict[str, Any]]) -> bool:
        try:
            cfg = load_config(config_path, _run_fixed_overrides(seed), overlays)
            if check is not None:
                check(cfg)
        except UserError:
            return True
        return False

    text = str(exc)
    if fails([]):
        return UserError(text if str(config_path) in text else f"{config_path}: {text}")
    if fails([overlay]):
        return UserError(f"method '{method[0]}' ({method[1]}): {text}")
    return UserError(text if text.startswith("--set") else f"--set: {text}")


def plan_sweep(
    config_path: str | Path,
    methods: list[str],
    seeds: int,
    overrides: list[str] | None = None,
    out: str | Path | None = None,
) -> tuple[Path, list[RunSpec]]:
    """Resolve and validate every run's config (as :func:`load_config` does); touches no file.

    Raises:
        UserError: unknown method, bad overlay, bad override or invalid resolved config.
    """
    if not Path(config_path).is_file():
        raise UserError(f"config file not found: {config_path}")
    read_yaml(config_path)  # the config's own YAML errors come first
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    user = list(overrides or [])
    _check_overrides(user)
    out_dir = Path(out) if out else Path("sweeps") / Path(config_path).stem
    specs: list[RunSpec] = []
    seen: dict[str, str] = {}
    for entry in methods:
        name, path = resolve_method(config_path, entry)
        if name in seen:
            raise UserError(f"methods '{seen[name]}' and '{entry}' both resolve to the name '{name}'")
        seen[name] = entry
        overlay = read_yaml(path)
        for seed in range(seeds):
            run_overrides = [*user, *_run_fixed_overrides(seed)]
            try:
                cfg = load_config(config_path, run_overrides, overlays=[overlay])
            except UserError as exc:
                raise _blame(exc, config_path, overlay, seed, (name, path)) from None
            digest = hashlib.sha256(dump_config(cfg).encode()).hexdigest()[:16]
            run_dir = out_dir / "runs" / f"{name}-s{seed}"
            specs.append(RunSpec(name, seed, run_dir, overlay, run_overrides, digest, path, cfg))
    return out_dir, specs


def check_runs(config_path: str | Path, specs: list[RunSpec]) -> None:
    """Check every planned run as ``rlplast train`` would before writing (:class:`rlplast.train.Preflight`).

    Raises:
        UserError: the first run that ``rlplast train`` would reject, blamed on its layer.
    """
    from rlplast.train import Preflight

    checks = Preflight()
    for spec in specs:
        cfg = spec.config or load_config(config_path, spec.overrides, overlays=[spec.overlay])
        try:
            checks(cfg)
        except UserError as exc:
            method = (spec.method, spec.overlay_path or Path(spec.method))
            raise _blame(exc, config_path, spec.overlay, spec.seed, method, checks) from None


# ------------------------------------------------------------------------------------ manifest
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Manifest:
    """The sweep manifest; the parent process is its only writer (each write is atomic)."""

    def __init__(self, out: Path, config_path: str | Path, overrides: list[str]) -> None:
        self.path = out / MANIFEST
        self.data = read_manifest(out) or {
            "config": str(config_path),
            "created": _now(),
            "runs": {},
        }
        self.data["config"] = str(config_path)
        self.data["overrides"] = list(overrides)
        self.data.setdefault("runs", {})

    @property
    def runs(self) -> dict[str, dict[str, Any]]:
        return self.data["runs"]

    def set(self, spec: RunSpec, state: str, **extra: Any) -> None:
        entry = self.runs.setdefault(spec.name, {})
        entry.update(
            method=spec.method,
            seed=spec.seed,
            run_dir=str(Path("runs") / spec.name),
            config_hash=spec.config_hash,
            state=state,
            updated=_now(),
        )
        entry.update(extra)
        self.save()

    def save(self) -> None:
        self.data["updated"] = _now()
        atomic_write_json(self.path, self.data)


def is_done(spec: RunSpec, entry: dict[str, Any] | None) -> bool:
    """Finished: state ``done`` and ``summary.json`` present."""
    if not entry:
        return False
    return entry.get("state") == "done" and (spec.run_dir / "summary.json").is_file()


# ------------------------------------------------------------------------------------ workers
#: Signals a local worker process received (set by its own handler; see :func:`_worker_main`).
_WORKER_SIGNALS: list[int] = []


def _stopped(message: str, start: float) -> dict[str, Any]:
    return {"ok": False, "stopped": True, "error": message, "wall_time_s": time.perf_counter() - start}


def run_one(config_path: str, overlay: dict[str, Any], overrides: list[str], run_dir: str) -> dict[str, Any]:
    """Train one run of the grid (in a worker process). Never raises for a training failure.

    Returns:
        ``{"ok": True, "wall_time_s": …, "summary": …}``, ``{"ok": False, "error": one line, …}``
        (the full traceback is written to ``<run_dir>/error.txt``) or, when a signal stopped the run
        (after its checkpoint), ``{"ok": False, "stopped": True, "error": one line, …}``.
    """
    from rlplast.threads import set_cpu_threads
    from rlplast.train import resume_training, run_training

    set_cpu_threads(1)
    start = time.perf_counter()
    try:
        cfg = load_config(config_path, overrides, overlays=[overlay])
        if _WORKER_SIGNALS:  # stopped while starting up: nothing to checkpoint yet
            return _stopped(f"received {signal.Signals(_WORKER_SIGNALS[0]).name} before training", start)
        summary = None
        if _resumable(Path(run_dir), dump_config(cfg)):
            with contextlib.suppress(UserError):  # every checkpoint corrupt: start again below
                summary = resume_training(run_dir, quiet=True)
        if summary is None:
            summary = run_training(cfg, run_dir, overwrite=True, quiet=True)
        return {"ok": True, "wall_time_s": time.perf_counter() - start, "summary": summary}
    except TrainingStopped as exc:
        if exc.exit_code > 128:  # a signal: the checkpoint is written, the run continues on a rerun
            return _stopped(str(exc).splitlines()[0].split("; continue with")[0], start)
        return _failure(run_dir, exc, start)
    except BaseException as exc:  # noqa: BLE001 - a worker reports every failure to the parent
        if isinstance(exc, KeyboardInterrupt):
            raise
        return _failure(run_dir, exc, start)


def _failure(run_dir: str, exc: BaseException, start: float) -> dict[str, Any]:
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(run_dir) / "error.txt", traceback.format_exc())
    line = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    return {"ok": False, "error": line, "wall_time_s": time.perf_counter() - start}


def _resumable(run_dir: Path, config_text: str) -> bool:
    """An interrupted run of the same config with a checkpoint: continue it instead of restarting."""
    from rlplast.checkpoint import list_checkpoints

    if (run_dir / "summary.json").exists() or not (run_dir / "config.yaml").is_file():
        return False
    if (run_dir / "config.yaml").read_text() != config_text:
        return False
    return (run_dir / "checkpoints").is_dir() and bool(list_checkpoints(run_dir / "checkpoints"))


def _init_worker() -> None:
    """Pin every math library of a worker to one thread before torch/NumPy are imported there."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker (a graceful stop) when its parent dies, even of SIGKILL.

    With the forkserver start method the parent is the fork server, which exits with the sweep.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):  # best effort
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)


def _worker_main(conn: Any) -> None:
    """A local worker process: runs ``(config_path, overlay, overrides, run_dir)`` tasks from ``conn``.

    Each result goes back through ``conn``; ``None`` (or a closed pipe) ends the worker. SIGTERM and
    SIGINT only mark the worker as stopping while it is idle or starting a run (it then skips the
    run); during training :func:`rlplast.train.run_training`'s own handler checkpoints and stops.
    """
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, frame: _WORKER_SIGNALS.append(signum))
    _die_with_parent()
    _init_worker()
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if task is None:
            return
        _WORKER_SIGNALS.clear()  # the parent sends no task while it is stopping
        try:
            result = run_one(*task)
        except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt from a stray handler
            result = {"ok": False, "stopped": True, "error": type(exc).__name__, "wall_time_s": 0.0}
        try:
            conn.send(result)
        except OSError:
            return


def _mp_context() -> multiprocessing.context.BaseContext:
    # fork after torch has started threads can deadlock; forkserver is faster than spawn.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


class _StopRequest:
    """The parent's SIGTERM/SIGINT handler: the first signal stops the sweep, a second one forces it."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.notice: Callable[[str], None] | None = None
        self._noticed = 0

    def __call__(self, signum: int, frame: Any) -> None:
        self.received.append(signum)  # no I/O here: the main loop reports it (see acknowledge)

    def acknowledge(self, running: int) -> None:
        """Report each new stop request once (from the main loop, not the signal handler)."""
        if self.notice is None or self._noticed == len(self.received):
            return
        self._noticed = len(self.received)
        if self.forced:
            self.notice(f"received {signal.Signals(self.received[-1]).name} again: killing {running} workers")
        else:
            self.notice(
                f"received {self.name}: stopping {running} running runs (each writes a checkpoint "
                "first); send it again to kill them"
            )

    @property
    def requested(self) -> bool:
        return bool(self.received)

    @property
    def forced(self) -> bool:
        return len(self.received) > 1

    @property
    def name(self) -> str:
        return signal.Signals(self.received[0]).name if self.received else ""

    @contextlib.contextmanager
    def installed(self) -> Iterator[_StopRequest]:
        previous: dict[signal.Signals, Any] = {}
        for sig in STOP_SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread: signals keep their handlers
                previous[sig] = signal.signal(sig, self)
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class _Progress:
    """``[done/total] name state (wall) ETA`` lines on stderr."""

    def __init__(self, total: int, already: int, quiet: bool) -> None:
        self.total, self.count, self.quiet = total, already, quiet
        self.start = time.perf_counter()
        self.finished_here = 0

    def update(self, name: str, ok: bool, wall: float, error: str = "") -> None:
        self.count += 1
        self.finished_here += 1
        if self.quiet:
            return
        elapsed = time.perf_counter() - self.start
        left = self.total - self.count
        eta = elapsed / self.finished_here * left
        what = f"done in {wall:.1f} s" if ok else f"FAILED: {error}"
        self.say(f"[{self.count}/{self.total}] {name} {what}; elapsed {elapsed:.0f} s, ETA {eta:.0f} s")

    def say(self, text: str) -> None:
        if not self.quiet:
            print(f"rlplast compare: {text}", file=sys.stderr, flush=True)


@dataclass
class _Worker:
    """A local worker process, its end of the task pipe, and the run it is training (if any)."""

    process: Any
    conn: Any
    spec: RunSpec | None = None


def _run_local(
    config_path: str,
    todo: list[RunSpec],
    workers: int,
    on_start: Callable[[RunSpec], None],
    on_end: Callable[[RunSpec, dict[str, Any]], None],
    stop: _StopRequest | None = None,
) -> None:
    """Up to ``workers`` worker processes (forkserver, else spawn), each training one run at a time.

    The parent hands out the runs and so knows which worker trains which run. On a stop request no
    run is handed out any more and the busy workers get SIGTERM (again every second until they
    answer: one still setting up its run checkpoints once training has begun); a second request
    kills them. A worker that exits without answering "died"; its run is failed, and a fresh worker
    takes the next run.
    """
    stop = stop or _StopRequest()
    ctx: Any = _mp_context()  # typeshed's BaseContext lacks Process
    queue = list(todo)
    pool: list[_Worker] = []
    last_term, killed = -1.0, False

    def finish(worker: _Worker, result: dict[str, Any]) -> None:
        spec, worker.spec = worker.spec, None
        assert spec is not None
        on_end(spec, result)

    try:
        while True:
            while queue and not stop.requested:
                idle = next((w for w in pool if w.spec is None), None)
                if idle is None and len(pool) < workers:
                    parent_end, child_end = ctx.Pipe()
                    idle = _Worker(
                        ctx.Process(target=_worker_main, args=(child_end,), name="rlplast-worker"), parent_end
                    )
                    idle.process.start()
                    child_end.close()
                    pool.append(idle)
                if idle is None:
                    break
                spec = queue.pop(0)
                try:
                    idle.conn.send((config_path, spec.overlay, spec.overrides, str(spec.run_dir)))
                except OSError:  # the idle worker is gone: another one takes the run
                    queue.insert(0, spec)
                    pool.remove(idle)
                    continue
                idle.spec = spec
                on_start(spec)
            busy = [w for w in pool if w.spec is not None]
            if not busy:
                break  # all done, or stopped before the queue was empty
            stop.acknowledge(len(busy))
            if stop.forced and not killed:
                for w in busy:
                    w.process.kill()
                killed = True
            elif stop.requested and not killed and time.monotonic() - last_term >= 1.0:
                for w in busy:
                    w.process.terminate()  # SIGTERM: checkpoint and stop
                last_term = time.monotonic()
            multiprocessing.connection.wait(
                [x for w in busy for x in (w.conn, w.process.sentinel)], timeout=0.5
            )
            for w in busy:
                result = None
                with contextlib.suppress(EOFError, OSError):
                    if w.conn.poll():
                        result = w.conn.recv()
                if result is not None:
                    finish(w, result)
                elif not w.process.is_alive():
                    w.process.join()
                    pool.remove(w)
                    w.conn.close()
                    finish(w, _died(w.process.exitcode, stop.requested))
    finally:
        for w in pool:
            if w.spec is None:
                with contextlib.suppress(OSError):
                    w.conn.send(None)
            else:  # only after an error in the parent itself: let the run checkpoint
                w.process.terminate()
        for w in pool:
            w.process.join(timeout=30)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()


def _died(exitcode: int, stopping: bool) -> dict[str, Any]:
    how = f"killed by {signal.Signals(-exitcode).name}" if exitcode < 0 else f"exit code {exitcode}"
    result: dict[str, Any] = {"ok": False, "error": f"worker process died ({how})", "wall_time_s": 0.0}
    if stopping:
        result["stopped"] = True
    return result


def _import_ray() -> Any:
    """Import Ray (an optional extra) or explain how to install it."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    try:
        import ray
    except ImportError:
        raise UserError(
            "--backend ray needs Ray: install rlplast[ray] (pip install 'rlplast[ray]')"
        ) from None
    return ray


def _run_ray(
    config_path: str,
    todo: list[RunSpec],
    workers: int,
    address: str | None,
    on_start: Callable[[RunSpec], None],
    on_end: Callable[[RunSpec, dict[str, Any]], None],
    stop: _StopRequest | None = None,
) -> None:
    stop = stop or _StopRequest()
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=max(1, workers), **kwargs)
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(run_one)
        queue = list(todo)
        running: dict[Any, RunSpec] = {}
        cancelled = False

        def submit() -> None:
            spec = queue.pop(0)
            ref = task.remote(config_path, spec.overlay, spec.overrides, str(spec.run_dir.resolve()))
            running[ref] = spec
            on_start(spec)

        # At most `workers` runs are in flight; the next one is submitted as each finishes.
        while queue and len(running) < workers:
            submit()
        while running:
            stop.acknowledge(len(running))
            if stop.requested and not cancelled:
                # Ray tasks get no graceful stop: cancelling them keeps their last periodic checkpoint.
                for ref in running:
                    ray.cancel(ref, force=stop.forced)
                cancelled = True
            finished, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
            for ref in finished:
                try:
                    result = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a lost worker or node, or a cancelled task
                    line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    result = {"ok": False, "error": f"ray task failed: {line}", "wall_time_s": 0.0}
                    if stop.requested:
                        result.update(stopped=True, error=f"cancelled after {stop.name}")
                on_end(running.pop(ref), result)
                if queue and not stop.requested:
                    submit()
    finally:
        if started_here:
            ray.shutdown()


# ------------------------------------------------------------------------------------ the sweep
def _check_out_dir(out_dir: Path, report: bool) -> None:
    """Refuse an unusable sweep directory before anything is written."""
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


def _check_previous(out_dir: Path, specs: list[RunSpec]) -> dict[str, Any]:
    """The previous manifest, after checking that what it calls done can be kept and reported."""
    previous = read_manifest(out_dir) or {}
    entries: dict[str, dict[str, Any]] = previous.get("runs", {})
    grid = {spec.name: spec for spec in specs}
    for name, entry in entries.items():
        spec = grid.get(name)
        run_dir = spec.run_dir if spec else out_dir / entry.get("run_dir", f"runs/{name}")
        if entry.get("state") != "done" or not (run_dir / "summary.json").is_file():
            continue
        if spec and entry.get("config_hash") not in (None, spec.config_hash):
            raise UserError(
                f"{out_dir} already holds run {spec.name} made with a different config; "
                "choose another --out (or delete that sweep)"
            )
        try:
            read_summary(run_dir / "summary.json")
        except UserError as exc:
            todo = "to rerun it" if spec else "to leave it out of the report"
            raise UserError(f"{exc}; the run is marked done: delete {run_dir} {todo}") from None
    return previous


def _finished_unrecorded(specs: list[RunSpec], previous: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Finished runs of this grid that the manifest does not record as done, by run name.

    A run can finish after its parent stopped listening (the parent was killed) or the manifest can be
    lost; such a run directory holds ``summary.json``. It is kept and counted as done when its
    ``config.yaml`` is this run's resolved config, never trained again or deleted.

    Raises:
        UserError: a finished run directory made with another config (nothing is touched).
    """
    from rlplast.config import dump_config
    entries: dict[str, dict[str, Any]] = previous.get("runs", {})
    found: dict[str, dict[str, Any]] = {}
    for spec in specs:
        if is_done(spec, entries.get(spec.name)) or not (spec.run_dir / "summary.json").is_file():
            continue
        config_file = spec.run_dir / "config.yaml"
        same = (
            spec.config is not None
            and config_file.is_file()
            and config_file.read_text() == dump_config(spec.config)
        )
        if not same:
            raise UserError(
                f"{spec.run_dir} holds a finished run with a different config.yaml; "
                "move it away or choose another --out"
            )
        found[spec.name] = read_summary(spec.run_dir / "summary.json")
    return found


def run_compare(
    config_path: str | Path,
    methods: list[str],
    seeds: int = 5,
    overrides: list[str] | None = None,
    out: str | Path | None = None,
    workers: int | None = None,
    backend: str = "local",
    ray_address: str | None = None,
    quiet: bool = False,
    report: bool = True,
) -> SweepResult:
    """Run (or resume) the methods × seeds grid and write the report.

    Args:
        config_path: the base YAML config.
        methods: method names (``methods/<name>.yaml`` beside the config) or ``.yaml`` paths.
        seeds: seeds ``0 .. seeds-1``.
        overrides: ``--set`` overrides applied to every run (not ``train.seed``: use ``seeds``).
        out: the sweep directory (default ``sweeps/<config stem>``).
        workers: runs at once (default ``os.cpu_count()``; on a Ray cluster given by ``ray_address``,
            the default is no cap: Ray schedules the runs by free CPUs).
        backend: ``local`` (one process per run) or ``ray``.
        ray_address: address of an existing Ray cluster (``ray`` backend only; default: a local one).
        quiet: no progress lines.
        report: write the report when the grid is finished.

    Raises:
        UserError: bad input, found before any run starts.
        TrainingStopped: SIGTERM or SIGINT stopped the sweep (``exit_code`` 128 + the signal number);
            the unfinished runs are marked ``interrupted`` and continue on a rerun.
    """
    if backend not in ("local", "ray"):
        raise UserError(f"--backend: unknown backend '{backend}'; valid: local, ray")
    if ray_address and backend != "ray":
        raise UserError(f"--ray-address needs --backend ray (the backend is '{backend}')")
    # On a Ray cluster without --workers every run is submitted at once (Ray queues them by free
    # CPUs); everywhere else at most `workers` runs go at once.
    uncapped = workers is None and backend == "ray" and bool(ray_address)
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    overrides = list(overrides or [])
    out_dir, specs = plan_sweep(config_path, methods, seeds, overrides, out)
    _check_out_dir(out_dir, report)
    if backend == "ray":
        _import_ray()  # fail before anything starts
    previous = _check_previous(out_dir, specs)
    finished = _finished_unrecorded(specs, previous)
    check_runs(config_path, specs)

    start = time.perf_counter()
    stop = _StopRequest()
    with stop.installed():
        make_output_dir(out_dir, "sweep")
        manifest = Manifest(out_dir, config_path, overrides)
        todo: list[RunSpec] = []
        for spec in specs:
            if is_done(spec, manifest.runs.get(spec.name)):
                continue
            if spec.name in finished:  # finished while the manifest was not listening: keep it
                wall = finished[spec.name].get("wall_time_s")
                manifest.set(spec, "done", error=None, wall_time_s=wall, finished=_now())
                continue
            if spec.run_dir.exists() and not (spec.run_dir / "checkpoints").is_dir():
                shutil.rmtree(spec.run_dir)  # a partial run without checkpoints: start it again
            manifest.runs.pop(spec.name, None)
            todo.append(spec)
        for spec in todo:
            manifest.set(spec, "pending", error=None, wall_time_s=None)
        result = SweepResult(out=out_dir, total=len(specs), skipped=len(specs) - len(todo))
        progress = _Progress(len(specs), result.skipped, quiet)
        progress.say(
            f"{len(specs)} runs ({len(methods)} methods × {seeds} seeds), "
            f"{result.skipped} already done, {len(todo)} to run on {backend} "
            f"{'(as the cluster allows)' if uncapped else f'with {workers} workers'}; "
            f"sweep directory: {out_dir}"
        )

        notes: dict[str, list[str]] = {}  # note -> runs that reported it (workers run quietly)
        stop.notice = progress.say

        def on_start(spec: RunSpec) -> None:
            manifest.set(spec, "running", started=_now())

        def on_end(spec: RunSpec, res: dict[str, Any]) -> None:
            wall = float(res.get("wall_time_s") or 0.0)
            if res.get("ok"):
                manifest.set(spec, "done", error=None, wall_time_s=wall, finished=_now())
                result.done += 1
                for note in (res.get("summary") or {}).get("notes", []):
                    notes.setdefault(note, []).append(spec.name)
            elif res.get("stopped"):
                manifest.set(spec, "interrupted", error=res.get("error"), wall_time_s=wall, finished=_now())
                result.interrupted.append(spec.name)
                progress.say(f"{spec.name} interrupted: {res.get('error')}")
                return
            else:
                manifest.set(spec, "failed", error=res.get("error"), wall_time_s=wall, finished=_now())
                result.failed.append(spec.name)
            progress.update(spec.name, bool(res.get("ok")), wall, str(res.get("error") or ""))

        if todo and not stop.requested:
            if backend == "ray":
                limit = len(todo) if uncapped else workers
                _run_ray(str(config_path), todo, limit, ray_address, on_start, on_end, stop)
            else:
                _run_local(str(config_path), todo, workers, on_start, on_end, stop)
        if stop.requested:
            for spec in todo:
                if manifest.runs.get(spec.name, {}).get("state") in ("pending", "running"):
                    manifest.set(spec, "interrupted", error=f"not started: {stop.name}")
                    result.interrupted.append(spec.name)
            raise TrainingStopped(
                f"received {stop.name}: {len(result.interrupted)} unfinished runs marked interrupted "
                f"({result.done} finished); rerun the same command to continue them (sweep: {out_dir})",
                exit_code=128 + stop.received[0],
            )
    result.wall_time_s = time.perf_counter() - start
    if not quiet:
        for note, names in notes.items():
            print(f"rlplast compare: note from {len(names)} of {len(todo)} runs: {note}", file=sys.stderr)

    if report and any(e.get("state") == "done" for e in manifest.runs.values()):
        from rlplast.report import write_report

        result.report_dir = write_report(out_dir)
    return result
