"""The report's figures (matplotlib, imported only when a figure is drawn).

* ``returns.png`` — :func:`plot_returns`: rolling mean return against env step per method.
* ``collapse.png`` — :func:`plot_collapse`: the main NC1 and plasticity metrics over env steps.
* ``nc1_vs_plasticity.png`` — :func:`plot_nc1_vs_plasticity`: one point per (seed, task).

Curves of different seeds are interpolated on a common grid of env steps and drawn as the mean with
a band over seeds (:func:`curve_band`); odd tasks are shaded.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from rlplast.analysis.correlations import NC1_COLUMNS
from rlplast.analysis.load import RETURN_COLUMN, STEP_COLUMN, TASK_COLUMN, RunData
from rlplast.analysis.scores import MAIN_METRICS, Scores
from rlplast.analysis.stats import pearson, t_interval

__all__ = [
    "MIN_SEEDS_FOR_CI",
    "band_label",
    "curve_band",
    "plot_collapse",
    "plot_nc1_vs_plasticity",
    "plot_returns",
    "save_png",
    "step_grid",
    "task_spans",
]

#: Below this many seeds, curve bands show the range over seeds rather than a t-interval.
MIN_SEEDS_FOR_CI = 3


def save_png(fig: Any, path: Path) -> None:
    """Save a matplotlib figure as a PNG atomically (a temporary file renamed over ``path``)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def curve_band(runs: list[RunData], column: str, grid: np.ndarray) -> tuple[np.ndarray, ...] | None:
    """Mean and band over runs of a metrics.csv column, interpolated on ``grid`` (env steps).

    Each run's finite values are interpolated linearly (no extrapolation beyond its logged range).
    The band is a 95 % Student-t interval from :data:`MIN_SEEDS_FOR_CI` runs on, else the min–max
    range.

    Returns:
        ``(mean, low, high)`` arrays shaped like ``grid``, or None when no run has a value.
    """
    curves = []
    for run in runs:
        x, y = run.metrics.get(STEP_COLUMN), run.metrics.get(column)
        if x is None or y is None:
            continue
        keep = np.isfinite(x) & np.isfinite(y)
        if keep.sum() < 1:
            continue
        x, y = x[keep], y[keep]
        c = np.interp(grid, x, y)
        c[(grid < x[0]) | (grid > x[-1])] = np.nan
        curves.append(c)
    if not curves:
        return None
    stacked = np.vstack(curves)
    if len(curves) < MIN_SEEDS_FOR_CI:
        # A t-interval from 2 seeds is ~13 standard errors wide: show the seeds' range instead.
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(stacked, 0), np.nanmin(stacked, 0), np.nanmax(stacked, 0)
    return t_interval(stacked, axis=0)


def band_label(n_seeds: int) -> str:
    """What the shaded band around a mean curve shows."""
    return "95% CI over seeds" if n_seeds >= MIN_SEEDS_FOR_CI else "min-max over seeds"


def task_spans(runs: list[RunData]) -> list[tuple[float, float, int]]:
    """``(start, end, task)`` step spans of the tasks, from the first run with task ids on its rows."""
    for run in runs:
        t, s = run.metrics.get(TASK_COLUMN), run.metrics.get(STEP_COLUMN)
        if t is None or s is None or not np.isfinite(t).any():
            continue
        spans: list[tuple[float, float, int]] = []
        start, cur = 0.0, int(t[0])
        for i in range(1, len(t)):
            if np.isfinite(t[i]) and int(t[i]) != cur:
                spans.append((start, float(s[i - 1]), cur))
                start, cur = float(s[i - 1]), int(t[i])
        spans.append((start, float(s[-1]), cur))
        return spans
    return []


def step_grid(runs: list[RunData], points: int = 300) -> np.ndarray:
    """``points`` evenly spaced env steps from 0 to the last logged step of any run."""
    last = max(
        (
            float(np.nanmax(r.metrics[STEP_COLUMN]))
            for r in runs
            if r.metrics.get(STEP_COLUMN, np.array([])).size
        ),
        default=1,
    )
    return np.linspace(0.0, last, points)


