"""Aggregate scores across seeds: IQM with a 95 % percentile bootstrap CI (the rows of summary.csv).

Per method, task and quantity: the IQM over the method's runs of the per-run score, with a
bootstrap CI over the runs. The ``all`` row of a method pools the (seed, task) scores and bootstraps
seeds within each task (stratified over tasks), as rliable's aggregate IQM does. NaN scores are
dropped; ``n`` counts the values used (seeds; seed × task in ``all`` rows).

Below :data:`~rlplast.analysis.stats.MIN_SEEDS_FOR_CI` (3) seeds there is no CI (``ci_low`` and
``ci_high`` are NaN, empty in summary.csv): a bootstrap "CI" of 2 seeds is their range. Tables then
show the min–max range of a task's 2 seeds, labelled as a range, and no interval for an ``all``
row (:attr:`Cell.interval`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlplast.analysis.scores import RETURN_QUANTITIES, Scores
from rlplast.analysis.stats import N_BOOT, bootstrap_ci, interval_kind, iqm
from rlplast.analysis.tables import NumberFormat, column_format, format_estimate

__all__ = ["SUMMARY_COLUMNS", "Cell", "aggregate", "format_cells", "summary_cell"]

#: Header of summary.csv; :meth:`Cell.as_csv` gives a row.
SUMMARY_COLUMNS = ["method", "task", "quantity", "n", "mean", "iqm", "ci_low", "ci_high"]


@dataclass
class Cell:
    """One row of summary.csv: a quantity of one method on one task, aggregated over seeds.

    Attributes:
        method: method (or any group label).
        task: task id as text, or ``all``.
        quantity: quantity name.
        n: finite values aggregated (seeds; seed × task for a pooled row).
        mean: their plain mean.
        iqm: their interquartile mean.
        ci_low: lower bound of the 95 % bootstrap CI of the IQM (NaN below 3 seeds).
        ci_high: upper bound.
        min: smallest value aggregated.
        max: largest value aggregated.
        seeds: seeds behind the interval: ``n`` for a per-task row, the fewest seeds of a task
            for a pooled row.
        pooled: a pooled (``all``) row.
    """

    method: str
    task: str
    quantity: str
    n: int
    mean: float
    iqm: float
    ci_low: float
    ci_high: float
    min: float = math.nan
    max: float = math.nan
    seeds: int = -1
    pooled: bool = False

    @property
    def interval(self) -> str:
        """The interval a table shows: ``ci`` (≥ 3 seeds), ``range`` (a task's 2 seeds) or ``none``."""
        seeds = self.n if self.seeds < 0 else self.seeds
        kind = interval_kind(seeds)
        if kind == "ci" and not math.isfinite(self.ci_low):
            return "none"
        return "none" if kind == "range" and self.pooled else kind

    @property
    def bounds(self) -> tuple[float, float]:
        """The bounds of :attr:`interval` (the CI or the min–max range; NaN without one)."""
        kind = self.interval
        if kind == "ci":
            return self.ci_low, self.ci_high
        if kind == "range":
            return self.min, self.max
        return math.nan, math.nan

    def numbers(self) -> list[float]:
        """The numbers a table shows for this cell (to choose its column's format)."""
        return [self.iqm, *self.bounds]

    def fmt(self, number_format: NumberFormat | None = None) -> str:
        """``IQM [CI]``, ``IQM (min to max)`` or ``IQM`` (``–`` without a value), as
        :data:`~rlplast.analysis.tables.INTERVAL_LEGEND` explains.

        Args:
            number_format: the column's format (default: chosen from this cell's numbers alone).
        """
        if self.n == 0 or not math.isfinite(self.iqm):
            return "–"
        fmt = number_format or column_format(self.numbers())
        return format_estimate(self.iqm, *self.bounds, self.interval, fmt)

    def as_csv(self) -> list[Any]:
        """The row of summary.csv, in :data:`SUMMARY_COLUMNS` order."""
        return [self.method, self.task, self.quantity, self.n, self.mean, self.iqm, self.ci_low, self.ci_high]


def format_cells(cells: Sequence[Cell | None], digits: int = 3) -> list[str]:
    """One table column of estimates, in one number format (:func:`~rlplast.analysis.tables.column_format`
    over every number the column shows); ``–`` for a missing cell.

    Example:
        >>> a = Cell("m", "0", "q", 3, 1.0, 14459.4, 12044.5, 16874.2)
        >>> b = Cell("m", "1", "q", 3, 1.0, 1.37e6, 6.59e5, 2.08e6)
        >>> format_cells([a, b, None])
        ['1.45e4 [1.20e4, 1.69e4]', '1.37e6 [6.59e5, 2.08e6]', '–']
    """
    fmt = column_format([x for c in cells if c is not None for x in c.numbers()], digits)
    return [c.fmt(fmt) if c is not None else "–" for c in cells]


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

    The bootstrap CI is computed only from 3 seeds on (per stratum for a pooled row).

    Args:
        method: the row's method label.
        task: the row's task label.
        quantity: the row's quantity.
        values: the scores to aggregate.
        strata: a stratum per value for a stratified bootstrap (pooled rows), or None.
        seed: seed of the bootstrap (the CI is reproducible).
        n_boot: bootstrap resamples.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    keep = np.isfinite(v)
    n = int(keep.sum())
    pooled = strata is not None
    if n == 0:
        return Cell(method, task, quantity, 0, math.nan, math.nan, math.nan, math.nan, seeds=0, pooled=pooled)
    if strata is None:
        seeds = n
    else:
        labels = np.asarray(strata, dtype=object).ravel()[keep]
        seeds = min(int((labels == s).sum()) for s in dict.fromkeys(labels.tolist()))
    lo = hi = math.nan
    if interval_kind(seeds) == "ci":
        lo, hi = bootstrap_ci(v, iqm, n_boot=n_boot, seed=seed, strata=strata)
    kept = v[keep]
    return Cell(
        method,
        task,
        quantity,
        n,
        float(kept.mean()),
        float(iqm(v)),
        lo,
        hi,
        float(kept.min()),
        float(kept.max()),
        seeds,
        pooled,
    )


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
