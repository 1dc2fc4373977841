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
* ``report.md`` and PNG plots.
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
    SUMMARY_COLUMNS,
    CorrelationRow,
    csv_text,
    format_number,
    markdown_table,
    save_png,
    summary_cell,
)
from rlplast.analysis.stats import pearson, spearman, t_interval
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
OUTPUT_FILES = (
    "config.yaml",
    "run.json",
    "tasks.csv",
    "checkpoints.csv",
    "summary.csv",
    "correlations.csv",
    "report.md",
    "accuracy_nc1.png",
    "acc_vs_nc1.png",
    "metrics.png",
    "final_acc_vs_epoch.png",
    "final_acc_vs_nc1.png",
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


def _summary(rows: list[dict[str, Any]], key: str, quantities: tuple[str, ...], label: str) -> list[Any]:
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
def _band(rows: list[dict[str, Any]], key: str, q: str) -> tuple[np.ndarray, ...]:
    groups = sorted({int(r[key]) for r in rows})
    seeds = sorted({int(r["seed"]) for r in rows})
    grid = np.full((len(seeds), len(groups)), np.nan)
    for r in rows:
        grid[seeds.index(int(r["seed"])), groups.index(int(r[key]))] = float(r.get(q, math.nan))
    mean, lo, hi = t_interval(grid, axis=0)
    return np.asarray(groups), mean, lo, hi


def _plot_band(
    ax: Any, rows: list[dict[str, Any]], key: str, q: str, color: str, label: str | None = None
) -> None:
    x, mean, lo, hi = _band(rows, key, q)
    ax.plot(x, mean, color=color, label=label)
    ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)


def _log_if_wide(ax: Any, values: np.ndarray) -> None:
    v = values[np.isfinite(values)]
    if v.size and (v > 0).all() and v.max() / v.min() > 30:
        ax.set_yscale("log")


def _scatter_fit(
    ax: Any, x: np.ndarray, y: np.ndarray, color_by: np.ndarray, cbar_label: str, fig: Any
) -> None:
    keep = np.isfinite(x) & np.isfinite(y)
    sc = ax.scatter(x[keep], y[keep], c=color_by[keep], s=14, cmap="viridis", alpha=0.85)
    fig.colorbar(sc, ax=ax, label=cbar_label)
    r = pearson(x, y)
    if keep.sum() >= 2 and np.ptp(x[keep]) > 0:
        slope, icept = np.polyfit(x[keep], y[keep], 1)
        xl = np.linspace(x[keep].min(), x[keep].max(), 50)
        ax.plot(
            xl, slope * xl + icept, "k--", linewidth=1, label=f"least-squares fit, Pearson r = {r.format()}"
        )
        ax.legend(fontsize=8)


