"""``rlplast compare``: one config, a grid of methods × seeds, run in parallel, resumable.

A *method* is a config overlay: ``methods/<name>.yaml`` beside the base config (or an explicit
``.yaml`` path) merged on top of the base config before the ``--set`` overrides. Every run of the
grid writes an ordinary run directory ``<out>/runs/<method>-s<seed>/``; the sweep's state lives in
``<out>/manifest.json``, rewritten atomically by the parent process only (the single writer).

Run states: ``pending`` (planned), ``running`` (handed to a worker), ``done`` (``summary.json``
written), ``failed`` (the worker raised; the message is in the manifest and the traceback in the
run's ``error.txt``). Rerunning the same command skips ``done`` runs whose ``summary.json`` exists
and restarts every other run from scratch (its partial run directory is deleted first).

Example:
    >>> result = run_compare("configs/cartpole.yaml", ["vanilla", "reset"], seeds=2)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rlplast.config import dump_config, load_config, read_yaml
from rlplast.errors import UserError, closest
from rlplast.io import atomic_write_json, atomic_write_text

MANIFEST = "manifest.json"
STATES = ("pending", "running", "done", "failed")
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
        report_dir: where the report was written (None when no run finished).
        wall_time_s: wall time of this invocation.
    """

    out: Path
    total: int
    skipped: int = 0
    done: int = 0
    failed: list[str] = field(default_factory=list)
    report_dir: Path | None = None
    wall_time_s: float = 0.0


# ------------------------------------------------------------------------------------ planning
def available_methods(config_path: str | Path) -> list[str]:
    """Method names found in ``methods/`` beside the config."""
    folder = Path(config_path).parent / "methods"
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.yaml"))


def resolve_method(config_path: str | Path, name: str) -> tuple[str, Path]:
    """Map a method name (or an explicit ``.yaml`` path) to ``(method name, overlay path)``."""
    if name.endswith((".yaml", ".yml")):
        path = Path(name)
        if not path.is_file():
            raise UserError(f"method overlay not found: {path}")
        return path.stem, path
    path = Path(config_path).parent / "methods" / f"{name}.yaml"
    if not path.is_file():
        valid = available_methods(config_path)
        listing = ", ".join(valid) if valid else f"none (no .yaml files in {path.parent})"
        raise UserError(f"unknown method '{name}'{closest(name, valid)}; available methods: {listing}")
    return name, path