def plot_returns(runs: list[RunData], path: Path) -> None:
    """returns.png: rolling mean return vs env step per method with a band over seeds, tasks shaded."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    spans = task_spans(runs)
    if len(spans) > 1:
        for start, end, task in spans:
            if task % 2 == 1:
                ax.axvspan(start, end, color="0.9", zorder=0)
    grid = step_grid(runs)
    drawn = False
    for method in dict.fromkeys(r.method for r in runs):
        mruns = [r for r in runs if r.method == method]
        band = curve_band(mruns, RETURN_COLUMN, grid)
        if band is None:
            continue
        mean, lo, hi = band
        (line,) = ax.plot(grid, mean, label=f"{method} (n={len(mruns)})")
        ax.fill_between(grid, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
        drawn = True
    if not drawn:
        ax.text(0.5, 0.5, "no returns logged yet", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=8)
    ax.set_xlabel("env step")
    ax.set_ylabel("episode return (rolling mean)")
    n_min = min((sum(r.method == m for r in runs) for m in {r.method for r in runs}), default=0)
    ax.set_title(f"Return vs env step (mean, band = {band_label(n_min)}; grey = odd tasks)")
    save_png(fig, path)
    plt.close(fig)


def plot_collapse(runs: list[RunData], path: Path) -> list[str]:
    """collapse.png: the main NC1 and plasticity metrics over env steps per method.

    Returns:
        The metric columns drawn (:data:`rlplast.analysis.scores.MAIN_METRICS` present); empty
        when none is, and the figure then holds a "no metrics" note.
    """
    import matplotlib.pyplot as plt

    present = {c for r in runs for c in r.metric_columns()}
    cols = [c for c in MAIN_METRICS if c in present]
    if not cols:
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.axis("off")
        ax.text(0.5, 0.5, "no metrics (metrics disabled or never computed)", ha="center", va="center")
        save_png(fig, path)
        plt.close(fig)
        return []
    ncols = 2 if len(cols) > 1 else 1
    nrows = math.ceil(len(cols) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 3.2 * nrows), squeeze=False)
    grid = step_grid(runs)
    spans = task_spans(runs)
    methods = list(dict.fromkeys(r.method for r in runs))
    for ax, col in zip(axes.ravel(), cols, strict=False):
        for start, end, task in spans if len(spans) > 1 else []:
            if task % 2 == 1:
                ax.axvspan(start, end, color="0.92", zorder=0)
        # metrics are computed every metrics.every_steps: interpolate between those rows only
        bands = {m: curve_band([r for r in runs if r.method == m], col, grid) for m in methods}
        allv = np.concatenate(
            [b[0][np.isfinite(b[0])] for b in bands.values() if b is not None] or [np.array([])]
        )
        # Quantities spanning orders of magnitude (NC1, a diverging feature norm) read better on a log axis.
        log = bool(allv.size and (allv > 0).all() and allv.max() / allv.min() > 50)
        if log:
            ax.set_yscale("log")
        for i, method in enumerate(methods):
            band = bands[method]
            if band is None:
                continue
            mean, lo, hi = band
            if log:  # a band reaching below zero has no place on a log axis: leave that part out
                lo = np.where(lo > 0, lo, np.nan)
            color = f"C{i % 10}"
            ax.plot(grid, mean, color=color, label=method)
            ax.fill_between(grid, lo, hi, color=color, alpha=0.2, linewidth=0)
        ax.set_title(col, fontsize=9)
        ax.set_xlabel("env step", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(cols) :]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)
    return cols


def plot_nc1_vs_plasticity(runs: list[RunData], scores: Scores, path: Path) -> bool:
    """nc1_vs_plasticity.png: per (seed, task) mean NC1 vs mean return, fitted line over all points.

    Returns:
        Whether an NC1 column was present (else the figure holds a "no NC1" note).
    """
    import matplotlib.pyplot as plt

    present = {c for r in runs for c in r.metric_columns()}
    nc1 = next((c for c in NC1_COLUMNS if c in present), None)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    if nc1 is None:
        ax.axis("off")
        ax.text(0.5, 0.5, "no NC1 metric (metrics disabled or never computed)", ha="center", va="center")
        save_png(fig, path)
        plt.close(fig)
        return False
    xs_all: list[float] = []
    ys_all: list[float] = []
    for i, method in enumerate(dict.fromkeys(r.method for r in runs)):
        xs, ys = [], []
        for run in (r for r in runs if r.method == method):
            for task in scores.run_tasks(scores.runs.index(run.name)):
                xs.append(scores.get(nc1, run.name, task))
                ys.append(scores.get("mean_return", run.name, task))
        x, y = np.asarray(xs), np.asarray(ys)
        keep = np.isfinite(x) & np.isfinite(y)
        ax.scatter(x[keep], y[keep], s=18, color=f"C{i % 10}", label=method, alpha=0.8)
        xs_all += x[keep].tolist()
        ys_all += y[keep].tolist()
    x, y = np.asarray(xs_all), np.asarray(ys_all)
    r = pearson(x, y)
    if x.size >= 2 and np.ptp(x) > 0:
        slope, icept = np.polyfit(x, y, 1)
        xl = np.linspace(x.min(), x.max(), 50)
        ax.plot(xl, slope * xl + icept, "k--", linewidth=1, label=f"fit (Pearson r = {r.format()})")
    if not xs_all:
        ax.text(0.5, 0.5, "no (NC1, return) pairs", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(f"{nc1} (task mean)")
    ax.set_ylabel("mean episode return of the task")
    ax.set_title("NC1 vs plasticity: one point per (seed, task)")
    ax.legend(fontsize=7)
    save_png(fig, path)
    plt.close(fig)
    return True
