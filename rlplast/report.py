"""``rlplast report``: aggregate a sweep's run directories into tables, CSVs and plots.

Reads only files (``manifest.json``, each run's ``metrics.csv``, ``episodes.csv``, ``summary.json``),
never live agents. Definitions (see ``docs/compare.md`` for the full text):

* **mean return** of a task: mean return of the episodes that ended in the task.
* **AUC** of a task: trapezoid integral of episode return against the env step at which each
  episode ended, divided by the step span of those episodes — a step-weighted mean return, in
  return units (one episode → its return).
* **end-of-task return**: mean return of the task's last ``K`` (= 10) episodes.
* **drop vs task 0**: mean return of task 0 minus mean return of task k (k ≥ 1), per seed.
* per-task **metric**: mean over the task's logging rows of every ``collapse/…`` / ``plasticity/…``
  column (empty cells — steps without a metric computation — are ignored).
* across seeds: **IQM** (mean of the middle 50 %) with a 95 % percentile **bootstrap CI**; the
  per-method ``all`` row pools (seed, task) scores and bootstraps seeds within each task
  (stratified over tasks).
* **correlations** of NC1 with plasticity: task 0 uses every logging row of task 0 with an NC1
  value (x = NC1 at that row, y = rolling mean return / probe ratio at that row); later tasks use one
  point per (seed, task ≥ 1) (x = the task's mean NC1, y = the task's mean return / mean probe
  ratio). Each is computed per method (seeds pooled) and over all methods.
"""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from rlplast.errors import UserError
from rlplast.io import atomic_write_text
from rlplast.rundir import check_output_dir, make_output_dir, read_manifest, read_summary
from rlplast.stats import Correlation, bootstrap_ci, iqm, pearson, spearman, t_interval

#: Episodes averaged for the end-of-task return.
END_EPISODES = 10
#: Bootstrap resamples for every CI in the report.
N_BOOT = 2000
RETURN_QUANTITIES = ("mean_return", "auc", "end_return", "return_drop")
NC1_COLUMNS = ("collapse/nc1_greedy", "collapse/nc1_taken")
#: Metric columns shown in report.md and collapse.png when present (summary.csv has all of them).
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
PROBE_COLUMN = "plasticity/probe_ratio"
RETURN_COLUMN = "rollout/ep_return_mean"
#: Below this many seeds, curve bands show the range over seeds rather than a t-interval.
MIN_SEEDS_FOR_CI = 3
SUMMARY_COLUMNS = ["method", "task", "quantity", "n", "mean", "iqm", "ci_low", "ci_high"]
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


# ------------------------------------------------------------------------------------ loading
@dataclass
class RunData:
    """One finished run, read back from its directory.

    Attributes:
        name: ``<method>-s<seed>``.
        method: method name.
        seed: seed.
        path: run directory.
        metrics: metrics.csv columns as float arrays (NaN = not computed).
        episodes: episodes.csv columns as float arrays.
        summary: summary.json.
    """

    name: str
    method: str
    seed: int
    path: Path
    metrics: dict[str, np.ndarray]
    episodes: dict[str, np.ndarray]
    summary: dict[str, Any]

    def metric_columns(self) -> list[str]:
        """The ``collapse/…`` and ``plasticity/…`` columns with at least one value."""
        return [
            c
            for c, v in self.metrics.items()
            if c.startswith(("collapse/", "plasticity/")) and np.isfinite(v).any()
        ]

    def tasks(self) -> list[int]:
        """Task ids seen in episodes.csv or metrics.csv."""
        ids: set[float] = set()
        for col in (self.episodes.get("task_id"), self.metrics.get("shift/task_id")):
            if col is not None:
                ids |= set(col[np.isfinite(col)].tolist())
        return sorted(int(i) for i in ids)