def parse_methods(text: str | Iterable[str]) -> list[str]:
    """Split ``"a,b , c"`` into names; reject an empty list and duplicates."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [m.strip() for m in items if m.strip()]
    if not names:
        raise UserError("--methods: give at least one method, e.g. --methods vanilla,reset")
    dupes = sorted({m for m in names if names.count(m) > 1})
    if dupes:
        raise UserError(f"--methods: listed more than once: {', '.join(dupes)}")
    return names


def plan_sweep(
    config_path: str | Path,
    methods: list[str],
    seeds: int,
    overrides: list[str] | None = None,
    out: str | Path | None = None,
) -> tuple[Path, list[RunSpec]]:
    """Resolve and validate every run of the grid; touches no file.

    Raises:
        UserError: unknown method, bad overlay, bad override or invalid resolved config.
    """
    if not Path(config_path).is_file():
        raise UserError(f"config file not found: {config_path}")
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
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
            run_overrides = [*(overrides or []), f"train.seed={seed}", *WORKER_OVERRIDES]
            try:
                cfg = load_config(config_path, run_overrides, overlays=[overlay])
            except UserError as exc:
                raise UserError(f"method '{name}' ({path}): {exc}") from None
            digest = hashlib.sha256(dump_config(cfg).encode()).hexdigest()[:16]
            specs.append(
                RunSpec(name, seed, out_dir / "runs" / f"{name}-s{seed}", overlay, run_overrides, digest)
            )
    return out_dir, specs


# ------------------------------------------------------------------------------------ manifest
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_manifest(out: str | Path) -> dict[str, Any] | None:
    """The sweep manifest, or None when there is none."""
    import json

    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read sweep manifest {path}: {exc}") from None


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
def run_one(config_path: str, overlay: dict[str, Any], overrides: list[str], run_dir: str) -> dict[str, Any]:
    """Train one run of the grid (in a worker process). Never raises for a training failure.

    Returns:
        ``{"ok": True, "wall_time_s": …, "summary": …}`` or ``{"ok": False, "error": one line, …}``
        (the full traceback is written to ``<run_dir>/error.txt``).
    """
    from rlplast.threads import set_cpu_threads
    from rlplast.train import resume_training, run_training

    set_cpu_threads(1)
    start = time.perf_counter()
    try:
        cfg = load_config(config_path, overrides, overlays=[overlay])
        summary = None
        if _resumable(Path(run_dir), dump_config(cfg)):
            with contextlib.suppress(UserError):  # every checkpoint corrupt: start again below
                summary = resume_training(run_dir, quiet=True)
        if summary is None:
            summary = run_training(cfg, run_dir, overwrite=True, quiet=True)
        return {"ok": True, "wall_time_s": time.perf_counter() - start, "summary": summary}
    except BaseException as exc:  # noqa: BLE001 - a worker reports every failure to the parent
        if isinstance(exc, KeyboardInterrupt):
            raise
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


def _mp_context() -> multiprocessing.context.BaseContext:
    # fork after torch has started threads can deadlock; forkserver is faster than spawn.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


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
        print(
            f"rlplast compare: [{self.count}/{self.total}] {name} {what}; elapsed {elapsed:.0f} s, "
            f"ETA {eta:.0f} s",
            file=sys.stderr,
            flush=True,
        )


def _run_local(
    config_path: str,
    todo: list[RunSpec],
    workers: int,
    on_start: Callable[[RunSpec], None],
    on_end: Callable[[RunSpec, dict[str, Any]], None],
) -> None:
    with ProcessPoolExecutor(
        max_workers=max(1, min(workers, len(todo))), mp_context=_mp_context(), initializer=_init_worker
    ) as pool:
        futures: dict[Future, RunSpec] = {}
        try:
            for spec in todo:
                futures[
                    pool.submit(run_one, config_path, spec.overlay, spec.overrides, str(spec.run_dir))
                ] = spec
                on_start(spec)
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    try:
                        result = fut.result()
                    except BrokenProcessPool as exc:
                        result = {"ok": False, "error": f"worker process died: {exc}", "wall_time_s": 0.0}
                    on_end(futures[fut], result)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


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
) -> None:
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

        def submit() -> None:
            spec = queue.pop(0)
            ref = task.remote(config_path, spec.overlay, spec.overrides, str(spec.run_dir.resolve()))
            running[ref] = spec
            on_start(spec)

        # At most `workers` runs are in flight; the next one is submitted as each finishes.
        while queue and len(running) < workers:
            submit()
        while running:
            finished, _ = ray.wait(list(running), num_returns=1)
            for ref in finished:
                try:
                    result = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a lost worker or node
                    line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    result = {"ok": False, "error": f"ray task failed: {line}", "wall_time_s": 0.0}
                on_end(running.pop(ref), result)
                if queue:
                    submit()
    finally:
        if started_here:
            ray.shutdown()


# ------------------------------------------------------------------------------------ the sweep
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
        overrides: ``--set`` overrides applied to every run.
        out: the sweep directory (default ``sweeps/<config stem>``).
        workers: runs at once (default ``os.cpu_count()``; on a Ray cluster given by ``ray_address``,
            the default is no cap: Ray schedules the runs by free CPUs).
        backend: ``local`` (process pool) or ``ray``.
        ray_address: address of an existing Ray cluster (``ray`` backend; default: a local one).
        quiet: no progress lines.
        report: write the report when the grid is finished.

    Raises:
        UserError: bad input, found before any run starts.
    """
    if backend not in ("local", "ray"):
        raise UserError(f"--backend: unknown backend '{backend}'; valid: local, ray")
    # On a Ray cluster without --workers every run is submitted at once (Ray queues them by free
    # CPUs); everywhere else at most `workers` runs go at once.
    uncapped = workers is None and backend == "ray" and bool(ray_address)
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    overrides = list(overrides or [])
    out_dir, specs = plan_sweep(config_path, methods, seeds, overrides, out)
    if backend == "ray":
        _import_ray()  # fail before anything starts

    previous = read_manifest(out_dir) or {}
    for spec in specs:
        entry = previous.get("runs", {}).get(spec.name)
        if entry and is_done(spec, entry) and entry.get("config_hash") not in (None, spec.config_hash):
            raise UserError(
                f"{out_dir} already holds run {spec.name} made with a different config; "
                "choose another --out (or delete that sweep)"
            )

    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out_dir, config_path, overrides)
    todo: list[RunSpec] = []
    for spec in specs:
        if is_done(spec, manifest.runs.get(spec.name)):
            continue
        if spec.run_dir.exists() and not (spec.run_dir / "checkpoints").is_dir():
            shutil.rmtree(spec.run_dir)  # a partial run without checkpoints: start it again
        manifest.runs.pop(spec.name, None)
        todo.append(spec)
    for spec in todo:
        manifest.set(spec, "pending", error=None, wall_time_s=None)
    result = SweepResult(out=out_dir, total=len(specs), skipped=len(specs) - len(todo))
    progress = _Progress(len(specs), result.skipped, quiet)
    if not quiet:
        print(
            f"rlplast compare: {len(specs)} runs ({len(methods)} methods × {seeds} seeds), "
            f"{result.skipped} already done, {len(todo)} to run on {backend} "
            f"{'(as the cluster allows)' if uncapped else f'with {workers} workers'}; "
            f"sweep directory: {out_dir}",
            file=sys.stderr,
            flush=True,
        )

    notes: dict[str, list[str]] = {}  # note -> runs that reported it (workers run quietly)

    def on_start(spec: RunSpec) -> None:
        manifest.set(spec, "running", started=_now())

    def on_end(spec: RunSpec, res: dict[str, Any]) -> None:
        wall = float(res.get("wall_time_s") or 0.0)
        if res.get("ok"):
            manifest.set(spec, "done", error=None, wall_time_s=wall, finished=_now())
            result.done += 1
            for note in (res.get("summary") or {}).get("notes", []):
                notes.setdefault(note, []).append(spec.name)
        else:
            manifest.set(spec, "failed", error=res.get("error"), wall_time_s=wall, finished=_now())
            result.failed.append(spec.name)
        progress.update(spec.name, bool(res.get("ok")), wall, str(res.get("error") or ""))

    if todo:
        if backend == "ray":
            limit = len(todo) if uncapped else workers
            _run_ray(str(config_path), todo, limit, ray_address, on_start, on_end)
        else:
            _run_local(str(config_path), todo, workers, on_start, on_end)
    result.wall_time_s = time.perf_counter() - start
    if not quiet:
        for note, names in notes.items():
            print(f"rlplast compare: note from {len(names)} of {len(todo)} runs: {note}", file=sys.stderr)

    if report and any(e.get("state") == "done" for e in manifest.runs.values()):
        from rlplast.report import write_report

        result.report_dir = write_report(out_dir)
    return result
