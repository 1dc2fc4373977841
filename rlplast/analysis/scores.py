"""Per-run, per-task scores as ``(n_runs, n_tasks)`` arrays, one per quantity (rliable's shape).

Quantities of a run's task ``k`` (``task_id`` in episodes.csv, ``shift/task_id`` in metrics.csv):

* ``mean_return``: mean return of the episodes that ended in the task.
* ``auc``: trapezoid integral of episode return against the env step at which each episode ended,
  divided by the step span of those episodes — a step-weighted mean return, in return units (one
  episode → its return).
* ``end_return``: mean return of the task's last :data:`END_EPISODES` episodes.
* ``return_drop``: ``mean_return`` of the run's first task minus that of task ``k`` (NaN on the
  first task).
* every metric column (:func:`rlplast.analysis.load.is_metric_column`): mean over the task's
  logging rows; empty cells (steps without a metric computation) are ignored.

Example:
    >>> scores = compute_scores(runs)  # doctest: +SKIP
    >>> scores.values["mean_return"].shape  # (runs, tasks)  # doctest: +SKIP
    (6, 4)
    >>> scores.by_method("auc")["reset"]  # rliable's score_dict entry  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from rlplast.analysis.load import TASK_COLUMN, RunData

__all__ = [
    "END_EPISODES",
    "MAIN_METRICS",
    "RETURN_QUANTITIES",
    "Scores",
    "compute_scores",
    "order_quantities",
    "task_scores",
]

#: Episodes averaged for the end-of-task return.
END_EPISODES = 10
#: The return quantities, in report order.
RETURN_QUANTITIES = ("mean_return", "auc", "end_return", "return_drop")
#: Metric columns shown in report.md's main metric table and collapse.png when present.
MAIN_METRICS = (
    "collapse/nc1_greedy",
    "collapse/nc1_taken",
    "plasticity/srank",
    "plasticity/effective_rank",
    "plasticity/dormant_fraction",
    "plasticity/dead_fraction",
    "plasticity/probe_ratio",
    "plasticity/feature_norm",
)
#: Prefixes of the paper's metric columns, ordered before every other metric column.
PAPER_PREFIXES = ("collapse/", "plasticity/")


def order_quantities(names: Iterable[str]) -> list[str]:
    """Quantities in report order: the return quantities, then the ``collapse/…`` and
    ``plasticity/…`` columns sorted, then every other metric column sorted.

    The order fixes each quantity's bootstrap seed in the summary, so adding an intervention or a
    user metric leaves the CIs of the existing quantities unchanged.
    """
    names = set(names)
    returns = [q for q in RETURN_QUANTITIES if q in names]
    metrics = sorted(names - set(RETURN_QUANTITIES), key=lambda c: (not c.startswith(PAPER_PREFIXES), c))
    return returns + metrics


def task_scores(run: RunData, end_episodes: int = END_EPISODES) -> dict[int, dict[str, float]]:
    """One run's scores as ``{task: {quantity: value}}`` (the module docstring defines them).

    Every task of :meth:`RunData.tasks` gets every return quantity (NaN when not available) and
    every metric column of :meth:`RunData.metric_columns`.
    """
    ep = run.episodes
    steps = ep.get("step", np.array([]))
    rets = ep.get("episode_return", np.array([]))
    tids = ep.get("task_id", np.zeros_like(steps))
    mtask = run.metrics.get(TASK_COLUMN)
    cols = run.metric_columns()
    out: dict[int, dict[str, float]] = {}
    for task in run.tasks():
        sel = (tids == task) & np.isfinite(rets)
        r, s = rets[sel], steps[sel]
        order = np.argsort(s, kind="stable")
        r, s = r[order], s[order]
        scores: dict[str, float] = {q: math.nan for q in RETURN_QUANTITIES}
        if r.size:
            scores["mean_return"] = float(r.mean())
            span = float(s[-1] - s[0]) if r.size > 1 else 0.0
            scores["auc"] = float(np.trapezoid(r, s) / span) if span > 0 else float(r.mean())
            scores["end_return"] = float(r[-end_episodes:].mean())
        if mtask is not None:
            rows = mtask == task
            for c in cols:
                v = run.metrics[c][rows]
                v = v[np.isfinite(v)]
                scores[c] = float(v.mean()) if v.size else math.nan
        out[task] = scores
    if out:
        first = min(out)
        for task, scores in out.items():
            if task != first:
                scores["return_drop"] = out[first]["mean_return"] - scores["mean_return"]
    return out


@dataclass(frozen=True)
class Scores:
    """Per-run, per-task scores: one ``(n_runs, n_tasks)`` float array per quantity.

    Row ``i`` is run ``runs[i]`` (method ``methods[i]``, seed ``seeds[i]``); column ``j`` is task
    ``tasks[j]``. A value is NaN where the quantity is not available (the run did not see the task,
    logged no such column, or no episode ended in the task).

    Attributes:
        runs: run names, one per row.
        methods: method of each row.
        seeds: seed of each row.
        tasks: task ids, one per column (every task any run saw, sorted).
        seen: ``(n_runs, n_tasks)`` bool: the run saw the task (an episode ended or a row was
            logged in it), even where every quantity is NaN.
        values: quantity → ``(n_runs, n_tasks)`` float64 array, in :func:`order_quantities` order.
    """

    runs: tuple[str, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    tasks: tuple[int, ...]
    seen: np.ndarray
    values: dict[str, np.ndarray]

    @property
    def quantities(self) -> list[str]:
        """Every quantity, in report order."""
        return list(self.values)

    def method_names(self) -> list[str]:
        """The methods, in order of first appearance."""
        return list(dict.fromkeys(self.methods))

    def rows(self, method: str) -> np.ndarray:
        """Row indices of ``method``'s runs."""
        return np.flatnonzero(np.asarray(self.methods, dtype=object) == method)

    def by_method(self, quantity: str) -> dict[str, np.ndarray]:
        """``{method: (n_runs_of_method, n_tasks) array}`` of one quantity: rliable's ``score_dict``."""
        return {m: self.values[quantity][self.rows(m)] for m in self.method_names()}

    def get(self, quantity: str, run: str, task: int) -> float:
        """One score (NaN when the quantity, run or task is unknown)."""
        if quantity not in self.values or run not in self.runs or task not in self.tasks:
            return math.nan
        return float(self.values[quantity][self.runs.index(run), self.tasks.index(task)])

    def run_tasks(self, i: int) -> list[int]:
        """The tasks row ``i``'s run saw, sorted."""
        return [t for t, s in zip(self.tasks, self.seen[i], strict=True) if s]


def compute_scores(runs: list[RunData], end_episodes: int = END_EPISODES) -> Scores:
    """Score every run on every task (:func:`task_scores`) and stack them into :class:`Scores`."""
    per_run = [task_scores(run, end_episodes) for run in runs]
    tasks = sorted({t for sc in per_run for t in sc})
    quantities = order_quantities(
        [*RETURN_QUANTITIES, *(q for sc in per_run for task in sc.values() for q in task)]
    )
    col = {t: j for j, t in enumerate(tasks)}
    seen = np.zeros((len(runs), len(tasks)), dtype=bool)
    values = {q: np.full((len(runs), len(tasks)), np.nan) for q in quantities}
    for i, sc in enumerate(per_run):
        for task, row in sc.items():
            seen[i, col[task]] = True
            for q, v in row.items():
                values[q][i, col[task]] = v
    return Scores(
        runs=tuple(r.name for r in runs),
        methods=tuple(r.method for r in runs),
        seeds=tuple(r.seed for r in runs),
        tasks=tuple(tasks),
        seen=seen,
        values=values,
    )
