"""Run the supervised track over seeds and write its report directory.

Files (every one written atomically; an existing non-empty directory is refused without
``overwrite``):

* ``config.yaml`` — the resolved config (``seed`` = the first seed); ``run.json`` — seeds and timings
  (kept out of the rows files, which are byte-identical for the same config and seeds);
* continual: ``tasks.csv`` (one row per seed × task); warm start: ``checkpoints.csv`` (one row per
  seed × checkpoint);
* ``summary.csv`` — per task (or checkpoint epoch) and pooled: n, mean, IQM and 95 % bootstrap CI of
  every quantity over seeds (the columns of :data:`rlplast.analysis.SUMMARY_COLUMNS`);
* ``correlations.csv`` — Pearson r (Fisher-z CI) and Spearman ρ (bootstrap CI), the columns of
  :data:`rlplast.analysis.CORRELATION_COLUMNS`;
* ``report.md`` and the figures, each as a PNG (300 dpi) and a PDF, in the look of ``rlplast report``
  (:mod:`rlplast.analysis.style`): IQM over seeds with the band :func:`rlplast.analysis.band_label`
  states on the figure (95 % percentile-bootstrap CI from 3 seeds, min–max of 2 seeds, none for 1:
  bounds that never leave a quantity's range, so no accuracy above 1 or NC1 below 0).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from rlplast.analysis import (
    CORRELATION_COLUMNS,
    INTERVAL_LEGEND,
    MIN_CORRELATION_N,
    ONE_COLUMN,
    PALETTE,
    SUMMARY_COLUMNS,
    TWO_COLUMN,
    Cell,
    CorrelationRow,
    axis_label,
    band_label,
    column_format,
    csv_text,
    format_cells,
    markdown_table,
    metric_title,
    paper_style,
    save_figure,
    seed_band,
    summary_cell,
    use_log,
)
from rlplast.analysis.stats import pearson, spearman
from rlplast.errors import UserError
from rlplast.io import atomic_write_json, atomic_write_text
from rlplast.rundir import check_output_dir, make_output_dir
from rlplast.supervised.config import N_DIGITS, SupervisedConfig, dump_supervised_config
from rlplast.supervised.track import (
    NC_KEYS,
    PLASTICITY_KEYS,
    Progress,
    _stderr,
    run_continual,
    run_warm_start,
)

__all__ = [
    "OUTPUT_FILES",
    "continual_correlations",
    "run_supervised",
    "warm_start_correlations",
    "write_report",
]

N_BOOT = 2000
#: Every file this module may write (removed first when overwriting).
FIGURES = ("accuracy_nc1", "acc_vs_nc1", "metrics", "final_acc_vs_epoch", "final_acc_vs_nc1")
OUTPUT_FILES = (
    "config.yaml",
    "run.json",
    "tasks.csv",
    "checkpoints.csv",
    "summary.csv",
    "correlations.csv",
    "report.md",
    *(f"{f}.{ext}" for f in FIGURES for ext in ("png", "pdf")),
)
CONTINUAL_QUANTITIES = (
    "online_acc",
    "online_acc_last_epoch",
    "train_acc",
    "test_acc",
    "nc1_batch",
    *NC_KEYS,
    *PLASTICITY_KEYS,
)
WARM_QUANTITIES = (
    "warmup_acc",
    "warmup_test_acc",
    "final_test_acc",
    "final_train_acc",
    *NC_KEYS,
    *PLASTICITY_KEYS,
)
PLOT_METRICS = ("nc1_quotient", "nc2_etf_error", "nc3", "nc4_agreement", "srank", "dormant_fraction")


# ------------------------------------------------------------------------------------ running
def prepare_out(out: Path, overwrite: bool) -> None:
    """Create ``out``; refuse a non-empty existing folder unless ``overwrite`` (then clear our files)."""
    check_output_dir(out, "report")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"output directory {out} exists and is not empty; pass --overwrite to replace it")
        make_output_dir(out, "report")  # writable, before anything is removed
        for name in OUTPUT_FILES:
            (out / name).unlink(missing_ok=True)
    make_output_dir(out, "report")


def _rows_csv(rows: list[dict[str, Any]]) -> str:
    header = list(rows[0]) if rows else []
    return csv_text(header, [[r.get(c, math.nan) for c in header] for r in rows])


def run_supervised(
    cfg: SupervisedConfig,
    out: str | Path,
    seeds: int = 1,
    overwrite: bool = False,
    progress: Progress | None = _stderr,
) -> dict[str, Any]:
    """Run ``cfg`` for seeds ``cfg.seed … cfg.seed + seeds − 1`` and write the report into ``out``.

    The rows file is rewritten after every seed, so an interrupted run keeps the finished seeds.

    Returns:
        The content of ``run.json`` (seeds, per-seed seconds, total seconds, SGD steps per second).
    """
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    out_dir = Path(out)
    prepare_out(out_dir, overwrite)
    atomic_write_text(out_dir / "config.yaml", dump_supervised_config(cfg))
    rows_name = "tasks.csv" if cfg.mode == "continual" else "checkpoints.csv"
    runner = run_continual if cfg.mode == "continual" else run_warm_start
    rows: list[dict[str, Any]] = []
    seconds: dict[str, float] = {}
    for seed in range(cfg.seed, cfg.seed + seeds):
        t0 = time.perf_counter()
        rows += runner(dataclasses.replace(cfg, seed=seed), progress)
        seconds[str(seed)] = time.perf_counter() - t0
        atomic_write_text(out_dir / rows_name, _rows_csv(rows))
    t0 = time.perf_counter()
    info: dict[str, Any] = {
        "mode": cfg.mode,
        "seeds": [int(s) for s in seconds],
        "seconds_per_seed": seconds,
        "train_seconds": sum(seconds.values()),
    }
    if cfg.mode == "continual":
        # Rows hold no timings (tasks.csv is then byte-identical for the same seed); this rate
        # includes the end-of-task metrics.
        samples = _n_train(cfg) * cfg.epochs_per_task * len(rows)
        info["sgd_samples_per_s"] = samples / info["train_seconds"] if info["train_seconds"] else math.nan
    write_report(out_dir, cfg, rows, info)
    info["report_seconds"] = time.perf_counter() - t0
    atomic_write_json(out_dir / "run.json", info)
    return info


def _n_train(cfg: SupervisedConfig) -> int:
    n = cfg.n_samples or N_DIGITS
    return n - int(sum(round(cfg.test_fraction * c) for c in _class_counts(n)))


def _class_counts(n: int) -> list[int]:
    from rlplast.supervised.data import load_digits_data

    y = load_digits_data(n).y.numpy()
    return [int((y == c).sum()) for c in np.unique(y)]


# ------------------------------------------------------------------------------------ statistics
def _col(rows: list[dict[str, Any]], key: str) -> np.ndarray:
    return np.asarray([float(r.get(key, math.nan)) for r in rows], dtype=np.float64)


def _corr(scope: str, phase: str, x: str, y: str, xs: np.ndarray, ys: np.ndarray) -> CorrelationRow:
    return CorrelationRow(scope, phase, x, y, pearson(xs, ys), spearman(xs, ys, n_boot=N_BOOT))


def continual_correlations(rows: list[dict[str, Any]], y: str = "online_acc") -> list[CorrelationRow]:
    """r(``y``, NC1) across tasks: per seed, pooled (seed × task) and on the seed-mean curve.

    Phases: all tasks; tasks ≥ 1 (task 0 starts from a random init and is the odd one out); the
    first and second half of the sequence (early vs late).
    """
    seeds = sorted({int(r["seed"]) for r in rows})
    n_tasks = max(int(r["task"]) for r in rows) + 1
    half = n_tasks // 2
    phases = {
        "all tasks": lambda t: True,
        "tasks >= 1": lambda t: t >= 1,
        f"tasks < {half}": lambda t: t < half,
        f"tasks >= {half}": lambda t: t >= half,
    }
    out: list[CorrelationRow] = []
    for x in ("nc1", "nc1_quotient"):
        for phase, keep in phases.items():
            sel = [r for r in rows if keep(int(r["task"]))]
            for seed in seeds:
                srows = [r for r in sel if int(r["seed"]) == seed]
                out.append(_corr(f"seed {seed}", phase, x, y, _col(srows, x), _col(srows, y)))
            if len(seeds) > 1:
                out.append(_corr("pooled (seed × task)", phase, x, y, _col(sel, x), _col(sel, y)))
                tasks = sorted({int(r["task"]) for r in sel})
                mx = [np.nanmean([float(r[x]) for r in sel if int(r["task"]) == t]) for t in tasks]
                my = [np.nanmean([float(r[y]) for r in sel if int(r["task"]) == t]) for t in tasks]
                out.append(_corr("seed-mean curve", phase, x, y, np.asarray(mx), np.asarray(my)))
    return out


def warm_start_correlations(rows: list[dict[str, Any]], early_epochs: int) -> list[CorrelationRow]:
    """r(final test accuracy, NC1 at the checkpoint): early (epoch ≤ ``early_epochs``), late and all."""
    seeds = sorted({int(r["seed"]) for r in rows})
    phases = {
        f"epoch <= {early_epochs}": lambda e: e <= early_epochs,
        f"epoch > {early_epochs}": lambda e: e > early_epochs,
        "all checkpoints": lambda e: True,
    }
    out: list[CorrelationRow] = []
    for x in ("nc1", "nc1_quotient", "epoch"):
        for phase, keep in phases.items():
            sel = [r for r in rows if keep(int(r["epoch"]))]
            for seed in seeds:
                srows = [r for r in sel if int(r["seed"]) == seed]
                out.append(
                    _corr(
                        f"seed {seed}",
                        phase,
                        x,
                        "final_test_acc",
                        _col(srows, x),
                        _col(srows, "final_test_acc"),
                    )
                )
            if len(seeds) > 1:
                out.append(
                    _corr(
                        "pooled (seed × checkpoint)",
                        phase,
                        x,
                        "final_test_acc",
                        _col(sel, x),
                        _col(sel, "final_test_acc"),
                    )
                )
    return out


def _summary(rows: list[dict[str, Any]], key: str, quantities: tuple[str, ...], label: str) -> list[Cell]:
    """Cells per ``key`` value (task / epoch) and pooled (``all``), IQM with bootstrap CI over seeds."""
    groups = sorted({int(r[key]) for r in rows})
    cells = []
    for qi, q in enumerate(quantities):
        pooled: list[float] = []
        strata: list[int] = []
        for g in groups:
            vals = [float(r.get(q, math.nan)) for r in rows if int(r[key]) == g]
            cells.append(summary_cell(label, str(g), q, vals, None, 37 * qi + g))
            pooled += vals
            strata += [g] * len(vals)
        cells.append(summary_cell(label, "all", q, pooled, strata, 37 * qi + 99_991))
    return cells


# ------------------------------------------------------------------------------------ plots
#: Up to this many points per curve, each measured point gets a marker.
MAX_MARKED_POINTS = 40


def _grid(rows: list[dict[str, Any]], key: str, q: str) -> tuple[np.ndarray, np.ndarray]:
    """``(groups, values)``: the sorted ``key`` values (tasks or epochs) and a (seeds, groups) array."""
    groups = sorted({int(r[key]) for r in rows})
    seeds = sorted({int(r["seed"]) for r in rows})
    grid = np.full((len(seeds), len(groups)), np.nan)
    for r in rows:
        grid[seeds.index(int(r["seed"])), groups.index(int(r[key]))] = float(r.get(q, math.nan))
    return np.asarray(groups), grid


def _plot_band(
    ax: Any,
    rows: list[dict[str, Any]],
    key: str,
    q: str,
    color: str,
    marker: str = "o",
    label: str | None = None,
) -> np.ndarray:
    """IQM over seeds of ``q`` against ``key`` with its band; returns every value drawn (for the axis scale)."""
    x, grid = _grid(rows, key, q)
    band = seed_band(grid)
    ax.plot(
        x,
        band.center,
        color=color,
        marker=marker if x.size <= MAX_MARKED_POINTS else None,
        label=label,
        zorder=3,
    )
    if (band.high > band.low).any():
        ax.fill_between(x, band.low, band.high, color=color, alpha=0.2, linewidth=0, zorder=2)
    return np.r_[band.center, band.low, band.high]


def _integer_ticks(ax: Any) -> None:
    """Tasks and epochs are integers: no 2.5 on the x-axis."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _set_log(ax: Any, values: np.ndarray, axis: str = "y") -> bool:
    log = use_log(values)
    if log:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    return log


