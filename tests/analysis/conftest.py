"""Shared helpers for the analysis tests: hand-written run directories with known answers."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rlplast.runlog import BASE_COLUMNS

#: One episode: (env step at its end, return, task id).
Episode = tuple[int, float, int]


def _write_run(
    run: Path,
    episodes: list[Episode],
    metric_cols: dict[str, list[Any]] | None = None,
    summary: dict[str, Any] | None = None,
) -> Path:
    """A run directory whose metrics.csv has a logging row every 10 steps up to the last episode.

    Each row carries the task of the latest episode ended by then and ``rollout/ep_return_mean`` =
    the row index; ``metric_cols`` maps extra columns to per-row values ("" = not computed).
    """
    run.mkdir(parents=True)
    with open(run / "episodes.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "episode_return", "episode_length", "task_id"])
        for step, ret, task in episodes:
            w.writerow([step, ret, 10, task])
    last = max(s for s, _, _ in episodes)
    steps = list(range(10, last + 10, 10))
    task_at = {s: max((t for st, _, t in episodes if st <= s), default=0) for s in steps}
    cols = metric_cols or {}
    extra = sorted(cols)
    with open(run / "metrics.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(BASE_COLUMNS + extra)
        for i, s in enumerate(steps):
            base = {"step": s, "shift/task_id": task_at[s], "rollout/ep_return_mean": float(i)}
            row = [base.get(c, "") for c in BASE_COLUMNS]
            row += [cols[c][i] if i < len(cols[c]) else "" for c in extra]
            w.writerow(row)
    info = {"wall_time_s": 1.0, "steps_per_s": 100.0, "steps": last, **(summary or {})}
    (run / "summary.json").write_text(json.dumps(info))
    return run


def _episodes(offset: float) -> list[Episode]:
    """Task 0: returns 1, 2, 4 (+ offset) at steps 10, 20, 40; task 1: 12 episodes 0..11 (+ offset)."""
    task0 = [(10, 1.0 + offset, 0), (20, 2.0 + offset, 0), (40, 4.0 + offset, 0)]
    task1 = [(100 + i, float(i) + offset, 1) for i in range(12)]
    return task0 + task1


@pytest.fixture(scope="session")
def write_run() -> Callable[..., Path]:
    """``write_run(run_dir, episodes, metric_cols=None, summary=None)``: write a run directory."""
    return _write_run


@pytest.fixture(scope="session")
def episodes() -> Callable[[float], list[Episode]]:
    """``episodes(offset)``: the standard two-task episode list, returns shifted by ``offset``."""
    return _episodes


@pytest.fixture
def two_runs(tmp_path: Path) -> Path:
    """``tmp_path/sweep``: no manifest, ``runs/m-s0`` and ``runs/m-s1`` (no metric columns)."""
    sweep = tmp_path / "sweep"
    for seed, offset in ((0, 0.0), (1, 1.0)):
        _write_run(sweep / "runs" / f"m-s{seed}", _episodes(offset))
    return sweep
