"""Read finished runs back from their directories: :class:`RunData`, :func:`load_run`, :func:`load_sweep`.

Only files are read (through :mod:`rlplast.rundir` for ``summary.json`` and the manifest), never
live agents, and nothing here knows how the runs were scheduled.

Metric columns: every column of a run's ``metrics.csv`` that is not one of
:data:`rlplast.runlog.BASE_COLUMNS` (the step, the wall-clock columns ``time_s`` and
``steps_per_s``, ``shift/task_id``, the ``rollout/…`` statistics and DQN's ``train/loss``,
``train/grad_norm``, ``train/n_updates``) or the evaluation's ``eval/…`` columns (see
:mod:`rlplast.analysis.continual`) and that holds at least one value. That is every
``collapse/…`` and ``plasticity/…`` column, every key an intervention logs (``intervention/resets``,
``train/nc_reg_loss``, …) and every key a user metric returns (``custom/score``).

Method order: every table and figure lists the methods in the order they were given
(:func:`method_order`): the manifest's optional top-level ``methods`` list (``--methods`` order),
then the order in which the manifest first names each method, then alphabetical (a folder without
a manifest). :func:`load_sweep` returns the runs sorted that way (then by seed).

Example:
    >>> runs, entries = load_sweep("sweeps/permuted_cartpole")  # doctest: +SKIP
    >>> runs[0].method, runs[0].seed, runs[0].metric_columns()[:1]  # doctest: +SKIP
    ('vanilla', 0, ['collapse/c_eff_greedy'])
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlplast.errors import UserError
from rlplast.rundir import MANIFEST, SUMMARY, json_type, parse_run_name, read_manifest, read_summary
from rlplast.runlog import BASE_COLUMNS

__all__ = [
    "EVAL_PREFIX",
    "RETURN_COLUMN",
    "STEP_COLUMN",
    "TASK_COLUMN",
    "RunData",
    "is_metric_column",
    "load_run",
    "load_sweep",
    "method_order",
    "read_columns",
]

#: Logging step of a metrics.csv row.
STEP_COLUMN = "step"
#: Task id of a metrics.csv row.
TASK_COLUMN = "shift/task_id"
#: Rolling mean episode return of a metrics.csv row.
RETURN_COLUMN = "rollout/ep_return_mean"
_NOT_METRICS = frozenset(BASE_COLUMNS)


#: Prefix of the evaluation columns (``eval/task_<k>/return``, ...): scored by
#: :mod:`rlplast.analysis.continual`, not as metric columns.
EVAL_PREFIX = "eval/"


def is_metric_column(name: str) -> bool:
    """Whether a metrics.csv column is a metric column: any column outside ``BASE_COLUMNS`` and the
    evaluation's ``eval/…`` columns."""
    return name not in _NOT_METRICS and not name.startswith(EVAL_PREFIX)


@dataclass
class RunData:
    """One finished run, read back from its directory.

    Attributes:
        name: the run directory's name (``<method>-s<seed>`` in a sweep).
        method: method name.
        seed: seed.
        path: run directory.
        metrics: metrics.csv columns as float arrays (NaN = not computed).
        episodes: episodes.csv columns as float arrays.
        summary: summary.json.
    """

    name: str
    method: str
    seed: int
    path: Path
    metrics: dict[str, np.ndarray]
    episodes: dict[str, np.ndarray]
    summary: dict[str, Any]

    def metric_columns(self) -> list[str]:
        """The metric columns (see the module docstring) with at least one value, in file order."""
        return [c for c, v in self.metrics.items() if is_metric_column(c) and np.isfinite(v).any()]

    def tasks(self) -> list[int]:
        """Task ids seen in episodes.csv or metrics.csv, sorted."""
        ids: set[float] = set()
        for col in (self.episodes.get("task_id"), self.metrics.get(TASK_COLUMN)):
            if col is not None:
                ids |= set(col[np.isfinite(col)].tolist())
        return sorted(int(i) for i in ids)


def read_columns(path: Path) -> dict[str, np.ndarray]:
    """A CSV file's columns as float64 arrays (empty or non-numeric cells → NaN; no file → ``{}``).

    Raises:
        UserError: the file exists but cannot be read or decoded (the file is named).
    """
    if not path.is_file():
        return {}
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        header: list[str] = []
        if not rows:
            with open(path, newline="") as fh:
                header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    if not rows:
        return {c: np.array([], dtype=np.float64) for c in header}

    def num(text: str | None) -> float:
        try:
            return float(text) if text not in (None, "") else math.nan
        except ValueError:
            return math.nan

    return {c: np.array([num(r.get(c)) for r in rows], dtype=np.float64) for c in rows[0]}