def _band_legend(fig: Any, n_seeds: int, entries: list[tuple[str, str, str]]) -> None:
    """One legend under the figure: ``entries`` (label, colour, marker) titled with the band's meaning."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, marker=m, label=lab) for lab, c, m in entries]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=max(len(handles), 1),
        title=f"IQM over {n_seeds} seed{'s' if n_seeds != 1 else ''}; {band_label([n_seeds])}",
    )


def _pick_row(corrs: list[CorrelationRow], phase: str, x: str, scope_prefix: str) -> CorrelationRow | None:
    """The pooled row of a phase (several seeds), else the single seed's row."""
    rows = [c for c in corrs if c.phase == phase and c.x == x]
    return next((c for c in rows if c.scope.startswith(scope_prefix)), rows[0] if rows else None)


def _scatter(
    fig: Any,
    ax: Any,
    x: np.ndarray,
    y: np.ndarray,
    color_by: np.ndarray,
    cbar_label: str,
    row: CorrelationRow | None,
) -> None:
    """Points coloured by ``color_by`` (viridis), a log x-axis when ``x`` spans 30×, and the r of ``row``
    (a row of correlations.csv); the least-squares line only on a linear x-axis (it is a line in x)."""
    keep = np.isfinite(x) & np.isfinite(y)
    xlog = _set_log(ax, x[keep], "x")
    if xlog:
        keep &= x > 0
    sc = ax.scatter(
        x[keep], y[keep], c=color_by[keep], s=12, cmap="viridis", alpha=0.85, linewidths=0, zorder=3
    )
    from matplotlib.ticker import MaxNLocator

    cbar = fig.colorbar(sc, ax=ax, label=cbar_label, pad=0.02)
    cbar.locator = MaxNLocator(integer=True)
    cbar.update_ticks()
    if row is None or not row.pearson.ok:
        text = f"r n/a ({row.pearson.reason})" if row is not None else "r n/a"
    elif row.pearson.n < MIN_CORRELATION_N:
        text = f"n = {row.pearson.n} < {MIN_CORRELATION_N}: r in correlations.csv only"
    else:
        text = f"{row.scope}, {row.phase}: Pearson r = {row.pearson.format()}, n = {row.pearson.n}"
    if not xlog and keep.sum() >= 2 and np.ptp(x[keep]) > 0:
        slope, icept = np.polyfit(x[keep], y[keep], 1)
        xl = np.linspace(x[keep].min(), x[keep].max(), 50)
        ax.plot(
            xl, slope * xl + icept, color="0.2", linestyle="--", linewidth=0.9, label="least-squares line"
        )
        ax.legend(loc="best")
    ax.set_title(text, fontsize=7)


