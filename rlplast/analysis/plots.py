"""The report's figures, each written as a PNG (300 dpi) and a PDF (matplotlib, imported when drawing).

* ``returns`` — :func:`plot_returns`: return per episode against env step, per method. The
  curve is a rolling mean over the last :data:`RETURN_WINDOW` episodes *of the current task*: the
  window restarts at each task switch (SB3's ``rollout/ep_return_mean`` spans switches and smears
  the old task's returns into the new one), so a curve's last point in a task is that task's
  end-of-task return.
* ``collapse`` — :func:`plot_collapse`: the main NC1 and plasticity metrics, one panel each, at
  the steps where they were measured (markers; straight segments between them, no interpolation).
* ``nc1_vs_plasticity`` — :func:`plot_nc1_vs_plasticity`: one point per (seed, task ≥ 1), the
  task's mean NC1 against its mean return (and mean probe ratio), coloured by method; each method's
  Pearson r in the legend is its row of the correlation table.
* ``eval_returns``, ``performance_profiles``, ``probability_of_improvement`` — the continual-learning
  evaluation (runs with ``eval.enabled``): :func:`plot_eval_returns` (each task's greedy evaluation
  return against env step, one panel per task), :func:`plot_performance_profiles` (rliable's score
  distributions) and :func:`plot_improvement` (rliable's probability of improvement).

Common to all: paper sizes, fonts and the colour-blind-safe palette of :mod:`~rlplast.analysis.style`;
methods in report order with the same colour and marker in every figure; the centre line is the
IQM over seeds and the band what :func:`~rlplast.analysis.stats.band_label` states on the figure
(95 % bootstrap CI from 3 seeds, min–max of 2, none for 1); readable titles and axis units from
:mod:`~rlplast.analysis.labels`; task boundaries drawn (odd tasks shaded) and labelled ``task 0``,
``task 1``, … (the task ids of the tables); every panel of a figure shares the x-range.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlplast.analysis.correlations import (
    MIN_CORRELATION_N,
    NC1_COLUMNS,
    PHASE_LABELS,
    PROBE_COLUMN,
    CorrelationRow,
)
from rlplast.analysis.labels import axis_label, metric_title
from rlplast.analysis.load import STEP_COLUMN, TASK_COLUMN, RunData
from rlplast.analysis.scores import END_EPISODES, MAIN_METRICS, Scores
from rlplast.analysis.stats import Band, Improvement, Profile, band_label, seed_band
from rlplast.analysis.style import (
    ONE_COLUMN,
    TWO_COLUMN,
    MethodStyle,
    method_styles,
    paper_style,
    save_figure,
)

__all__ = [
    "LOG_SPAN",
    "RETURN_WINDOW",
    "draw_tasks",
    "metric_points",
    "plot_collapse",
    "plot_eval_returns",
    "plot_improvement",
    "plot_nc1_vs_plasticity",
    "plot_performance_profiles",
    "plot_returns",
    "task_return_curve",
    "task_spans",
    "use_log",
]

#: Episodes in the rolling mean of the returns figure (= the end-of-task return's episodes).
RETURN_WINDOW = END_EPISODES
#: An axis is logarithmic when its positive values span this ratio or more.
LOG_SPAN = 30.0
#: Grid points per task of the returns figure.
_POINTS_PER_TASK = 150
_BAND_ALPHA = 0.2
#: Highlight of the span where an evaluation panel's task is trained (Okabe & Ito's yellow).
_TRAINED_COLOR = "#F0E442"
_TRAINED_ALPHA = 0.3


def task_spans(runs: list[RunData]) -> list[tuple[float, float, int]]:
    """``(start, end, task)`` step spans of the tasks, from the first run with task ids on its rows.

    A task starts at the last logged step of the task before it (where the switch happened, to the
    logging resolution) and ends at its own last logged step.
    """
    for run in runs:
        t, s = run.metrics.get(TASK_COLUMN), run.metrics.get(STEP_COLUMN)
        if t is None or s is None or not np.isfinite(t).any():
            continue
        spans: list[tuple[float, float, int]] = []
        start, cur = 0.0, int(t[np.isfinite(t)][0])
        for i in range(1, len(t)):
            if np.isfinite(t[i]) and int(t[i]) != cur:
                spans.append((start, float(s[i - 1]), cur))
                start, cur = float(s[i - 1]), int(t[i])
        spans.append((start, float(s[-1]), cur))
        return spans
    return []


def use_log(values: Sequence[float] | np.ndarray, span: float = LOG_SPAN) -> bool:
    """Whether an axis showing ``values`` is logarithmic: all finite values > 0, spanning ≥ ``span``×."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return bool(v.size and (v > 0).all() and v.max() / v.min() >= span)


