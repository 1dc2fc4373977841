"""``rlplast report``: aggregate a folder of finished runs into report.md, CSVs and plots.

:func:`build_report` computes everything (no file written); :func:`write_report` also writes
``summary.csv``, ``correlations.csv``, ``report.md`` and the figures (PNG and PDF), and for runs with
evaluation columns ``continual.csv``, ``improvement.csv`` and three more figures. The steps, one module each:
:mod:`~rlplast.analysis.load` (run directories) → :mod:`~rlplast.analysis.scores` (per-run,
per-task arrays) → :mod:`~rlplast.analysis.aggregate` (IQM and CIs over seeds) and
:mod:`~rlplast.analysis.correlations` and :mod:`~rlplast.analysis.continual` (forgetting, forward
transfer, normalised scores, rliable's profiles and probability of improvement) → :mod:`~rlplast.analysis.plots`,
:mod:`~rlplast.analysis.tables`, :mod:`~rlplast.analysis.markdown`. Definitions: docs/compare.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlplast.analysis.aggregate import SUMMARY_COLUMNS, Cell, aggregate
from rlplast.analysis.continual import (
    DEFAULT_REFERENCE,
    IMPROVEMENT_COLUMNS,
    Continual,
    common_matrices,
    continual_scores,
    improvement_rows,
    improvements,
    profiles,
    run_mean_cells,
    snap_rounding,
    with_continual,
)
from rlplast.analysis.correlations import CORRELATION_COLUMNS, CorrelationRow, correlations
from rlplast.analysis.load import RunData, load_sweep, method_order
from rlplast.analysis.markdown import report_markdown
from rlplast.analysis.plots import (
    plot_collapse,
    plot_eval_returns,
    plot_improvement,
    plot_nc1_vs_plasticity,
    plot_performance_profiles,
    plot_returns,
)
from rlplast.analysis.scores import Scores, compute_scores
from rlplast.analysis.stats import Improvement, Profile
from rlplast.analysis.tables import csv_text
from rlplast.errors import UserError
from rlplast.io import atomic_write_text
from rlplast.rundir import check_output_dir, make_output_dir, read_manifest

__all__ = ["Report", "build_report", "write_report"]


@dataclass
class Report:
    """What :func:`build_report` computed (also written to disk by :func:`write_report`).

    Attributes:
        runs: the finished runs read.
        entries: the manifest's run entries (``{}`` without a manifest).
        cells: summary.csv's rows.
        scores: the per-run, per-task scores.
        correlations: correlations.csv's rows.
        methods: the methods in report order (:func:`~rlplast.analysis.load.method_order`).
        method_order_source: where that order comes from, in words (for report.md).
        continual: the continual-learning scores (:mod:`~rlplast.analysis.continual`; their
            per-task quantities are also in ``scores`` and ``cells`` when a run has evaluations).
        run_cells: continual.csv's rows (per-run means over tasks, aggregated over seeds).
        profile_quantity: the score of the performance profiles (``eval_final_norm``, or
            ``eval_final`` without a reference); empty without evaluations.
        profiles: method → performance profile of ``profile_quantity``.
        improvements: ``(x, y, P(X > Y))`` for every pair of methods, on ``eval_final``.
    """

    runs: list[RunData]
    entries: dict[str, dict[str, Any]]
    cells: list[Cell]
    scores: Scores
    correlations: list[CorrelationRow]
    methods: list[str] = field(default_factory=list)
    method_order_source: str = "the order of the runs"
    continual: Continual | None = None
    run_cells: list[Cell] = field(default_factory=list)
    profile_quantity: str = ""
    profiles: dict[str, Profile] = field(default_factory=dict)
    improvements: list[tuple[str, str, Improvement]] = field(default_factory=list)


def build_report(
    sweep_dir: str | Path, reference: str | None = DEFAULT_REFERENCE, require_reference: bool = False
) -> Report:
    """Load the finished runs under ``sweep_dir`` and compute every table (no file is written).

    Args:
        sweep_dir: the sweep directory, or a folder of run directories.
        reference: the method whose runs are "from scratch" for forward transfer and normalised
            scores (:mod:`~rlplast.analysis.continual`); None: none.
        require_reference: refuse a ``reference`` that is not one of the sweep's methods (an
            explicit choice); otherwise a missing reference only leaves out the normalised scores.

    Raises:
        UserError: no such folder, no finished run, a run file that cannot be read, or a required
            reference method the sweep does not have.
    """
    runs, entries = load_sweep(sweep_dir)
    if require_reference and reference is not None and reference not in {r.method for r in runs}:
        valid = ", ".join(sorted({r.method for r in runs}))
        raise UserError(
            f"--reference: no finished runs of method '{reference}' in {sweep_dir}; valid: {valid}"
        )
    manifest = read_manifest(sweep_dir)
    if manifest is None:
        source = "alphabetical order (no sweep manifest records the order)"
    elif isinstance(manifest.get("methods"), list):
        source = "the order given to `rlplast compare --methods` (the manifest's `methods`)"
    else:
        source = "the order the sweep manifest first lists them"
    methods = method_order({r.method for r in runs}, manifest)
    scores = compute_scores(runs)
    continual = continual_scores(runs, scores, reference)
    if not continual.any:
        return Report(
            runs, entries, aggregate(scores), scores, correlations(runs, scores), methods, source, continual
        )
    scores = with_continual(scores, continual)  # continual quantities after the others: their CIs unchanged
    quantity = "eval_final_norm" if continual.reference else "eval_final"
    matrices, _ = common_matrices(scores, quantity, methods)
    finals, _ = common_matrices(scores, "eval_final", methods)
    return Report(
        runs,
        entries,
        snap_rounding(aggregate(scores)),
        scores,
        correlations(runs, scores),
        methods,
        source,
        continual=continual,
        run_cells=run_mean_cells(scores, continual, methods),
        profile_quantity=quantity if matrices else "",
        profiles=profiles(matrices, methods),
        improvements=improvements(finals, methods),
    )


def write_report(
    sweep_dir: str | Path,
    out: str | Path | None = None,
    reference: str | None = DEFAULT_REFERENCE,
    require_reference: bool = False,
) -> Path:
    """Compute the report of a sweep and write report.md, summary.csv, correlations.csv and the figures.

    Figures: ``returns``, ``collapse`` and ``nc1_vs_plasticity``, each as ``.png`` and ``.pdf``;
    with evaluation columns also ``eval_returns``, ``performance_profiles`` and
    ``probability_of_improvement``, and the files ``continual.csv`` and ``improvement.csv``.

    Args:
        sweep_dir: the sweep directory (``manifest.json`` and/or ``runs/``), or a folder of run
            directories.
        out: output folder (default ``<sweep_dir>/report``).
        reference: the "from scratch" method of the continual-learning scores (see
            :func:`build_report`).
        require_reference: refuse a ``reference`` the sweep does not have (see :func:`build_report`).

    Returns:
        The output folder.

    Raises:
        UserError: as :func:`build_report`, or ``out`` cannot be created (nothing is written then).
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    sweep = Path(sweep_dir)
    out_dir = check_output_dir(out if out else sweep / "report", "report")
    rep = build_report(sweep, reference, require_reference)
    make_output_dir(out_dir, "report")
    atomic_write_text(out_dir / "summary.csv", csv_text(SUMMARY_COLUMNS, [c.as_csv() for c in rep.cells]))
    atomic_write_text(
        out_dir / "correlations.csv", csv_text(CORRELATION_COLUMNS, [c.as_csv() for c in rep.correlations])
    )
    plots = {
        "returns": plot_returns(rep.runs, out_dir / "returns.png", rep.methods),
        "collapse": bool(plot_collapse(rep.runs, out_dir / "collapse.png", rep.methods)),
        "nc1": plot_nc1_vs_plasticity(
            rep.runs, rep.scores, rep.correlations, out_dir / "nc1_vs_plasticity.png", rep.methods
        ),
    }
    if rep.continual is not None and rep.continual.any:
        atomic_write_text(
            out_dir / "continual.csv", csv_text(SUMMARY_COLUMNS, [c.as_csv() for c in rep.run_cells])
        )
        atomic_write_text(
            out_dir / "improvement.csv",
            csv_text(IMPROVEMENT_COLUMNS, improvement_rows(rep.improvements, "eval_final")),
        )
        plots["eval_returns"] = plot_eval_returns(rep.runs, out_dir / "eval_returns.png", rep.methods)
        label = (
            f"final evaluation return, normalised (0 = random, 1 = {rep.continual.reference})"
            if rep.profile_quantity == "eval_final_norm"
            else "final evaluation return (not normalised: no reference runs)"
        )
        plots["performance_profiles"] = plot_performance_profiles(
            rep.profiles,
            out_dir / "performance_profiles.png",
            label,
            rep.methods,
            normalised=rep.profile_quantity == "eval_final_norm",
        )
        plots["probability_of_improvement"] = plot_improvement(
            rep.improvements, out_dir / "probability_of_improvement.png", rep.methods
        )
    atomic_write_text(out_dir / "report.md", report_markdown(rep, sweep, plots))
    return out_dir