def _plots_continual(out: Path, rows: list[dict[str, Any]], corrs: list[CorrelationRow]) -> list[str]:
    import matplotlib.pyplot as plt

    n_seeds = len({int(r["seed"]) for r in rows})
    files = []
    with paper_style():
        fig, axes = plt.subplots(2, 1, figsize=(ONE_COLUMN, 3.6), sharex=True, layout="constrained")
        _plot_band(axes[0], rows, "task", "online_acc", PALETTE[0])
        axes[0].set_title(metric_title("online_acc"))
        axes[0].set_ylabel(axis_label("online_acc"))
        drawn = _plot_band(axes[1], rows, "task", "nc1", PALETTE[1], marker="s")
        axes[1].set_title(f"{metric_title('nc1')} at the end of the task")
        axes[1].set_ylabel(axis_label("nc1", _set_log(axes[1], drawn)))
        axes[1].set_xlabel("task")
        _integer_ticks(axes[1])
        _band_legend(fig, n_seeds, [("online accuracy", PALETTE[0], "o"), ("NC1", PALETTE[1], "s")])
        files += save_figure(fig, out / "accuracy_nc1.png")
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(ONE_COLUMN + 0.5, 2.9), layout="constrained")
        _scatter(
            fig,
            ax,
            _col(rows, "nc1"),
            _col(rows, "online_acc"),
            _col(rows, "task"),
            "task",
            _pick_row(corrs, "all tasks", "nc1", "pooled"),
        )
        ax.set_xlabel(
            f"{metric_title('nc1')} at the end of the task ({axis_label('nc1', ax.get_xscale() == 'log')})"
        )
        ax.set_ylabel(f"{metric_title('online_acc')} ({axis_label('online_acc')})")
        files += save_figure(fig, out / "acc_vs_nc1.png")
        plt.close(fig)

        fig, axes = plt.subplots(2, 3, figsize=(TWO_COLUMN, 3.7), sharex=True, layout="constrained")
        for ax, q in zip(axes.ravel(), PLOT_METRICS, strict=True):
            drawn = _plot_band(ax, rows, "task", q, PALETTE[2], marker="D")
            ax.set_title(metric_title(q))
            ax.set_ylabel(axis_label(q, _set_log(ax, drawn)))
        for ax in axes[1]:
            ax.set_xlabel("task")
            _integer_ticks(ax)
        _band_legend(fig, n_seeds, [("IQM over seeds", PALETTE[2], "D")])
        files += save_figure(fig, out / "metrics.png")
        plt.close(fig)
    return [f.name for f in files]


