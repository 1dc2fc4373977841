"""Aggregate scores across seeds: IQM with a 95 % percentile bootstrap CI (the rows of summary.csv).

Per method, task and quantity: the IQM over the method's runs of the per-run score, with a
bootstrap CI over the runs. The ``all`` row of a method pools the (seed, task) scores and bootstraps
seeds within each task (stratified over tasks), as rliable's aggregate IQM does. NaN scores are
dropped; ``n`` counts the values used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlplast.analysis.scores import RETURN_QUANTITIES, Scores
from rlplast.analysis.stats import N_BOOT, bootstrap_ci, iqm
from rlplast.analysis.tables import format_number

__all__ = ["SUMMARY_COLUMNS", "Cell", "aggregate", "summary_cell"]

#: Header of summary.csv; :meth:`Cell.as_csv` gives a row.
SUMMARY_COLUMNS = ["method", "task", "quantity", "n", "mean", "iqm", "ci_low", "ci_high"]


@dataclass
class Cell:
    """One row of summary.csv: a quantity of one method on one task, aggregated over seeds.

    Attributes:
        method: method (or any group label).
        task: task id as text, or ``all``.
        quantity: quantity name.
        n: finite values aggregated.
        mean: their plain mean.
        iqm: their interquartile mean.
        ci_low: lower bound of the 95 % bootstrap CI of the IQM (NaN when ``n`` < 2).
        ci_high: upper bound.
    """

    method: str
    task: str
    quantity: str
    n: int
    mean: float
    iqm: float
    ci_low: float
    ci_high: float

    def fmt(self, digits: int = 3) -> str:
        """``IQM [low, high]`` for a Markdown table (``–`` without a value, no CI below 2 values)."""
        if self.n == 0 or not math.isfinite(self.iqm):
            return "–"
        ci = (
            f" [{format_number(self.ci_low, digits)}, {format_number(self.ci_high, digits)}]"
            if self.n >= 2
            else ""
        )
        return f"{format_number(self.iqm, digits)}{ci}"

    def as_csv(self) -> list[Any]:
        """The row of summary.csv, in :data:`SUMMARY_COLUMNS` order."""
        return [self.method, self.task, self.quantity, self.n, self.mean, self.iqm, self.ci_low, self.ci_high]


def summary_cell(
    method: str,
    task: str,
    quantity: str,
    values: Sequence[float] | np.ndarray,
    strata: Sequence[Any] | None,
    seed: int,
    n_boot: int = N_BOOT,
) -> Cell:
    """Aggregate ``values`` (one per seed, NaN = missing) into a :class:`Cell`.

    Args:
        method: the row's method label.
        task: the row's task label.
        quantity: the row's quantity.
        values: the scores to aggregate.
        strata: a stratum per value for a stratified bootstrap (pooled rows), or None.
        seed: seed of the bootstrap (the CI is reproducible).
        n_boot: bootstrap resamples.
    """
    v = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(v)
    n = int(keep.sum())
    if n == 0:
        return Cell(method, task, quantity, 0, math.nan, math.nan, math.nan, math.nan)
    lo, hi = bootstrap_ci(v, iqm, n_boot=n_boot, seed=seed, strata=strata)
    return Cell(method, task, quantity, n, float(v[keep].mean()), float(iqm(v)), lo, hi)


def aggregate(scores: Scores, n_boot: int = N_BOOT) -> list[Cell]:
    """summary.csv's rows: per method, per quantity the method logged, each task it saw and ``all``.

    A method's quantities are the return quantities and every metric column with a value in one of
    its runs, in :func:`rlplast.analysis.scores.order_quantities` order; its tasks are those any of
    its runs saw. Bootstrap seeds are ``1000 * method index + 37 * quantity index + task`` (``+ 999``
    for ``all``), so the report is reproducible.
    """
    cells: list[Cell] = []
    for mi, method in enumerate(scores.method_names()):
        rows = scores.rows(method)
        seen = scores.seen[rows]
        tasks = [j for j in range(len(scores.tasks)) if seen[:, j].any()]
        quantities = [
            q
            for q in scores.quantities
            if q in RETURN_QUANTITIES or np.isfinite(scores.values[q][rows]).any()
        ]
        for qi, q in enumerate(quantities):
            table = scores.values[q][rows]
            pooled: list[float] = []
            strata: list[int] = []
            for j in tasks:
                task = scores.tasks[j]
                vals = table[seen[:, j], j].tolist()
                cells.append(
                    summary_cell(method, str(task), q, vals, None, 1000 * mi + 37 * qi + task, n_boot)
                )
                pooled += vals
                strata += [task] * len(vals)
            cells.append(summary_cell(method, "all", q, pooled, strata, 1000 * mi + 37 * qi + 999, n_boot))
    return cells