# ------------------------------------------------------------------------------------ loading runs
def _read_columns(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        header: list[str] = []
        if not rows:
            with open(path, newline="") as fh:
                header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    if not rows:
        return {c: np.array([], dtype=np.float64) for c in header}

    def num(text: str | None) -> float:
        try:
            return float(text) if text not in (None, "") else math.nan
        except ValueError:
            return math.nan

    return {c: np.array([num(r.get(c)) for r in rows], dtype=np.float64) for c in rows[0]}


def load_run(path: Path, method: str | None = None, seed: int | None = None) -> RunData:
    """Read one run directory (``method``/``seed`` default to the ``<method>-s<seed>`` name)."""
    name = path.name
    if method is None or seed is None:
        head, sep, tail = name.rpartition("-s")
        if sep and tail.isdigit():
            method, seed = (method or head), (seed if seed is not None else int(tail))
        else:
            method, seed = method or name, seed if seed is not None else 0
    summary = read_summary(path / "summary.json")
    return RunData(
        name=name,
        method=method,
        seed=int(seed),
        path=path,
        metrics=_read_columns(path / "metrics.csv"),
        episodes=_read_columns(path / "episodes.csv"),
        summary=summary,
    )


def load_sweep(sweep_dir: str | Path) -> tuple[list[RunData], dict[str, dict[str, Any]]]:
    """Every finished run of a sweep and the manifest's run entries (empty without a manifest).

    With a manifest, runs in state ``done`` with a ``summary.json`` are read; without one, every
    directory under ``runs/`` holding a ``summary.json``.
    """
    sweep = Path(sweep_dir)
    if not sweep.is_dir():
        raise UserError(f"sweep directory not found: {sweep}")
    manifest = read_manifest(sweep)
    entries: dict[str, dict[str, Any]] = (manifest or {}).get("runs", {})
    runs: list[RunData] = []
    if manifest is not None:
        for name, entry in sorted(entries.items()):
            path = sweep / entry.get("run_dir", f"runs/{name}")
            if entry.get("state") == "done" and (path / "summary.json").is_file():
                runs.append(load_run(path, entry.get("method"), entry.get("seed")))
    else:
        for path in sorted((sweep / "runs").glob("*/summary.json")):
            runs.append(load_run(path.parent))
    if not runs:
        raise UserError(f"no finished runs in {sweep} (expected runs/<method>-s<seed>/summary.json)")
    return runs, entries


# ------------------------------------------------------------------------------------ per-run scores
def task_scores(run: RunData, end_episodes: int = END_EPISODES) -> dict[int, dict[str, float]]:
    """Per task: mean_return, auc, end_return, return_drop and the mean of every metric column."""
    ep = run.episodes
    steps = ep.get("step", np.array([]))
    rets = ep.get("episode_return", np.array([]))
    tids = ep.get("task_id", np.zeros_like(steps))
    mtask = run.metrics.get("shift/task_id")
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
    first = out.get(min(out)) if out else None
    for task, scores in out.items():
        if first is not None and task != min(out):
            scores["return_drop"] = first["mean_return"] - scores["mean_return"]
    return out


# ------------------------------------------------------------------------------------ aggregation
@dataclass
class Cell:
    """One row of summary.csv: a quantity of one method on one task, aggregated over seeds."""

    method: str
    task: str
    quantity: str
    n: int
    mean: float
    iqm: float
    ci_low: float
    ci_high: float

    def fmt(self, digits: int = 3) -> str:
        if self.n == 0 or not math.isfinite(self.iqm):
            return "–"
        ci = f" [{_num(self.ci_low, digits)}, {_num(self.ci_high, digits)}]" if self.n >= 2 else ""
        return f"{_num(self.iqm, digits)}{ci}"


def _num(x: float, digits: int = 3) -> str:
    if not math.isfinite(x):
        return "n/a"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 10 ** (-digits)):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}" if abs(x) < 1 else f"{x:.{max(digits - 2, 1)}f}"


def _cell(method: str, task: str, quantity: str, values: list[float], strata: list | None, seed: int) -> Cell:
    v = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(v)
    n = int(keep.sum())
    if n == 0:
        return Cell(method, task, quantity, 0, math.nan, math.nan, math.nan, math.nan)
    lo, hi = bootstrap_ci(v, iqm, n_boot=N_BOOT, seed=seed, strata=strata)
    return Cell(method, task, quantity, n, float(v[keep].mean()), float(iqm(v)), lo, hi)


def aggregate(runs: list[RunData]) -> tuple[list[Cell], dict[str, dict[int, dict[str, float]]]]:
    """summary.csv rows (method × task × quantity, plus task ``all``) and the per-run task scores."""
    scores = {run.name: task_scores(run) for run in runs}
    methods = list(dict.fromkeys(run.method for run in runs))
    cells: list[Cell] = []
    for mi, method in enumerate(methods):
        mruns = [r for r in runs if r.method == method]
        quantities = list(RETURN_QUANTITIES) + sorted({c for r in mruns for c in r.metric_columns()})
        tasks = sorted({t for r in mruns for t in scores[r.name]})
        for qi, q in enumerate(quantities):
            pooled, strata = [], []
            for task in tasks:
                vals = [scores[r.name][task].get(q, math.nan) for r in mruns if task in scores[r.name]]
                seed = 1000 * mi + 37 * qi + task
                cells.append(_cell(method, str(task), q, vals, None, seed))
                pooled += vals
                strata += [task] * len(vals)
            cells.append(_cell(method, "all", q, pooled, strata, 1000 * mi + 37 * qi + 999))
    return cells, scores