def _plots_warm(
    out: Path, rows: list[dict[str, Any]], early_epochs: int, corrs: list[CorrelationRow]
) -> list[str]:
    import matplotlib.pyplot as plt

    n_seeds = len({int(r["seed"]) for r in rows})
    files = []
    with paper_style():
        fig, axes = plt.subplots(2, 1, figsize=(ONE_COLUMN + 0.4, 3.8), sharex=True, layout="constrained")
        _plot_band(axes[0], rows, "epoch", "final_test_acc", PALETTE[0], "o")
        _plot_band(axes[0], rows, "epoch", "warmup_test_acc", PALETTE[1], "s")
        axes[0].set_title("Test accuracy per warm-up checkpoint")
        axes[0].set_ylabel(axis_label("final_test_acc"))
        drawn = _plot_band(axes[1], rows, "epoch", "nc1", PALETTE[2], "^")
        axes[1].set_title(f"{metric_title('nc1')} at the checkpoint (warm-up data)")
        axes[1].set_ylabel(axis_label("nc1", _set_log(axes[1], drawn)))
        axes[1].set_xlabel("warm-up epoch of the checkpoint")
        _integer_ticks(axes[1])
        for ax in axes:
            ax.axvline(early_epochs, color="0.5", linestyle=":", linewidth=0.8)
        axes[0].text(
            early_epochs,
            0.03,
            " early | late ",
            transform=axes[0].get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=6,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5},
        )
        _band_legend(
            fig,
            n_seeds,
            [
                ("final (after fine-tuning)", PALETTE[0], "o"),
                ("at the checkpoint", PALETTE[1], "s"),
            ],
        )
        files += save_figure(fig, out / "final_acc_vs_epoch.png")
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(ONE_COLUMN + 0.5, 2.9), layout="constrained")
        _scatter(
            fig,
            ax,
            _col(rows, "nc1"),
            _col(rows, "final_test_acc"),
            _col(rows, "epoch"),
            "checkpoint epoch",
            _pick_row(corrs, "all checkpoints", "nc1", "pooled"),
        )
        ax.set_xlabel(
            f"{metric_title('nc1')} at the checkpoint ({axis_label('nc1', ax.get_xscale() == 'log')})"
        )
        ax.set_ylabel(f"{metric_title('final_test_acc')} ({axis_label('final_test_acc')})")
        files += save_figure(fig, out / "final_acc_vs_nc1.png")
        plt.close(fig)
    return [f.name for f in files]