def _plots_continual(out: Path, rows: list[dict[str, Any]]) -> list[str]:
    import matplotlib.pyplot as plt

    n_seeds = len({int(r["seed"]) for r in rows})
    fig, axes = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    _plot_band(axes[0], rows, "task", "online_acc", "C0")
    axes[0].set_ylabel("online accuracy")
    _plot_band(axes[1], rows, "task", "nc1", "C3")
    _log_if_wide(axes[1], _col(rows, "nc1"))
    axes[1].set_ylabel("NC1 (end of task)")
    axes[1].set_xlabel("task")
    axes[0].set_title(f"Permuted digits: online accuracy and NC1 per task (mean ± 95% CI, {n_seeds} seeds)")
    fig.tight_layout()
    save_png(fig, out / "accuracy_nc1.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    _scatter_fit(ax, _col(rows, "nc1"), _col(rows, "online_acc"), _col(rows, "task"), "task", fig)
    ax.set_xlabel("NC1 at the end of the task")
    ax.set_ylabel("online accuracy of the task")
    ax.set_title("Accuracy vs NC1: one point per (seed, task)")
    save_png(fig, out / "acc_vs_nc1.png")
    plt.close(fig)

    fig, axes = plt.subplots(2, 3, figsize=(12, 5.5), sharex=True)
    for ax, q in zip(axes.ravel(), PLOT_METRICS, strict=True):
        _plot_band(ax, rows, "task", q, "C2")
        ax.set_title(q, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes[1]:
        ax.set_xlabel("task", fontsize=8)
    fig.tight_layout()
    save_png(fig, out / "metrics.png")
    plt.close(fig)
    return ["accuracy_nc1.png", "acc_vs_nc1.png", "metrics.png"]


def _plots_warm(out: Path, rows: list[dict[str, Any]], early_epochs: int) -> list[str]:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    _plot_band(ax, rows, "epoch", "final_test_acc", "C0", "final test accuracy (after fine-tuning)")
    _plot_band(ax, rows, "epoch", "warmup_test_acc", "C1", "test accuracy at the checkpoint")
    ax.set_xlabel("warm-up epoch of the checkpoint")
    ax.set_ylabel("test accuracy")
    ax.axvline(early_epochs, color="0.6", linestyle=":", linewidth=1)
    ax2 = ax.twinx()
    _plot_band(ax2, rows, "epoch", "nc1", "C3", "NC1 at the checkpoint (right axis)")
    _log_if_wide(ax2, _col(rows, "nc1"))
    ax2.set_ylabel("NC1 (warm-up data)", color="C3")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="lower right")
    ax.set_title("Warm start: final accuracy vs checkpoint epoch (mean ± 95% CI over seeds)")
    save_png(fig, out / "final_acc_vs_epoch.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    _scatter_fit(
        ax, _col(rows, "nc1"), _col(rows, "final_test_acc"), _col(rows, "epoch"), "checkpoint epoch", fig
    )
    ax.set_xlabel("NC1 at the checkpoint (warm-up data)")
    ax.set_ylabel("final test accuracy")
    ax.set_title("Warm start: final accuracy vs NC1, one point per (seed, checkpoint)")
    save_png(fig, out / "final_acc_vs_nc1.png")
    plt.close(fig)
    return ["final_acc_vs_epoch.png", "final_acc_vs_nc1.png"]


# ------------------------------------------------------------------------------------ writing
def _corr_table(rows: list[CorrelationRow]) -> list[str]:
    return markdown_table(
        ["scope", "phase", "x", "y", "n", "Pearson r [95% CI]", "Spearman ρ [95% CI]"],
        [
            [c.scope, c.phase, c.x, c.y, str(c.pearson.n), c.pearson.format(), c.spearman.format()]
            for c in rows
        ],
    )


def write_report(
    out: Path, cfg: SupervisedConfig, rows: list[dict[str, Any]], info: dict[str, Any]
) -> list[str]:
    """Write summary.csv, correlations.csv, report.md and the PNGs for finished ``rows``.

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
    atomic_write_text(
        out / "summary.csv",
        csv_text(
            SUMMARY_COLUMNS,
            [[c.method, c.task, c.quantity, c.n, c.mean, c.iqm, c.ci_low, c.ci_high] for c in cells],
        ),
    )
    atomic_write_text(out / "correlations.csv", csv_text(CORRELATION_COLUMNS, [c.as_csv() for c in corrs]))
    plots = _plots_continual(out, rows) if continual else _plots_warm(out, rows, cfg.warm_start.early_epochs)
    lookup = {(c.task, c.quantity): c for c in cells}
    seeds = sorted({int(r["seed"]) for r in rows})
    md = [
        f"# Supervised track report ({cfg.mode})",
        "",
        f"Seeds {', '.join(map(str, seeds))}; training took {info['train_seconds']:.1f} s "
        f"({', '.join(f'seed {s}: {v:.1f} s' for s, v in info['seconds_per_seed'].items())}).",
        "",
        "Config (resolved): `config.yaml`. Values are IQM over seeds [95% bootstrap CI]; row `all` pools "
        "every (seed, row) with the bootstrap stratified by row.",
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
        md += markdown_table(
            ["task", *main],
            [[str(g)] + [lookup[(str(g), q)].fmt() for q in main] for g in [*shown, "all"]],  # type: ignore[list-item]
        )
        md += ["", "## Accuracy vs NC1 across tasks", ""]
        md += [
            "Pearson r [Fisher-z 95% CI], Spearman ρ [bootstrap 95% CI]. `seed s`: one point per task of "
            "that seed; `pooled`: one point per (seed, task); `seed-mean curve`: the per-task means over "
            "seeds (closest to the paper's single curve). The paper: r(accuracy, NC1) ≈ −0.945 over 140 "
            "permuted-MNIST tasks.",
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
        md += markdown_table(
            ["epoch", *main],
            [[str(g)] + [lookup[(str(g), q)].fmt() for q in main] for g in [*groups, "all"]],  # type: ignore[list-item]
        )
        md += ["", "## Final test accuracy vs NC1 at the checkpoint", ""]
        md += [
            "The paper (ResNet-18, CIFAR-10): r ≈ +0.91 over the first 100 warm-up epochs, fading to ≈ 0 "
            "later. Rows with x = epoch show the plain warm-start trend.",
            "",
        ]
    md += _corr_table(corrs)
    md += ["", "## Plots", ""]
    md += [f"![{p}]({p})" for p in plots]
    rate = info.get("sgd_samples_per_s")
    md += [
        "",
        "Files: `config.yaml`, `run.json` (timings), "
        + ("`tasks.csv`" if continual else "`checkpoints.csv`")
        + ", `summary.csv`, `correlations.csv`."
        + (f" Training speed: {format_number(rate, 4)} SGD samples/s including metrics." if rate else ""),
        "",
    ]
    atomic_write_text(out / "report.md", "\n".join(md))
    return ["summary.csv", "correlations.csv", "report.md", *plots]
