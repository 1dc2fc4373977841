"""Analysis of finished runs: load run directories, score them, aggregate, plot and report.

Reads files only (run directories and the sweep manifest, through :mod:`rlplast.rundir`), never
live agents, and knows nothing of how the runs were scheduled. One module per step:

* :mod:`~rlplast.analysis.load` — :class:`RunData`, :func:`load_run`, :func:`load_sweep`.
* :mod:`~rlplast.analysis.scores` — :class:`Scores`: one ``(n_runs, n_tasks)`` array per quantity
  (rliable's shape), with the run, method and seed of each row.
* :mod:`~rlplast.analysis.stats` — IQM, bootstrap CIs, t intervals, Pearson and Spearman.
* :mod:`~rlplast.analysis.aggregate` — IQM with a bootstrap CI over seeds (summary.csv's rows).
* :mod:`~rlplast.analysis.correlations` — NC1 vs plasticity (correlations.csv's rows).
* :mod:`~rlplast.analysis.plots` — the PNGs (matplotlib, imported when drawing).
* :mod:`~rlplast.analysis.tables` — number formatting, CSV text and Markdown tables.
* :mod:`~rlplast.analysis.markdown` — report.md's text.
* :mod:`~rlplast.analysis.report` — :func:`build_report` and :func:`write_report`.

Example:
    >>> from rlplast.analysis import compute_scores, load_sweep
    >>> runs, _ = load_sweep("sweeps/permuted_cartpole")  # doctest: +SKIP
    >>> scores = compute_scores(runs)  # doctest: +SKIP
    >>> scores.by_method("mean_return")  # {method: (seeds, tasks) array}  # doctest: +SKIP
"""

from __future__ import annotations

from rlplast.analysis.aggregate import SUMMARY_COLUMNS, Cell, aggregate, summary_cell
from rlplast.analysis.correlations import (
    CORRELATION_COLUMNS,
    NC1_COLUMNS,
    PROBE_COLUMN,
    CorrelationRow,
    correlation_points,
    correlations,
)
from rlplast.analysis.load import RunData, is_metric_column, load_run, load_sweep
from rlplast.analysis.plots import plot_collapse, plot_nc1_vs_plasticity, plot_returns, save_png
from rlplast.analysis.report import Report, build_report, write_report
from rlplast.analysis.scores import (
    END_EPISODES,
    MAIN_METRICS,
    RETURN_QUANTITIES,
    Scores,
    compute_scores,
    order_quantities,
    task_scores,
)
from rlplast.analysis.stats import N_BOOT, Correlation, bootstrap_ci, iqm, pearson, spearman, t_interval
from rlplast.analysis.tables import csv_text, format_number, markdown_table

__all__ = [
    "CORRELATION_COLUMNS",
    "END_EPISODES",
    "MAIN_METRICS",
    "N_BOOT",
    "NC1_COLUMNS",
    "PROBE_COLUMN",
    "RETURN_QUANTITIES",
    "SUMMARY_COLUMNS",
    "Cell",
    "Correlation",
    "CorrelationRow",
    "Report",
    "RunData",
    "Scores",
    "aggregate",
    "bootstrap_ci",
    "build_report",
    "compute_scores",
    "correlation_points",
    "correlations",
    "csv_text",
    "format_number",
    "iqm",
    "is_metric_column",
    "load_run",
    "load_sweep",
    "markdown_table",
    "order_quantities",
    "pearson",
    "plot_collapse",
    "plot_nc1_vs_plasticity",
    "plot_returns",
    "save_png",
    "spearman",
    "summary_cell",
    "t_interval",
    "task_scores",
    "write_report",
]