# ------------------------------------------------------------------------------------ correlations
@dataclass
class CorrelationRow:
    """One line of the NC1-vs-plasticity table."""

    scope: str
    phase: str
    x: str
    y: str
    pearson: Correlation
    spearman: Correlation

    def as_csv(self) -> list[Any]:
        p, s = self.pearson, self.spearman
        note = p.reason or s.reason
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
    runs: list[RunData], scores: dict[str, dict[int, dict[str, float]]], nc1: str, y: str, phase: str
) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) points of one correlation: ``phase`` is ``first`` (task-0 logging rows) or ``later``."""
    xs: list[float] = []
    ys: list[float] = []
    for run in runs:
        if phase == "first":
            t = run.metrics.get("shift/task_id")
            xcol = run.metrics.get(nc1)
            ycol = run.metrics.get(RETURN_COLUMN if y == "return" else y)
            if t is None or xcol is None or ycol is None or not run.tasks():
                continue
            rows = (t == min(run.tasks())) & np.isfinite(xcol)
            xs += xcol[rows].tolist()
            ys += ycol[rows].tolist()
        else:
            per_task = scores[run.name]
            first = min(per_task) if per_task else 0
            for task, sc in per_task.items():
                if task == first:
                    continue
                xs.append(sc.get(nc1, math.nan))
                ys.append(sc.get("mean_return" if y == "return" else y, math.nan))
    return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)


def correlations(runs: list[RunData], scores: dict[str, dict[int, dict[str, float]]]) -> list[CorrelationRow]:
    """Pearson and Spearman (95 % CIs) between NC1 and plasticity, per method and pooled."""
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
                    label = "task 0 (logging steps)" if phase == "first" else "tasks >= 1 (seed × task)"
                    out.append(
                        CorrelationRow(
                            scope, label, nc1, y, pearson(x_pts, y_pts), spearman(x_pts, y_pts, n_boot=N_BOOT)
                        )
                    )
    return out


# ------------------------------------------------------------------------------------ plots
def _save_png(fig: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _curve_band(runs: list[RunData], column: str, grid: np.ndarray) -> tuple[np.ndarray, ...] | None:
    curves = []
    for run in runs:
        x, y = run.metrics.get("step"), run.metrics.get(column)
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


def _task_starts(runs: list[RunData]) -> list[tuple[float, float, int]]:
    """(start, end, task) spans from the first run with task ids on its logging rows."""
    for run in runs:
        t, s = run.metrics.get("shift/task_id"), run.metrics.get("step")
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


def _grid(runs: list[RunData]) -> np.ndarray:
    last = max(
        (float(np.nanmax(r.metrics["step"])) for r in runs if r.metrics.get("step", np.array([])).size),
        default=1,
    )
    return np.linspace(0.0, last, 300)


def plot_returns(runs: list[RunData], path: Path) -> None:
    """returns.png: rolling mean return vs env step per method with a band over seeds, tasks shaded."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    spans = _task_starts(runs)
    if len(spans) > 1:
        for start, end, task in spans:
            if task % 2 == 1:
                ax.axvspan(start, end, color="0.9", zorder=0)
    grid = _grid(runs)
    drawn = False
    for method in dict.fromkeys(r.method for r in runs):
        mruns = [r for r in runs if r.method == method]
        band = _curve_band(mruns, RETURN_COLUMN, grid)
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
    _save_png(fig, path)
    plt.close(fig)


def plot_collapse(runs: list[RunData], path: Path) -> list[str]:
    """collapse.png: the main NC1 and plasticity metrics over env steps per method. Returns them."""
    import matplotlib.pyplot as plt

    present = {c for r in runs for c in r.metric_columns()}
    cols = [c for c in MAIN_METRICS if c in present]
    if not cols:
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.axis("off")
        ax.text(0.5, 0.5, "no metrics (metrics disabled or never computed)", ha="center", va="center")
        _save_png(fig, path)
        plt.close(fig)
        return []
    ncols = 2 if len(cols) > 1 else 1
    nrows = math.ceil(len(cols) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 3.2 * nrows), squeeze=False)
    grid = _grid(runs)
    spans = _task_starts(runs)
    methods = list(dict.fromkeys(r.method for r in runs))
    for ax, col in zip(axes.ravel(), cols, strict=False):
        for start, end, task in spans if len(spans) > 1 else []:
            if task % 2 == 1:
                ax.axvspan(start, end, color="0.92", zorder=0)
        # metrics are computed every metrics.every_steps: interpolate between those rows only
        bands = {m: _curve_band([r for r in runs if r.method == m], col, grid) for m in methods}
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
    _save_png(fig, path)
    plt.close(fig)
    return cols