def load_run(path: str | Path, method: str | None = None, seed: int | None = None) -> RunData:
    """Read one run directory.

    Args:
        path: the run directory (``summary.json``, ``metrics.csv``, ``episodes.csv``).
        method: method name; default: from a ``<method>-s<seed>`` directory name, else the
            directory name itself.
        seed: seed; default: from a ``<method>-s<seed>`` directory name, else ``summary.json``'s
            ``seed``, else 0.

    Raises:
        UserError: an unreadable ``summary.json`` or CSV file (the file is named).
    """
    path = Path(path)
    summary = read_summary(path / SUMMARY)
    parsed = parse_run_name(path.name)
    if method is None:
        method = parsed[0] if parsed else path.name
    if seed is None:
        logged = summary.get("seed")
        if parsed:
            seed = parsed[1]
        elif isinstance(logged, int) and not isinstance(logged, bool):
            seed = logged
        else:
            seed = 0
    return RunData(
        name=path.name,
        method=method,
        seed=int(seed),
        path=path,
        metrics=read_columns(path / "metrics.csv"),
        episodes=read_columns(path / "episodes.csv"),
        summary=summary,
    )


def method_order(methods: Iterable[str], manifest: dict[str, Any] | None = None) -> list[str]:
    """``methods`` in report order: the order the methods were given, as far as it is recorded.

    1. the manifest's top-level ``methods`` list (the ``--methods`` order), when it has one;
    2. then the order in which the manifest's ``runs`` entries first name each method (a sweep
       records its grid method by method);
    3. then alphabetical (always the case without a manifest).

    Example:
        >>> method_order(["ncreg", "reset", "vanilla"], {"methods": ["vanilla", "reset", "ncreg"]})
        ['vanilla', 'reset', 'ncreg']
        >>> method_order(["b", "a", "c"], {"runs": {"c-s0": {"method": "c"}}})
        ['c', 'a', 'b']
    """
    wanted = set(methods)
    given: list[str] = []
    if manifest:
        listed = manifest.get("methods")
        if isinstance(listed, list):
            given += [m for m in listed if isinstance(m, str)]
        runs = manifest.get("runs", {}).values()
        given += [e["method"] for e in runs if isinstance(e, dict) and isinstance(e.get("method"), str)]
    order = [m for m in dict.fromkeys(given) if m in wanted]
    return order + sorted(wanted - set(order))


def _check_methods_key(sweep: Path, manifest: dict[str, Any] | None) -> None:
    listed = (manifest or {}).get("methods")
    if listed is not None and (not isinstance(listed, list) or not all(isinstance(m, str) for m in listed)):
        raise UserError(
            f"cannot read sweep manifest {sweep / MANIFEST}: 'methods' must be an array of strings, "
            f"got {json_type(listed)}"
        )


def load_sweep(sweep_dir: str | Path) -> tuple[list[RunData], dict[str, dict[str, Any]]]:
    """Every finished run under a folder, and the manifest's run entries (``{}`` without a manifest).

    The runs come in :func:`method_order`, then by seed.

    Which runs are read:

    * with a ``manifest.json``: the runs in state ``done`` that have a ``summary.json``;
    * else, with a ``runs/`` subfolder: every ``runs/*/summary.json``;
    * else (a folder of ``rlplast train`` run directories): every subfolder with a ``summary.json``.

    Without a manifest, method and seed come from :func:`load_run`'s defaults, so runs named
    ``<config>-<method>-s<seed>`` (``rlplast train``'s default names) group by ``<config>-<method>``.

    Raises:
        UserError: the folder does not exist, holds no finished run, or a file cannot be read.
    """
    sweep = Path(sweep_dir)
    if not sweep.is_dir():
        raise UserError(f"sweep directory not found: {sweep}")
    manifest = read_manifest(sweep)
    _check_methods_key(sweep, manifest)
    entries: dict[str, dict[str, Any]] = (manifest or {}).get("runs", {})
    runs: list[RunData] = []
    if manifest is not None:
        for name, entry in sorted(entries.items()):
            path = sweep / entry.get("run_dir", f"runs/{name}")
            if entry.get("state") == "done" and (path / SUMMARY).is_file():
                runs.append(load_run(path, entry.get("method"), entry.get("seed")))
    else:
        folder = sweep / "runs" if (sweep / "runs").is_dir() else sweep
        runs = [load_run(p.parent) for p in sorted(folder.glob(f"*/{SUMMARY}"))]
    if not runs:
        raise UserError(
            f"no finished runs in {sweep} (expected runs/<method>-s<seed>/summary.json "
            "or run directories with a summary.json)"
        )
    rank = {m: i for i, m in enumerate(method_order({r.method for r in runs}, manifest))}
    runs.sort(key=lambda r: (rank[r.method], r.seed, r.name))
    return runs, entries