# ------------------------------------------------------------------------------------ writing
def _corr_table(rows: list[CorrelationRow]) -> list[str]:
    shown = [c for c in rows if c.shown()]
    md = markdown_table(
        ["scope", "phase", "x", "y", "n", "Pearson r [95% CI]", "Spearman ρ [95% CI]"],
        [
            [c.scope, c.phase, c.x, c.y, str(c.pearson.n), c.pearson.format(), c.spearman.format()]
            for c in shown
        ],
    )
    hidden = len(rows) - len(shown)
    if hidden:
        md += [
            "",
            f"{hidden} of {len(rows)} rows have fewer than {MIN_CORRELATION_N} points or could not be computed: "
            "they are in `correlations.csv`, with the reason in `note`.",
        ]
    return md


def _estimate_table(cells: list[Cell], first: str, groups: list[str], quantities: list[str]) -> list[str]:
    """Rows per group (task / epoch) and ``all``: seeds, seed × <group> and each quantity's estimate."""
    lookup = {(c.task, c.quantity): c for c in cells}
    columns = {q: format_cells([lookup.get((g, q)) for g in groups]) for q in quantities}
    rows = []
    for i, g in enumerate(groups):
        c = next((lookup[(g, q)] for q in quantities if (g, q) in lookup), None)
        counts = (
            [str(c.seeds) if c else "0", str(c.n) if c else "0"]
            if g == "all"
            else [str(c.n) if c else "0", "–"]
        )
        rows.append([g, *counts, *(columns[q][i] for q in quantities)])
    return markdown_table([first, "seeds", f"seed × {first}", *quantities], rows)