def plot_nc1_vs_plasticity(
    runs: list[RunData], scores: dict[str, dict[int, dict[str, float]]], path: Path
) -> bool:
    """nc1_vs_plasticity.png: per (seed, task) mean NC1 vs mean return, fitted line over all points."""
    import matplotlib.pyplot as plt

    present = {c for r in runs for c in r.metric_columns()}
    nc1 = next((c for c in NC1_COLUMNS if c in present), None)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    if nc1 is None:
        ax.axis("off")
        ax.text(0.5, 0.5, "no NC1 metric (metrics disabled or never computed)", ha="center", va="center")
        _save_png(fig, path)
        plt.close(fig)
        return False
    xs_all, ys_all = [], []
    for i, method in enumerate(dict.fromkeys(r.method for r in runs)):
        xs, ys = [], []
        for run in (r for r in runs if r.method == method):
            for sc in scores[run.name].values():
                xs.append(sc.get(nc1, math.nan))
                ys.append(sc.get("mean_return", math.nan))
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
    _save_png(fig, path)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------------------ writing
def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow(["" if isinstance(v, float) and not math.isfinite(v) else v for v in row])
    return buf.getvalue()


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


@dataclass
class Report:
    """What :func:`build_report` computed (also written to disk by :func:`write_report`)."""

    runs: list[RunData]
    entries: dict[str, dict[str, Any]]
    cells: list[Cell]
    scores: dict[str, dict[int, dict[str, float]]]
    correlations: list[CorrelationRow]
    files: list[str] = field(default_factory=list)


def build_report(sweep_dir: str | Path) -> Report:
    """Load a sweep and compute every table (no file is written)."""
    runs, entries = load_sweep(sweep_dir)
    cells, scores = aggregate(runs)
    return Report(runs, entries, cells, scores, correlations(runs, scores))


