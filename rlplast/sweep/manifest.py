"""Writing the sweep manifest, and what a previous manifest says about the runs of this grid.

``manifest.json`` (format and reading: :mod:`rlplast.rundir`) is written only by the sweep's parent
process, each time atomically, so a kill at any moment leaves a readable manifest.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rlplast.errors import UserError
from rlplast.io import atomic_write_json
from rlplast.rundir import MANIFEST, SUMMARY, read_manifest, read_summary
from rlplast.sweep.plan import RunSpec


def now() -> str:
    """The current UTC time as the manifest records it (ISO 8601, seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Manifest:
    """The sweep manifest; the parent process is its only writer (each write is atomic).

    Opening it keeps the entries of an existing manifest (runs of other grids included) and records
    the current ``config`` and ``overrides``.

    Args:
        out: the sweep directory.
        config_path: the base config, recorded as ``config``.
        overrides: the sweep's ``--set`` overrides, recorded as ``overrides``.
        methods: the grid's method names in the order given (``--methods``), recorded as
            ``methods`` ahead of methods an earlier invocation recorded; reports follow this order.
    """

    def __init__(
        self, out: Path, config_path: str | Path, overrides: list[str], methods: list[str] | None = None
    ) -> None:
        self.path = out / MANIFEST
        self.data = read_manifest(out) or {
            "config": str(config_path),
            "created": now(),
            "runs": {},
        }
        self.data["config"] = str(config_path)
        self.data["overrides"] = list(overrides)
        self.data.setdefault("runs", {})
        if methods is not None:
            # The order reports list methods in: this invocation's, then earlier ones of the sweep.
            earlier = self.data.get("methods")
            earlier = [m for m in earlier if isinstance(m, str)] if isinstance(earlier, list) else []
            self.data["methods"] = list(dict.fromkeys([*methods, *earlier]))

    @property
    def runs(self) -> dict[str, dict[str, Any]]:
        """The run entries by run name (``<method>-s<seed>``)."""
        return self.data["runs"]

    def state(self, spec: RunSpec) -> str | None:
        """The recorded state of ``spec``'s run, or None when it has no entry."""
        return self.runs.get(spec.name, {}).get("state")

    def set(self, spec: RunSpec, state: str, **extra: Any) -> None:
        """Record ``state`` (and ``extra`` fields) for ``spec``'s run and save the manifest."""
        entry = self.runs.setdefault(spec.name, {})
        entry.update(
            method=spec.method,
            seed=spec.seed,
            run_dir=str(Path("runs") / spec.name),
            config_hash=spec.config_hash,
            state=state,
            updated=now(),
        )
        entry.update(extra)
        self.save()

    def forget(self, spec: RunSpec) -> None:
        """Drop ``spec``'s entry (saved with the next write)."""
        self.runs.pop(spec.name, None)

    def save(self) -> None:
        """Write the manifest atomically."""
        self.data["updated"] = now()
        atomic_write_json(self.path, self.data)


def is_done(spec: RunSpec, entry: dict[str, Any] | None) -> bool:
    """Finished: state ``done`` and ``summary.json`` present."""
    if not entry:
        return False
    return entry.get("state") == "done" and (spec.run_dir / SUMMARY).is_file()


def check_previous(out_dir: Path, specs: list[RunSpec]) -> dict[str, Any]:
    """The previous manifest, after checking that what it calls done can be kept and reported.

    Returns:
        The manifest's data (``{}`` when there is none).

    Raises:
        UserError: a corrupt manifest, a done run of this grid made with another config, or a done
            run whose ``summary.json`` is unreadable (nothing is touched).
    """
    previous = read_manifest(out_dir) or {}
    entries: dict[str, dict[str, Any]] = previous.get("runs", {})
    grid = {spec.name: spec for spec in specs}
    for name, entry in entries.items():
        spec = grid.get(name)
        run_dir = spec.run_dir if spec else out_dir / entry.get("run_dir", f"runs/{name}")
        if entry.get("state") != "done" or not (run_dir / SUMMARY).is_file():
            continue
        if spec and entry.get("config_hash") not in (None, spec.config_hash):
            raise UserError(
                f"{out_dir} already holds run {spec.name} made with a different config; "
                "choose another --out (or delete that sweep)"
            )
        try:
            read_summary(run_dir / SUMMARY)
        except UserError as exc:
            todo = "to rerun it" if spec else "to leave it out of the report"
            raise UserError(f"{exc}; the run is marked done: delete {run_dir} {todo}") from None
    return previous


def finished_unrecorded(specs: list[RunSpec], previous: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Finished runs of this grid that the manifest does not record as done: their summaries by name.

    A run can finish after its parent stopped listening (the parent was killed) or the manifest can be
    lost; such a run directory holds ``summary.json``. It is kept and counted as done when its
    ``config.yaml`` is this run's resolved config, never trained again or deleted.

    Raises:
        UserError: a finished run directory made with another config (nothing is touched).
    """
    entries: dict[str, dict[str, Any]] = previous.get("runs", {})
    found: dict[str, dict[str, Any]] = {}
    for spec in specs:
        if is_done(spec, entries.get(spec.name)) or not (spec.run_dir / SUMMARY).is_file():
            continue
        config_file = spec.run_dir / "config.yaml"
        if not (config_file.is_file() and config_file.read_text() == spec.config_text):
            raise UserError(
                f"{spec.run_dir} holds a finished run with a different config.yaml; "
                "move it away or choose another --out"
            )
        found[spec.name] = read_summary(spec.run_dir / SUMMARY)
    return found