def _step_formatter(ax: Any) -> None:
    """Env steps as 20k, 1.5M on the x-axis."""
    from matplotlib.ticker import FuncFormatter

    def fmt(x: float, _pos: int) -> str:
        if abs(x) >= 1e6:
            return f"{x / 1e6:g}M"
        return f"{x / 1e3:g}k" if abs(x) >= 1e3 else f"{x:g}"

    ax.xaxis.set_major_formatter(FuncFormatter(fmt))


def _task_label_format(
    spans: list[tuple[float, float, int]], width_in: float, fontsize: float
) -> tuple[str, int]:
    """The task label that fits the narrowest task span: ``("task {}", 1)``, ``("T{}", 1)`` or
    ``("T{}", m)`` (every m-th task labelled)."""
    lo, hi = spans[0][0], spans[-1][1]
    narrowest = min(e - s for s, e, _ in spans) / max(hi - lo, 1e-12) * width_in * 72  # points
    longest = max(len(str(t)) for _, _, t in spans)

    def text_width(chars: int) -> float:
        return chars * 0.6 * fontsize + 4

    if text_width(5 + longest) <= narrowest:
        return "task {}", 1
    every = 1
    while text_width(1 + longest) > narrowest * every:
        every += 1
    return "T{}", every


def draw_tasks(ax: Any, spans: list[tuple[float, float, int]], label: bool = True) -> bool:
    """Shade odd tasks, mark each switch with a dotted line and (``label``) name the tasks on top.

    Tasks are named ``task 0``, ``task 1``, … (the ids of the tables); where a span is too narrow
    for that, ``T0``, ``T1``, … (every m-th task when even that does not fit).

    Returns:
        Whether the short ``T<k>`` names were used (the figure should then say what they mean).
    """
    if len(spans) < 2:
        return False
    from matplotlib.transforms import blended_transform_factory

    trans = blended_transform_factory(ax.transData, ax.transAxes)
    fontsize = 7.0
    width_in = ax.get_position().width * ax.figure.get_figwidth()
    fmt, every = _task_label_format(spans, width_in, fontsize)
    for i, (start, end, task) in enumerate(spans):
        if task % 2 == 1:
            ax.axvspan(start, end, color="0.93", zorder=0, linewidth=0)
        if start > spans[0][0]:
            ax.axvline(start, color="0.6", linewidth=0.5, linestyle=":", zorder=0.5)
        if label and i % every == 0:
            ax.text(
                (start + end) / 2,
                1.01,
                fmt.format(task),
                transform=trans,
                ha="center",
                va="bottom",
                fontsize=fontsize,
            )
    return label and fmt != "task {}"


def _no_data(path: Path, text: str) -> None:
    import matplotlib.pyplot as plt

    with paper_style():
        fig, ax = plt.subplots(figsize=(ONE_COLUMN, 1.0))
        ax.axis("off")
        ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
        save_figure(fig, path)
        plt.close(fig)


