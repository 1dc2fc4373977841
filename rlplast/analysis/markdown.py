"""The text of report.md: runs, task plasticity, metrics per task, correlations, plots."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rlplast.analysis.scores import END_EPISODES, MAIN_METRICS, PAPER_PREFIXES, RETURN_QUANTITIES
from rlplast.analysis.tables import format_number, markdown_table

if TYPE_CHECKING:
    from rlplast.analysis.report import Report

__all__ = ["MAX_OTHER_METRICS", "report_markdown"]

#: Most metric columns outside ``collapse/…`` and ``plasticity/…`` shown in report.md's table of
#: other metrics (every one is in summary.csv).
MAX_OTHER_METRICS = 8


def report_markdown(rep: Report, sweep: Path, plots: dict[str, bool]) -> str:
    """report.md's text.

    Args:
        rep: the computed report.
        sweep: the sweep directory (named in the title).
        plots: ``{"collapse": drawn, "nc1": drawn}``: whether those figures hold data.
    """
    methods = list(dict.fromkeys(r.method for r in rep.runs))
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    md = [f"# Sweep report: `{sweep}`", "", f"Generated {now} from {len(rep.runs)} finished runs.", ""]
    md += _runs(rep, methods)
    md += _task_plasticity(rep, methods)
    md += _metrics(rep, methods)
    md += _correlations(rep)
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


def _runs(rep: Report, methods: list[str]) -> list[str]:
    md = ["## Runs", ""]
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
                format_number(float(np.nanmean(walls)), 3) if mruns else "–",
                format_number(float(np.nanmean(sps_)), 4) if mruns else "–",
            ]
        )
    md += markdown_table(
        ["method", "done", "failed", "unfinished", "seeds", "wall time (s)", "steps/s"], rows
    )
    failed = [(n, e) for n, e in sorted(rep.entries.items()) if e.get("state") == "failed"]
    if failed:
        md += ["", "Failed runs (traceback in the run's `error.txt`):", ""]
        md += [f"- `{n}`: {e.get('error')}" for n, e in failed]
    md.append("")
    return md


def _tasks(rep: Report, method: str) -> list[str]:
    return sorted({c.task for c in rep.cells if c.method == method and c.task != "all"}, key=int)


def _task_plasticity(rep: Report, methods: list[str]) -> list[str]:
    lookup = {(c.method, c.task, c.quantity): c for c in rep.cells}
    md = [
        "## Task plasticity (IQM over seeds [95% bootstrap CI])",
        "",
        f"mean return = mean over the task's episodes; AUC = trapezoid of episode return vs step / step "
        f"span; end return = mean of the task's last {END_EPISODES} episodes; drop = task-0 mean return "
        "minus this task's. Row `all`: (seed, task) scores pooled, bootstrap stratified over tasks.",
        "",
    ]
    rows = []
    for m in methods:
        for t in [*_tasks(rep, m), "all"]:
            mr = lookup.get((m, t, "mean_return"))
            rows.append(
                [m, t, str(mr.n if mr else 0)]
                + [lookup[(m, t, q)].fmt() if (m, t, q) in lookup else "–" for q in RETURN_QUANTITIES]
            )
    md += markdown_table(
        ["method", "task", "seeds", "mean return", "AUC", "end-of-task return", "drop vs task 0"], rows
    )
    md.append("")
    return md


def _metric_rows(rep: Report, methods: list[str], columns: list[str]) -> list[list[str]]:
    lookup = {(c.method, c.task, c.quantity): c for c in rep.cells}
    return [
        [m, t] + [lookup[(m, t, q)].fmt() if (m, t, q) in lookup else "–" for q in columns]
        for m in methods
        for t in _tasks(rep, m)
    ]


def _metrics(rep: Report, methods: list[str]) -> list[str]:
    present = list(dict.fromkeys(c.quantity for c in rep.cells if c.quantity not in RETURN_QUANTITIES))
    shown = [c for c in MAIN_METRICS if c in present]
    other = sorted(c for c in present if not c.startswith(PAPER_PREFIXES))[:MAX_OTHER_METRICS]
    md = ["## Collapse and plasticity metrics per task (IQM over seeds of the task mean)", ""]
    if not shown:
        md += ["No metrics: no run logged a `collapse/…` or `plasticity/…` column (metrics disabled?).", ""]
    else:
        md += markdown_table(
            ["method", "task", *(s.split("/", 1)[1] for s in shown)], _metric_rows(rep, methods, shown)
        )
        md.append("")
    if other:
        md += [
            "### Other metric columns per task",
            "",
            "Intervention and user-metric keys (every `metrics.csv` column outside the base columns, "
            "`collapse/…` and `plasticity/…`), IQM over seeds of the task mean.",
            "",
        ]
        logged = [m for m in methods if any(c.method == m and c.quantity in other for c in rep.cells)]
        md += markdown_table(["method", "task", *other], _metric_rows(rep, logged, other))
        md.append("")
    if shown or other:
        more = len(present) - len(shown) - len(other)
        md += [f"All {len(present)} metric columns ({more} more) are in `summary.csv`.", ""]
    return md


def _correlations(rep: Report) -> list[str]:
    md = [
        "## NC1 vs plasticity",
        "",
        "Pearson r [95% Fisher-z CI] and Spearman ρ [95% bootstrap CI]. Task 0: one point per logging "
        "row of task 0 with an NC1 value (y = rolling mean return / probe ratio at that row). Tasks ≥ 1: "
        "one point per (seed, task) (x = the task's mean NC1, y = the task's mean return / mean probe "
        "ratio). Seeds are pooled within a method; `all` pools every method.",
        "",
    ]
    if not rep.correlations:
        return [*md, "No NC1 column in any run (metrics disabled?): no correlations.", ""]
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
    md += markdown_table(["scope", "phase", "NC1", "plasticity", "n", "Pearson r", "Spearman ρ"], rows)
    md.append("")
    return md
