"""NC1 vs plasticity: Pearson and Spearman correlations with 95 % CIs (correlations.csv).

Two phases, for each NC1 column present against ``return`` and (when the probe ran) the probe
ratio:

* ``first``: one point per logging row of a run's first task with an NC1 value (x = NC1 at that
  row, y = the rolling mean return / probe ratio at that row);
* ``later``: one point per (run, task after its first) (x = the task's mean NC1, y = the task's
  ``mean_return`` / mean probe ratio).

Each is computed per method (seeds pooled) and over all methods (scope ``all``). Every row goes to
correlations.csv (with the reason in ``note`` when it could not be computed); report.md and the
figure show the rows with at least :data:`MIN_CORRELATION_N` points (:meth:`CorrelationRow.shown`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rlplast.analysis.load import RETURN_COLUMN, TASK_COLUMN, RunData
from rlplast.analysis.scores import Scores
from rlplast.analysis.stats import N_BOOT, Correlation, pearson, spearman

__all__ = [
    "CORRELATION_COLUMNS",
    "MIN_CORRELATION_N",
    "NC1_COLUMNS",
    "PHASE_LABELS",
    "PROBE_COLUMN",
    "CorrelationRow",
    "correlation_points",
    "correlations",
]

#: The NC1 columns correlated, in order of preference (greedy labeling first).
NC1_COLUMNS = ("collapse/nc1_greedy", "collapse/nc1_taken")
#: The probe-plasticity column, correlated when present.
PROBE_COLUMN = "plasticity/probe_ratio"
#: Header of correlations.csv; :meth:`CorrelationRow.as_csv` gives a row.
CORRELATION_COLUMNS = [
    "scope",
    "phase",
    "x",
    "y",
    "n",
    "pearson_r",
    "pearson_low",
    "pearson_high",
    "pearson_p",
    "spearman_rho",
    "spearman_low",
    "spearman_high",
    "spearman_p",
    "note",
]
#: The label of each phase in the ``phase`` column.
PHASE_LABELS = {"first": "task 0 (logging steps)", "later": "tasks >= 1 (seed × task)"}
#: Fewest (x, y) points of a correlation shown in report.md and on the figures (all are in the CSV).
MIN_CORRELATION_N = 5


@dataclass
class CorrelationRow:
    """One line of a correlation table.

    Attributes:
        scope: method, or ``all``.
        phase: the phase's label.
        x: the x column (an NC1 column).
        y: ``return`` or a metric column.
        pearson: Pearson's r with its Fisher-z CI.
        spearman: Spearman's ρ with its bootstrap CI.
    """

    scope: str
    phase: str
    x: str
    y: str
    pearson: Correlation
    spearman: Correlation

    def shown(self, min_n: int = MIN_CORRELATION_N) -> bool:
        """Whether report.md shows the row: Pearson r computed from at least ``min_n`` points."""
        return self.pearson.ok and self.pearson.n >= min_n

    def as_csv(self) -> list[Any]:
        """The row of correlations.csv, in :data:`CORRELATION_COLUMNS` order."""
        p, s = self.pearson, self.spearman
        note = p.reason or s.reason
        if not note and p.n < MIN_CORRELATION_N:
            note = f"fewer than {MIN_CORRELATION_N} points: not shown in report.md"
        return [
            self.scope,
            self.phase,
            self.x,
            self.y,
            p.n,
            p.r,
            p.low,
            p.high,
            p.p,
            s.r,
            s.low,
            s.high,
            s.p,
            note,
        ]


def correlation_points(
    runs: list[RunData], scores: Scores, nc1: str, y: str, phase: str
) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) points of one correlation.

    Args:
        runs: the runs to pool.
        scores: scores of (at least) these runs.
        nc1: the x column.
        y: ``return`` or a metric column.
        phase: ``first`` (logging rows of each run's first task) or ``later`` (one point per run
            and later task).
    """
    xs: list[float] = []
    ys: list[float] = []
    yq = "mean_return" if y == "return" else y
    for run in runs:
        if phase == "first":
            t = run.metrics.get(TASK_COLUMN)
            xcol = run.metrics.get(nc1)
            ycol = run.metrics.get(RETURN_COLUMN if y == "return" else y)
            if t is None or xcol is None or ycol is None or not run.tasks():
                continue
            rows = (t == min(run.tasks())) & np.isfinite(xcol)
            xs += xcol[rows].tolist()
            ys += ycol[rows].tolist()
        else:
            for task in scores.run_tasks(scores.runs.index(run.name))[1:]:
                xs.append(scores.get(nc1, run.name, task))
                ys.append(scores.get(yq, run.name, task))
    return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)


def correlations(runs: list[RunData], scores: Scores, n_boot: int = N_BOOT) -> list[CorrelationRow]:
    """Pearson and Spearman (95 % CIs) between NC1 and plasticity, per method and over all methods.

    Returns:
        One row per scope × phase × NC1 column × plasticity measure present (none without NC1).
    """
    present = {c for r in runs for c in r.metric_columns()}
    nc1s = [c for c in NC1_COLUMNS if c in present]
    ys = ["return"] + ([PROBE_COLUMN] if PROBE_COLUMN in present else [])
    methods = list(dict.fromkeys(r.method for r in runs))
    out: list[CorrelationRow] = []
    for scope in [*methods, "all"]:
        sruns = runs if scope == "all" else [r for r in runs if r.method == scope]
        for phase in ("first", "later"):
            for nc1 in nc1s:
                for y in ys:
                    x_pts, y_pts = correlation_points(sruns, scores, nc1, y, phase)
                    out.append(
                        CorrelationRow(
                            scope,
                            PHASE_LABELS[phase],
                            nc1,
                            y,
                            pearson(x_pts, y_pts),
                            spearman(x_pts, y_pts, n_boot=n_boot),
                        )
                    )
    return out