def write_report(
    out: Path, cfg: SupervisedConfig, rows: list[dict[str, Any]], info: dict[str, Any]
) -> list[str]:
    """Write summary.csv, correlations.csv, report.md and the figures (PNG + PDF) for finished ``rows``.

    Returns:
        The names of the files written.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    continual = cfg.mode == "continual"
    key = "task" if continual else "epoch"
    label = "continual" if continual else "warm_start"
    quantities = CONTINUAL_QUANTITIES if continual else WARM_QUANTITIES
    cells = _summary(rows, key, quantities, label)
    corrs = (
        continual_correlations(rows)
        if continual
        else warm_start_correlations(rows, cfg.warm_start.early_epochs)
    )
    atomic_write_text(out / "summary.csv", csv_text(SUMMARY_COLUMNS, [c.as_csv() for c in cells]))
    atomic_write_text(out / "correlations.csv", csv_text(CORRELATION_COLUMNS, [c.as_csv() for c in corrs]))
    plots = (
        _plots_continual(out, rows, corrs)
        if continual
        else _plots_warm(out, rows, cfg.warm_start.early_epochs, corrs)
    )
    seeds = sorted({int(r["seed"]) for r in rows})
    md = [
        f"# Supervised track report ({cfg.mode})",
        "",
        f"Seeds {', '.join(map(str, seeds))}; training took {info['train_seconds']:.1f} s "
        f"({', '.join(f'seed {s}: {v:.1f} s' for s, v in info['seconds_per_seed'].items())}).",
        "",
        "Config (resolved): `config.yaml`. Values are IQM over seeds; row `all` pools every (seed, "
        f"{key}) value (its count in column `seed × {key}`) with the bootstrap stratified by {key}.",
        "",
        INTERVAL_LEGEND,
        "",
    ]
    if continual:
        groups = sorted({int(r["task"]) for r in rows})
        shown = [g for g in groups if g < 5 or g % 10 == 0 or g == groups[-1]]
        main = ["online_acc", "nc1", "nc1_quotient", "nc4_agreement", "srank", "dormant_fraction"]
        md += [
            f"## Per task ({cfg.n_tasks} tasks; tasks 0–4, every 10th and the last shown; all in `summary.csv`)",
            "",
            "online accuracy = fraction of the task's training samples predicted correctly before the update "
            "that uses them; NC metrics on the penultimate (last hidden, post-ReLU) features of the task's "
            "training set after the task.",
            "",
        ]
        md += _estimate_table(cells, "task", [*map(str, shown), "all"], main)
        md += ["", "## Accuracy vs NC1 across tasks", ""]
        md += [
            "Pearson r [Fisher-z 95% CI], Spearman ρ [bootstrap 95% CI]. `seed s`: one point per task of "
            "that seed; `pooled`: one point per (seed, task); `seed-mean curve`: the per-task means over "
            "seeds (closest to the paper's single curve). The paper: r(accuracy, NC1) ≈ −0.945 over 140 "
            "permuted-MNIST tasks. The r on `acc_vs_nc1.png` is the pooled (else seed) row of phase `all tasks`.",
            "",
        ]
    else:
        groups = sorted({int(r["epoch"]) for r in rows})
        main = ["warmup_acc", "warmup_test_acc", "final_test_acc", "nc1", "nc1_quotient", "srank"]
        ws = cfg.warm_start
        md += [
            f"## Per checkpoint (warm-up on {ws.warmup_fraction:g} of the training split for "
            f"{ws.warmup_epochs} epochs, then {ws.finetune_epochs} epochs on all of it)",
            "",
            "NC metrics on the warm-up data at the checkpoint; final test accuracy after fine-tuning the "
            "checkpoint on the whole training split.",
            "",
        ]
        md += _estimate_table(cells, "epoch", [*map(str, groups), "all"], main)
        md += ["", "## Final test accuracy vs NC1 at the checkpoint", ""]
        md += [
            "The paper (ResNet-18, CIFAR-10): r ≈ +0.91 over the first 100 warm-up epochs, fading to ≈ 0 "
            "later. Rows with x = epoch show the plain warm-start trend. The r on `final_acc_vs_nc1.png` is "
            "the pooled (else seed) row of phase `all checkpoints`.",
            "",
        ]
    md += _corr_table(corrs)
    md += ["", "## Plots", ""]
    pngs = [p for p in plots if p.endswith(".png")]
    md += [f"![{p}]({p})" for p in pngs]
    md += ["", "Vector versions: " + ", ".join(f"`{p}`" for p in plots if not p.endswith(".png")) + "."]
    rate = info.get("sgd_samples_per_s")
    md += [
        "",
        "Files: `config.yaml`, `run.json` (timings), "
        + ("`tasks.csv`" if continual else "`checkpoints.csv`")
        + ", `summary.csv`, `correlations.csv`."
        + (
            f" Training speed: {column_format([rate])(rate)} SGD samples/s including metrics." if rate else ""
        ),
        "",
    ]
    atomic_write_text(out / "report.md", "\n".join(md))
    return ["summary.csv", "correlations.csv", "report.md", *plots]
