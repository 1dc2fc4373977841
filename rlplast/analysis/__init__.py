"""Analysis of finished runs: load run directories, score them, aggregate, plot and report.

Reads files only (run directories and the sweep manifest, through :mod:`rlplast.rundir`), never
live agents, and knows nothing of how the runs were scheduled. One module per step:

* :mod:`~rlplast.analysis.load` — :class:`RunData`, :func:`load_run`, :func:`load_sweep`.
* :mod:`~rlplast.analysis.scores` — :class:`Scores`: one ``(n_runs, n_tasks)`` array per quantity
  (rliable's shape), with the run, method and seed of each row.
* :mod:`~rlplast.analysis.stats` — IQM, bootstrap CIs, bands over seeds (CI from 3 seeds, min–max
  of 2), t intervals, Pearson and Spearman; rliable's stratified bootstrap, performance profiles
  and probability of improvement.
* :mod:`~rlplast.analysis.aggregate` — IQM with a bootstrap CI over seeds (summary.csv's rows).
* :mod:`~rlplast.analysis.correlations` — NC1 vs plasticity (correlations.csv's rows).
* :mod:`~rlplast.analysis.continual` — the evaluation columns' scores: final performance,
  forgetting, forward transfer, scores normalised to [random, from scratch], rliable's
  performance profiles and probability of improvement (continual.csv, improvement.csv).
* :mod:`~rlplast.analysis.labels` — readable titles and units of column keys, for figures.
* :mod:`~rlplast.analysis.style` — paper sizes, fonts, the colour-blind-safe palette, method
  styles, PNG + PDF files.
* :mod:`~rlplast.analysis.plots` — the figures (matplotlib, imported when drawing).
* :mod:`~rlplast.analysis.tables` — the number format, CSV text and Markdown tables.
* :mod:`~rlplast.analysis.markdown` — report.md's text.
* :mod:`~rlplast.analysis.report` — :func:`build_report` and :func:`write_report`.

Example:
    >>> from rlplast.analysis import compute_scores, load_sweep
    >>> runs, _ = load_sweep("sweeps/permuted_cartpole")  # doctest: +SKIP
    >>> scores = compute_scores(runs)  # doctest: +SKIP
    >>> scores.by_method("mean_return")  # {method: (seeds, tasks) array}  # doctest: +SKIP
"""

from __future__ import annotations

from rlplast.analysis.aggregate import SUMMARY_COLUMNS, Cell, aggregate, format_cells, summary_cell
from rlplast.analysis.continual import (
    CONTINUAL_QUANTITIES,
    DEFAULT_REFERENCE,
    Continual,
    EvalCurves,
    continual_scores,
    eval_curves,
    forgetting,
    learning_auc,
    normalise,
)
from rlplast.analysis.correlations import (
    CORRELATION_COLUMNS,
    MIN_CORRELATION_N,
    NC1_COLUMNS,
    PROBE_COLUMN,
    CorrelationRow,
    correlation_points,
    correlations,
)
from rlplast.analysis.labels import axis_label, metric_title, metric_unit
from rlplast.analysis.load import RunData, is_metric_column, load_run, load_sweep, method_order
from rlplast.analysis.plots import (
    plot_collapse,
    plot_eval_returns,
    plot_improvement,
    plot_nc1_vs_plasticity,
    plot_performance_profiles,
    plot_returns,
    use_log,
)
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
from rlplast.analysis.stats import (
    MIN_SEEDS_FOR_CI,
    N_BOOT,
    Band,
    Correlation,
    Improvement,
    Profile,
    band_label,
    bootstrap_ci,
    improvement,
    interval_kind,
    iqm,
    pearson,
    performance_profile,
    probability_of_improvement,
    score_distribution,
    seed_band,
    spearman,
    stratified_bootstrap,
    t_interval,
)
from rlplast.analysis.style import ONE_COLUMN, PALETTE, TWO_COLUMN, method_styles, paper_style, save_figure
from rlplast.analysis.tables import (
    INTERVAL_LEGEND,
    NumberFormat,
    column_format,
    csv_text,
    format_estimate,
    format_number,
    markdown_table,
)

__all__ = [
    "CONTINUAL_QUANTITIES",
    "CORRELATION_COLUMNS",
    "DEFAULT_REFERENCE",
    "END_EPISODES",
    "INTERVAL_LEGEND",
    "MAIN_METRICS",
    "MIN_CORRELATION_N",
    "MIN_SEEDS_FOR_CI",
    "NC1_COLUMNS",
    "N_BOOT",
    "ONE_COLUMN",
    "PALETTE",
    "PROBE_COLUMN",
    "RETURN_QUANTITIES",
    "SUMMARY_COLUMNS",
    "TWO_COLUMN",
    "Band",
    "Cell",
    "Continual",
    "Correlation",
    "CorrelationRow",
    "EvalCurves",
    "Improvement",
    "NumberFormat",
    "Profile",
    "Report",
    "RunData",
    "Scores",
    "aggregate",
    "axis_label",
    "band_label",
    "bootstrap_ci",
    "build_report",
    "column_format",
    "compute_scores",
    "continual_scores",
    "correlation_points",
    "correlations",
    "csv_text",
    "eval_curves",
    "forgetting",
    "format_cells",
    "format_estimate",
    "format_number",
    "improvement",
    "interval_kind",
    "iqm",
    "is_metric_column",
    "learning_auc",
    "load_run",
    "load_sweep",
    "markdown_table",
    "method_order",
    "method_styles",
    "metric_title",
    "metric_unit",
    "normalise",
    "order_quantities",
    "paper_style",
    "pearson",
    "performance_profile",
    "plot_collapse",
    "plot_eval_returns",
    "plot_improvement",
    "plot_nc1_vs_plasticity",
    "plot_performance_profiles",
    "plot_returns",
    "probability_of_improvement",
    "save_figure",
    "score_distribution",
    "seed_band",
    "spearman",
    "stratified_bootstrap",
    "summary_cell",
    "t_interval",
    "task_scores",
    "use_log",
    "write_report",
]
