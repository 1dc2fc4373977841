"""The on-disk formats that training, sweeps and analysis share.

A **run directory** holds ``config.yaml``, ``metrics.csv``, ``episodes.csv``, ``tb/``,
``summary.json``, ``model.zip`` and ``checkpoints/`` (see the README's output layout). A **sweep
directory** holds ``manifest.json`` (written only by the sweep's parent process) and one run
directory per grid cell under ``runs/<method>-s<seed>/``; its report goes to ``report/``. A sweep
trained by the population engine also holds ``populations/<first run>..<last run>/``: a
population's ``population.json`` and ``checkpoints/`` (its members' run directories stay under
``runs/``).

Sweeps and analysis meet only here: neither imports the other.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rlplast.errors import UserError

#: The sweep manifest's file name inside a sweep directory.
MANIFEST = "manifest.json"
#: A run's summary file name.
SUMMARY = "summary.json"
#: Run states recorded in the manifest.
STATES = ("pending", "running", "done", "failed", "interrupted")


#: The folder of a sweep directory that holds its populations (``rlplast compare --engine population``).
POPULATIONS = "populations"


def population_name(first: str, last: str) -> str:
    """``<first run>..<last run>`` (or the one run's name): a population's folder name in a sweep."""
    return first if first == last else f"{first}..{last}"


def run_name(method: str, seed: int) -> str:
    """``<method>-s<seed>``: a sweep run's directory name and manifest key."""
    return f"{method}-s{seed}"


def parse_run_name(name: str) -> tuple[str, int] | None:
    """``(method, seed)`` from a ``<method>-s<seed>`` name, or None when the name has no seed."""
    head, sep, tail = name.rpartition("-s")
    if sep and head and tail.isdigit():
        return head, int(tail)
    return None


# ------------------------------------------------------------------------------------ output folders
def check_output_dir(path: str | Path, what: str) -> Path:
    """Refuse an output path that exists and is not a folder (nothing is created)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"cannot create {what} directory {path}: it exists and is not a directory")
    return path


def make_output_dir(path: str | Path, what: str) -> Path:
    """Create the output folder ``path`` (and its parents) or raise a one-line UserError.

    Args:
        path: the folder.
        what: what it is, for the message (``sweep``, ``report``): "cannot create sweep directory …".
    """
    path = check_output_dir(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {what} directory {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to {what} directory {path}: permission denied")
    return path


# ------------------------------------------------------------------------------------ JSON files
def json_type(value: Any) -> str:
    """How JSON calls the type of a parsed value ("an array", "a string", …), for messages."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


#: ``summary.json`` keys that readers use, and the JSON types each may have (null: absent value).
SUMMARY_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(["final_return", "mean_return", "wall_time_s", "steps_per_s"], (int, float, type(None))),
    **dict.fromkeys(
        ["final_return_window", "episodes", "steps", "updates", "schedule_total_steps", "population_size"],
        (int,),
    ),
    "seed": (int, type(None)),
    "resumed": (bool,),
    **dict.fromkeys(["device", "env", "engine"], (str,)),
    **dict.fromkeys(["interventions", "notes"], (list,)),
    **dict.fromkeys(["returns_per_task", "versions"], (dict,)),
}


def read_summary(path: str | Path) -> dict[str, Any]:
    """A run's ``summary.json`` (a JSON object), or a one-line UserError naming the file.

    Parsed with :func:`json.loads` only (no code runs); the keys readers use must have their
    JSON types (:data:`SUMMARY_TYPES`; a number is not a boolean), and ``returns_per_task`` must
    map tasks to numbers.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"cannot read run summary {path}: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"cannot read run summary {path}: expected a JSON object, got {json_type(data)}")
    for key, types in SUMMARY_TYPES.items():
        if key not in data:
            continue
        value = data[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise UserError(
                f"cannot read run summary {path}: '{key}' must be {_kinds(types)}, got {json_type(value)}"
            )
    per_task = data.get("returns_per_task") or {}
    for task, value in per_task.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, type(None))):
            raise UserError(
                f"cannot read run summary {path}: returns_per_task '{task}' must be a number, got {json_type(value)}"
            )
    return data


def _kinds(types: tuple[type, ...]) -> str:
    names = {int: "a number", float: "a number", bool: "a boolean", str: "a string"}
    names.update({list: "an array", dict: "an object", type(None): "null"})
    return " or ".join(dict.fromkeys(names[t] for t in types))


def read_manifest(sweep_dir: str | Path) -> dict[str, Any] | None:
    """The sweep manifest of ``sweep_dir``, or None when there is none.

    Raises:
        UserError: unreadable, not JSON, or not shaped like a manifest (the file is named).
    """
    path = Path(sweep_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"cannot read sweep manifest {path}: {exc}") from None

    def bad(what: str) -> UserError:
        return UserError(f"cannot read sweep manifest {path}: {what}")

    if not isinstance(data, dict):
        raise bad(f"expected a JSON object, got {json_type(data)}")
    runs = data.get("runs", {})
    if not isinstance(runs, dict):
        raise bad(f"'runs' must be an object of run entries, got {json_type(runs)}")
    types = {"run_dir": str, "method": str, "state": str, "seed": int}
    for name, entry in runs.items():
        if not isinstance(entry, dict):
            raise bad(f"run '{name}' must be an object, got {json_type(entry)}")
        for key, tp in types.items():
            value = entry.get(key)
            if value is not None and (not isinstance(value, tp) or isinstance(value, bool)):
                raise bad(f"run '{name}': '{key}' must be {json_type(tp())}, got {json_type(value)}")
    return data