def _markdown(rep: Report, sweep: Path, plots: dict[str, bool]) -> str:
    methods = list(dict.fromkeys(r.method for r in rep.runs))
    lookup = {(c.method, c.task, c.quantity): c for c in rep.cells}
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    md = [f"# Sweep report: `{sweep}`", "", f"Generated {now} from {len(rep.runs)} finished runs.", ""]

    # Runs
    md += ["## Runs", ""]
    rows = []
    all_methods = list(dict.fromkeys([*methods, *(e.get("method", "?") for e in rep.entries.values())]))
    for m in all_methods:
        mruns = [r for r in rep.runs if r.method == m]
        states = [e.get("state") for e in rep.entries.values() if e.get("method") == m]
        walls = [float(r.summary.get("wall_time_s") or math.nan) for r in mruns]
        sps_ = [float(r.summary.get("steps_per_s") or math.nan) for r in mruns]
        rows.append(
            [
                m,
                str(len(mruns)),
                str(states.count("failed")),
                str(sum(states.count(s) for s in ("pending", "running", "interrupted"))),
                ", ".join(str(r.seed) for r in sorted(mruns, key=lambda r: r.seed)) or "–",
                _num(float(np.nanmean(walls)), 3) if mruns else "–",
                _num(float(np.nanmean(sps_)), 4) if mruns else "–",
            ]
        )
    md += _table(["method", "done", "failed", "unfinished", "seeds", "wall time (s)", "steps/s"], rows)
    failed = [(n, e) for n, e in sorted(rep.entries.items()) if e.get("state") == "failed"]
    if failed:
        md += ["", "Failed runs (traceback in the run's `error.txt`):", ""]
        md += [f"- `{n}`: {e.get('error')}" for n, e in failed]
    md.append("")

    # Task plasticity
    md += [
        "## Task plasticity (IQM over seeds [95% bootstrap CI])",
        "",
        f"mean return = mean over the task's episodes; AUC = trapezoid of episode return vs step / step "
        f"span; end return = mean of the task's last {END_EPISODES} episodes; drop = task-0 mean return "
        "minus this task's. Row `all`: (seed, task) scores pooled, bootstrap stratified over tasks.",
        "",
    ]
    rows = []
    for m in methods:
        tasks = sorted({c.task for c in rep.cells if c.method == m and c.task != "all"}, key=int) + ["all"]
        for t in tasks:
            mr = lookup.get((m, t, "mean_return"))
            rows.append(
                [m, t, str(mr.n if mr else 0)]
                + [lookup[(m, t, q)].fmt() if (m, t, q) in lookup else "–" for q in RETURN_QUANTITIES]
            )
    md += _table(
        ["method", "task", "seeds", "mean return", "AUC", "end-of-task return", "drop vs task 0"], rows
    )
    md.append("")

    # Metrics per task
    md += ["## Collapse and plasticity metrics per task (IQM over seeds of the task mean)", ""]
    present = sorted({c.quantity for c in rep.cells if c.quantity.startswith(("collapse/", "plasticity/"))})
    shown = [c for c in MAIN_METRICS if c in present]
    if not shown:
        md += ["No metrics: no run logged a `collapse/…` or `plasticity/…` column (metrics disabled?).", ""]
    else:
        rows = []
        for m in methods:
            tasks = sorted({c.task for c in rep.cells if c.method == m and c.task != "all"}, key=int)
            for t in tasks:
                rows.append([m, t] + [lookup[(m, t, q)].fmt() if (m, t, q) in lookup else "–" for q in shown])
        md += _table(["method", "task", *(s.split("/", 1)[1] for s in shown)], rows)
        others = len(present) - len(shown)
        md += ["", f"All {len(present)} metric columns ({others} more) are in `summary.csv`.", ""]

    # Correlations
    md += [
        "## NC1 vs plasticity",
        "",
        "Pearson r [95% Fisher-z CI] and Spearman ρ [95% bootstrap CI]. Task 0: one point per logging "
        "row of task 0 with an NC1 value (y = rolling mean return / probe ratio at that row). Tasks ≥ 1: "
        "one point per (seed, task) (x = the task's mean NC1, y = the task's mean return / mean probe "
        "ratio). Seeds are pooled within a method; `all` pools every method.",
        "",
    ]
    if not rep.correlations:
        md += ["No NC1 column in any run (metrics disabled?): no correlations.", ""]
    else:
        rows = [
            [
                c.scope,
                c.phase,
                c.x.split("/", 1)[1],
                c.y,
                str(c.pearson.n),
                c.pearson.format(),
                c.spearman.format(),
            ]
            for c in rep.correlations
        ]
        md += _table(["scope", "phase", "NC1", "plasticity", "n", "Pearson r", "Spearman ρ"], rows)
        md.append("")

    # Plots
    md += ["## Plots", ""]
    md += ["![returns](returns.png)", ""]
    md += ["![collapse](collapse.png)" if plots["collapse"] else "collapse.png: no metrics.", ""]
    md += [
        "![nc1 vs plasticity](nc1_vs_plasticity.png)" if plots["nc1"] else "nc1_vs_plasticity.png: no NC1.",
        "",
    ]
    md += [
        "Files: `summary.csv` (method, task, quantity, n, mean, iqm, ci_low, ci_high — one row per method × "
        "task × quantity, task `all` = pooled), `correlations.csv`. Definitions: docs/compare.md.",
        "",
    ]
    return "\n".join(md)


def write_report(sweep_dir: str | Path, out: str | Path | None = None) -> Path:
    """Compute the report of a sweep and write report.md, summary.csv, correlations.csv and the PNGs.

    Args:
        sweep_dir: the sweep directory (``manifest.json`` and/or ``runs/``).
        out: output folder (default ``<sweep_dir>/report``).

    Returns:
        The output folder.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    sweep = Path(sweep_dir)
    out_dir = check_output_dir(out if out else sweep / "report", "report")
    rep = build_report(sweep)
    make_output_dir(out_dir, "report")
    atomic_write_text(
        out_dir / "summary.csv",
        _csv_text(
            SUMMARY_COLUMNS,
            [[c.method, c.task, c.quantity, c.n, c.mean, c.iqm, c.ci_low, c.ci_high] for c in rep.cells],
        ),
    )
    atomic_write_text(
        out_dir / "correlations.csv", _csv_text(CORRELATION_COLUMNS, [c.as_csv() for c in rep.correlations])
    )
    plot_returns(rep.runs, out_dir / "returns.png")
    plots = {
        "collapse": bool(plot_collapse(rep.runs, out_dir / "collapse.png")),
        "nc1": plot_nc1_vs_plasticity(rep.runs, rep.scores, out_dir / "nc1_vs_plasticity.png"),
    }
    atomic_write_text(out_dir / "report.md", _markdown(rep, sweep, plots))
    return out_dir