def _methods(runs: list[RunData], methods: Sequence[str] | None) -> list[str]:
    present = dict.fromkeys(r.method for r in runs)
    return [m for m in methods if m in present] if methods is not None else list(present)


def _draw_band(
    ax: Any,
    x: np.ndarray,
    band: Band,
    style: MethodStyle,
    markers: bool,
    label: str | None,
    linewidth: float | None = None,
) -> Any:
    (line,) = ax.plot(
        x,
        band.center,
        color=style.color,
        linestyle=style.linestyle,
        marker=style.marker if markers else None,
        label=label,
        linewidth=linewidth,
        zorder=3,
    )
    if (band.high > band.low).any():
        ax.fill_between(x, band.low, band.high, color=style.color, alpha=_BAND_ALPHA, linewidth=0, zorder=2)
    return line


def _legend_handles(
    methods: list[str], styles: dict[str, MethodStyle], n: dict[str, int], markers: bool
) -> list:
    from matplotlib.lines import Line2D

    handles = []
    for m in methods:
        kw = styles[m].line()
        if not markers:
            kw["marker"] = None
            kw["linewidth"] = 1.5
        handles.append(Line2D([], [], label=f"{m} (n={n[m]})", **kw))
    return handles


# ------------------------------------------------------------------------------------ returns
def task_return_curve(
    run: RunData,
    spans: list[tuple[float, float, int]],
    window: int = RETURN_WINDOW,
    points: int = _POINTS_PER_TASK,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """A run's return curve per task: the mean of the last ``window`` episodes of the task so far.

    The window restarts at each task switch: at step ``x`` of task ``k`` the value is the mean
    return of the (at most ``window``) latest episodes of task ``k`` that ended at or before ``x``;
    NaN before the task's first episode ended.

    Args:
        run: the run (episodes.csv).
        spans: the task spans (:func:`task_spans`); one segment per span.
        window: episodes in the rolling mean.
        points: evenly spaced steps per task.

    Returns:
        ``[(steps, values), …]``, one pair per span.
    """
    ep = run.episodes
    steps = ep.get("step", np.array([]))
    rets = ep.get("episode_return", np.array([]))
    tids = ep.get("task_id", np.zeros_like(steps))
    out = []
    for start, end, task in spans:
        x = np.linspace(start, end, points)
        sel = (tids == task) & np.isfinite(rets) & np.isfinite(steps)
        s, r = steps[sel], rets[sel]
        order = np.argsort(s, kind="stable")
        s, r = s[order], r[order]
        y = np.full(points, np.nan)
        if r.size:
            csum = np.concatenate([[0.0], np.cumsum(r)])
            j = np.searchsorted(s, x, side="right")  # episodes ended by x
            lo = np.maximum(j - window, 0)
            has = j > 0
            y[has] = (csum[j[has]] - csum[lo[has]]) / (j[has] - lo[has])
        out.append((x, y))
    return out


def plot_returns(runs: list[RunData], path: Path, methods: Sequence[str] | None = None) -> bool:
    """``returns.png`` / ``.pdf``: per-task rolling mean return against env step, per method.

    Args:
        runs: the runs.
        path: the PNG's path (the PDF goes next to it).
        methods: method order (default: the order of ``runs``).

    Returns:
        Whether any return was drawn (else the figure holds a "no episodes" note).
    """
    import matplotlib.pyplot as plt

    methods = _methods(runs, methods)
    spans = task_spans(runs)
    if not spans:
        last = max(
            (float(np.nanmax(r.episodes["step"])) for r in runs if r.episodes.get("step", np.array([])).size),
            default=0.0,
        )
        spans = [(0.0, last, 0)] if last > 0 else []
    styles = method_styles(methods)
    n = {m: sum(r.method == m for r in runs) for m in methods}
    # Earlier methods are drawn wider and below later ones: identical curves (a method equal to the
    # baseline until its intervention first fires) then show both colours instead of hiding one.
    widths = {m: min(1.0 + 0.4 * (len(methods) - 1 - i), 2.2) for i, m in enumerate(methods)}
    drawn = False
    with paper_style():
        fig, ax = plt.subplots(figsize=(TWO_COLUMN, 2.5), layout="constrained")
        short = draw_tasks(ax, spans)
        for mi, m in enumerate(methods):
            curves = [task_return_curve(r, spans) for r in runs if r.method == m]
            for k in range(len(spans)):
                x = curves[0][k][0]
                values = np.vstack([c[k][1] for c in curves])
                if not np.isfinite(values).any():
                    continue
                _draw_band(ax, x, seed_band(values, seed=mi), styles[m], False, None, widths[m])
                drawn = True
        if not drawn:
            plt.close(fig)
            _no_data(path, "no episodes finished: no returns to plot")
            return False
        ax.set_xlim(spans[0][0], spans[-1][1])
        _step_formatter(ax)
        ax.set_xlabel("env steps")
        ax.set_ylabel("episode return")
        ax.set_title(
            f"Return per episode: rolling mean of the task's last {RETURN_WINDOW} episodes (restarts at each "
            "task switch)",
            pad=14,
        )
        fig.legend(
            handles=_legend_handles(methods, styles, n, markers=False),
            loc="outside lower center",
            ncol=min(len(methods), 6),
            title=f"IQM over seeds; {band_label(list(n.values()))}" + ("; T<k> = task k" if short else ""),
        )
        save_figure(fig, path)
        plt.close(fig)
    return True


# ------------------------------------------------------------------------------------ metrics
def metric_points(runs: list[RunData], column: str) -> tuple[np.ndarray, np.ndarray]:
    """Where a metric column was measured, and its values there.

    Returns:
        ``(steps, values)``: the sorted union of the steps at which any of ``runs`` has a value of
        ``column``, and a ``(len(runs), len(steps))`` array of the values (NaN where a run has none
        at that step). Nothing is interpolated.
    """
    per_run = []
    for run in runs:
        x, y = run.metrics.get(STEP_COLUMN), run.metrics.get(column)
        if x is None or y is None:
            per_run.append((np.array([]), np.array([])))
            continue
        keep = np.isfinite(x) & np.isfinite(y)
        per_run.append((x[keep], y[keep]))
    steps = np.unique(np.concatenate([p[0] for p in per_run])) if per_run else np.array([])
    values = np.full((len(runs), steps.size), np.nan)
    for i, (x, y) in enumerate(per_run):
        values[i, np.searchsorted(steps, x)] = y
    return steps, values


def plot_collapse(runs: list[RunData], path: Path, methods: Sequence[str] | None = None) -> list[str]:
    """``collapse.png`` / ``.pdf``: the main NC1 and plasticity metrics at the steps they were measured.

    One panel per column of :data:`~rlplast.analysis.scores.MAIN_METRICS` present; per method the
    IQM over seeds at each measured step (markers, joined by straight segments) and its band. A
    panel whose positive values span 30× or more has a log y-axis.

    Returns:
        The metric columns drawn; empty when none is present (the figure then holds a note).
    """
    import matplotlib.pyplot as plt

    methods = _methods(runs, methods)
    present = {c for r in runs for c in r.metric_columns()}
    cols = [c for c in MAIN_METRICS if c in present]
    if not cols:
        _no_data(path, "no metrics (metrics disabled or never computed)")
        return []
    styles = method_styles(methods)
    n = {m: sum(r.method == m for r in runs) for m in methods}
    spans = task_spans(runs)
    ncols = min(len(cols), 4)
    nrows = math.ceil(len(cols) / ncols)
    xmax = max(
        (
            float(np.nanmax(r.metrics[STEP_COLUMN]))
            for r in runs
            if r.metrics.get(STEP_COLUMN, np.array([])).size
        ),
        default=1.0,
    )
    with paper_style():
        fig, axes = plt.subplots(
            nrows,
            ncols,
            figsize=(TWO_COLUMN if ncols > 1 else ONE_COLUMN, 0.45 + 1.65 * nrows),
            sharex=True,
            squeeze=False,
            layout="constrained",
        )
        short = False
        for k, (ax, col) in enumerate(zip(axes.ravel(), cols, strict=False)):
            short |= draw_tasks(ax, spans, label=k < ncols)
            bands = {}
            for mi, m in enumerate(methods):
                steps, values = metric_points([r for r in runs if r.method == m], col)
                if steps.size:
                    bands[m] = (steps, seed_band(values, seed=mi))
            every = np.concatenate(
                [np.r_[b.center, b.low, b.high] for _, b in bands.values()] or [np.array([])]
            )
            log = use_log(every)
            if log:
                ax.set_yscale("log")
            for m, (steps, band) in bands.items():
                _draw_band(ax, steps, band, styles[m], True, None)
            ax.set_title(metric_title(col), pad=12 if k < ncols else 4)
            ax.set_ylabel(axis_label(col, log))
            _step_formatter(ax)
        for ax in axes.ravel()[len(cols) :]:
            ax.axis("off")
        for ax in axes[-1]:
            ax.set_xlabel("env steps")
        for c in range(ncols):  # panels in the last row left empty: label the x-axis above them
            if (nrows - 1) * ncols + c >= len(cols) and nrows > 1:
                axes[-2][c].tick_params(labelbottom=True)
                axes[-2][c].set_xlabel("env steps")
        axes[0][0].set_xlim(0, xmax)
        fig.legend(
            handles=_legend_handles(methods, styles, n, markers=True),
            loc="outside lower center",
            ncol=min(len(methods), 6),
            title=f"IQM over seeds at the measured steps (markers); {band_label(list(n.values()))}"
            + ("; T<k> = task k" if short else ""),
        )
        save_figure(fig, path)
        plt.close(fig)
    return cols


# ------------------------------------------------------------------------------------ NC1 vs plasticity
def _find_row(rows: Sequence[CorrelationRow], scope: str, x: str, y: str) -> CorrelationRow | None:
    phase = PHASE_LABELS["later"]
    return next((c for c in rows if (c.scope, c.phase, c.x, c.y) == (scope, phase, x, y)), None)


def _r_text(row: CorrelationRow | None) -> str:
    """The Pearson r of a correlation-table row as the figure prints it (report.md's text)."""
    if row is None:
        return "r n/a"
    p = row.pearson
    if not p.ok:
        return f"r n/a ({p.reason})"
    if p.n < MIN_CORRELATION_N:
        return f"n = {p.n} < {MIN_CORRELATION_N}: r in correlations.csv only"
    return f"r = {p.format()}, n = {p.n}"


def plot_nc1_vs_plasticity(
    runs: list[RunData],
    scores: Scores,
    rows: Sequence[CorrelationRow],
    path: Path,
    methods: Sequence[str] | None = None,
) -> bool:
    """``nc1_vs_plasticity.png`` / ``.pdf``: a task's mean NC1 against its mean return (and probe ratio).

    One point per (seed, task ≥ 1) — the points of the correlation table's phase "tasks >= 1" —
    coloured by method; task 0 is drawn hollow (not in r). The legend gives each method's Pearson r
    [95 % CI] from its row of ``rows`` (the same number as report.md's table), and the ``all`` row.
    NC1 is the greedy labeling (else taken); the x-axis is logarithmic when NC1 spans 30× or more.

    Returns:
        Whether an NC1 column was present (else the figure holds a "no NC1" note).
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    methods = _methods(runs, methods)
    present = {c for r in runs for c in r.metric_columns()}
    nc1 = next((c for c in NC1_COLUMNS if c in present), None)
    if nc1 is None:
        _no_data(path, "no NC1 metric (metrics disabled or never computed)")
        return False
    styles = method_styles(methods)
    ys = [("return", "mean_return")] + ([(PROBE_COLUMN, PROBE_COLUMN)] if PROBE_COLUMN in present else [])
    points: dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for y_name, q in ys:
        points[y_name] = {}
        for m in methods:
            xs: list[float] = []
            yv: list[float] = []
            first: list[bool] = []
            for run in (r for r in runs if r.method == m):
                tasks = scores.run_tasks(scores.runs.index(run.name))
                for t in tasks:
                    xs.append(scores.get(nc1, run.name, t))
                    yv.append(scores.get(q, run.name, t))
                    first.append(t == tasks[0])
            points[y_name][m] = (np.asarray(xs), np.asarray(yv), np.asarray(first, dtype=bool))
    all_x = np.concatenate([p[0] for p in points["return"].values()] or [np.array([])])
    xlog = use_log(all_x)
    with paper_style():
        width = TWO_COLUMN if len(ys) > 1 else ONE_COLUMN + 0.4
        # the legend under each panel has a line per method and three more: room for all of them
        height = 2.4 + 0.14 * (len(points["return"]) + 3)
        fig, axes = plt.subplots(1, len(ys), figsize=(width, height), squeeze=False, layout="constrained")
        for ax, (y_name, q) in zip(axes[0], ys, strict=True):
            handles = []
            yvals = []
            for m in methods:
                x, y, is_first = points[y_name][m]
                ok = np.isfinite(x) & np.isfinite(y) & ((x > 0) if xlog else True)
                st = styles[m]
                ax.scatter(
                    x[ok & ~is_first],
                    y[ok & ~is_first],
                    s=16,
                    color=st.color,
                    marker=st.marker,
                    alpha=0.85,
                    lw=0,
                    zorder=3,
                )
                ax.scatter(
                    x[ok & is_first],
                    y[ok & is_first],
                    s=16,
                    facecolors="none",
                    edgecolors=st.color,
                    marker=st.marker,
                    lw=0.7,
                    zorder=3,
                )
                yvals += y[ok].tolist()
                row = _find_row(rows, m, nc1, y_name)
                handles.append(
                    Line2D(
                        [],
                        [],
                        color=st.color,
                        marker=st.marker,
                        linestyle="none",
                        label=f"{m}: {_r_text(row)}",
                    )
                )
            handles.append(
                Line2D(
                    [],
                    [],
                    color="none",
                    marker="none",
                    linestyle="none",
                    label=f"all methods: {_r_text(_find_row(rows, 'all', nc1, y_name))}",
                )
            )
            handles.append(
                Line2D(
                    [],
                    [],
                    color="0.4",
                    marker="o",
                    markerfacecolor="none",
                    linestyle="none",
                    label="hollow: task 0 (not in r)",
                )
            )
            if xlog:
                ax.set_xscale("log")
            ylog = y_name == PROBE_COLUMN and use_log(yvals)
            if ylog:
                ax.set_yscale("log")
            ax.set_xlabel(f"{metric_title(nc1)}, task mean ({axis_label(nc1, xlog)})")
            if y_name == "return":
                ax.set_ylabel("mean return per episode")
                ax.set_title("Return vs NC1, one point per seed × task")
            else:
                ax.set_ylabel(f"task mean ({axis_label(q, ylog)})")
                ax.set_title(f"{metric_title(q).capitalize()} vs NC1, one point per seed × task")
            ax.legend(
                handles=handles,
                loc="upper center",
                bbox_to_anchor=(0.5, -0.2),
                ncol=1,
                title="Pearson r [95% CI] of tasks ≥ 1\n(linear values; correlations.csv)",
                borderaxespad=0,
            )
        save_figure(fig, path)
        plt.close(fig)
    return True


# ------------------------------------------------------------------------------------ continual learning
def plot_eval_returns(runs: list[RunData], path: Path, methods: Sequence[str] | None = None) -> bool:
    """``eval_returns.png`` / ``.pdf``: each task's evaluation return against env step, one panel per task.

    Per method the IQM over seeds of ``eval/task_<k>/return`` at the evaluation steps (markers,
    straight segments, nothing interpolated) with its band; the random policy's return of the task
    (mean over the runs) is a grey dashed line; the training tasks are shaded and named as in
    ``returns``. A task's curve starts at the first evaluation after the agent first met it, so
    the panels show forgetting (a curve falling after its task) and transfer (a curve already high
    when its task starts).

    Returns:
        Whether any evaluation was drawn (no file is written otherwise).
    """
    import matplotlib.pyplot as plt

    methods = _methods(runs, methods)
    pattern = re.compile(r"^eval/task_(\d+)/return$")
    tasks = sorted(
        {
            int(hit.group(1))
            for r in runs
            for c, v in r.metrics.items()
            if (hit := pattern.match(c)) and np.isfinite(v).any()
        }
    )
    if not tasks:
        return False
    styles = method_styles(methods)
    n = {m: sum(r.method == m for r in runs) for m in methods}
    spans = task_spans(runs)
    ncols = min(len(tasks), 4)
    nrows = math.ceil(len(tasks) / ncols)
    with paper_style():
        fig, axes = plt.subplots(
            nrows,
            ncols,
            figsize=(TWO_COLUMN if ncols > 1 else ONE_COLUMN, 0.45 + 1.65 * nrows),
            sharex=True,
            squeeze=False,
            layout="constrained",
        )
        short = False
        for k, (ax, task) in enumerate(zip(axes.ravel(), tasks, strict=False)):
            short |= draw_tasks(ax, spans, label=k < ncols)
            for start, end, trained in spans:
                if trained == task:  # where the panel's task is the one being trained
                    ax.axvspan(
                        start, end, color=_TRAINED_COLOR, alpha=_TRAINED_ALPHA, zorder=0.2, linewidth=0
                    )
            for mi, m in enumerate(methods):
                steps, values = metric_points([r for r in runs if r.method == m], f"eval/task_{task}/return")
                if steps.size and np.isfinite(values).any():
                    _draw_band(ax, steps, seed_band(values, seed=mi), styles[m], True, None)
            randoms = [
                float(v[np.isfinite(v)][0])
                for r in runs
                if (v := r.metrics.get(f"eval/task_{task}/random_return")) is not None
                and np.isfinite(v).any()
            ]
            if randoms:
                ax.axhline(float(np.mean(randoms)), color="0.45", linestyle="--", linewidth=0.8, zorder=1)
            ax.set_title(f"evaluated on task {task}", pad=12 if k < ncols else 4)
            ax.set_ylabel("greedy return")
            _step_formatter(ax)
        for ax in axes.ravel()[len(tasks) :]:
            ax.axis("off")
        for ax in axes[-1]:
            ax.set_xlabel("env steps")
        for c in range(ncols):
            if (nrows - 1) * ncols + c >= len(tasks) and nrows > 1:
                axes[-2][c].tick_params(labelbottom=True)
                axes[-2][c].set_xlabel("env steps")
        if spans:
            axes[0][0].set_xlim(spans[0][0], spans[-1][1])
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        handles = _legend_handles(methods, styles, n, markers=True)
        handles.append(Line2D([], [], color="0.45", linestyle="--", linewidth=0.8, label="random policy"))
        handles.append(
            Patch(color=_TRAINED_COLOR, alpha=_TRAINED_ALPHA, label="the panel's task being trained")
        )
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncol=min(len(handles), 6),
            title=f"Greedy evaluation return per task: IQM over seeds at the evaluation steps; "
            f"{band_label(list(n.values()))}" + ("; T<k> = task k" if short else ""),
        )
        save_figure(fig, path)
        plt.close(fig)
    return True


def plot_performance_profiles(
    profiles: dict[str, Profile],
    path: Path,
    xlabel: str,
    methods: Sequence[str] | None = None,
    normalised: bool = False,
) -> bool:
    """``performance_profiles.png`` / ``.pdf``: rliable's performance profiles (score distributions).

    Per method the fraction of its run × task scores above each threshold τ, with the 95 %
    stratified-bootstrap band (runs resampled within each task).

    Args:
        profiles: method → its profile (:func:`~rlplast.analysis.stats.performance_profile`).
        path: the PNG's path.
        xlabel: what the scores are (the x-axis label).
        methods: method order.
        normalised: the scores are normalised (0 = random, 1 = reference: dotted lines there).

    Returns:
        Whether a profile was drawn (no file is written otherwise).
    """
    import matplotlib.pyplot as plt

    order = [m for m in (methods if methods is not None else profiles) if m in profiles]
    if not order:
        return False
    styles = method_styles(list(methods) if methods is not None else order)
    with paper_style():
        fig, ax = plt.subplots(figsize=(ONE_COLUMN, 2.6), layout="constrained")
        for m in order:
            p = profiles[m]
            st = styles[m]
            ax.plot(p.taus, p.fraction, color=st.color, linestyle=st.linestyle, label=f"{m} ({p.runs} runs)")
            ax.fill_between(p.taus, p.low, p.high, color=st.color, alpha=_BAND_ALPHA, linewidth=0)
        ax.set_ylim(-0.02, 1.02)
        if normalised:
            for x in (0.0, 1.0):  # the random policy and the reference
                ax.axvline(x, color="0.5", linestyle=":", linewidth=0.8, zorder=0.5)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("fraction of runs × tasks > τ")
        tasks = max(p.tasks for p in profiles.values())
        ax.set_title(f"Performance profiles ({tasks} tasks)")
        ax.legend(loc="upper right", title="band: 95% stratified-\nbootstrap CI", alignment="left")
        save_figure(fig, path)
        plt.close(fig)
    return True


def plot_improvement(
    pairs: Sequence[tuple[str, str, Improvement]], path: Path, methods: Sequence[str] | None = None
) -> bool:
    """``probability_of_improvement.png`` / ``.pdf``: P(X > Y) with its 95 % CI, one row per pair.

    The point is the probability that a run of X beats a run of Y on a task (ties count ½, averaged
    over tasks); the bar its stratified-bootstrap CI; 0.5 (dotted) is "neither is better".
    Coloured by X's method colour.

    Returns:
        Whether a pair was drawn (no file is written otherwise).
    """
    import matplotlib.pyplot as plt

    if not pairs:
        return False
    order = list(methods) if methods is not None else list(dict.fromkeys(x for x, _, _ in pairs))
    styles = method_styles(order + [m for x, y, _ in pairs for m in (x, y) if m not in order])
    with paper_style():
        fig, ax = plt.subplots(figsize=(ONE_COLUMN, 0.7 + 0.28 * len(pairs)), layout="constrained")
        for i, (x, _, imp) in enumerate(pairs):
            row = len(pairs) - 1 - i
            st = styles[x]
            ax.plot(
                [imp.low, imp.high],
                [row, row],
                color=st.color,
                linewidth=3,
                alpha=0.45,
                solid_capstyle="butt",
            )
            ax.plot([imp.probability], [row], color=st.color, marker=st.marker, linestyle="none")
        ax.axvline(0.5, color="0.5", linestyle=":", linewidth=0.8)
        ax.set_yticks(range(len(pairs)))
        ax.set_yticklabels([f"P({x} > {y})" for x, y, _ in reversed(pairs)])
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel("probability of improvement (95% stratified-bootstrap CI)")
        ax.grid(axis="y", visible=False)
        ax.set_title("Probability of improvement, final evaluation return")
        save_figure(fig, path)
        plt.close(fig)
    return True
