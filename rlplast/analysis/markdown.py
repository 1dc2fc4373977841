"""The text of report.md: runs, task plasticity, continual-learning evaluation, metrics per task,
correlations, figures.

Numbers come from :mod:`~rlplast.analysis.tables` (one format per column) and estimates from
:func:`~rlplast.analysis.aggregate.format_cells` (CI, range or no interval, as
:data:`~rlplast.analysis.tables.INTERVAL_LEGEND` says under each table).
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rlplast.analysis.aggregate import Cell, format_cells
from rlplast.analysis.continual import CONTINUAL_QUANTITIES, RUN_MEAN_QUANTITIES, eval_settings
from rlplast.analysis.correlations import MIN_CORRELATION_N
from rlplast.analysis.scores import END_EPISODES, MAIN_METRICS, PAPER_PREFIXES, RETURN_QUANTITIES
from rlplast.analysis.style import VECTOR_FORMAT
from rlplast.analysis.tables import INTERVAL_LEGEND, column_format, markdown_table

if TYPE_CHECKING:
    from rlplast.analysis.report import Report

__all__ = ["CONTINUAL_HEADERS", "MAX_OTHER_METRICS", "RETURN_HEADERS", "RETURNS_NOTE", "report_markdown"]

#: Most metric columns outside ``collapse/…`` and ``plasticity/…`` shown in report.md's table of
#: other metrics (every one is in summary.csv).
MAX_OTHER_METRICS = 8
#: Table headers of the return quantities (summary.csv keys: ``mean_return``, ``auc``, ``end_return``,
#: ``return_drop``).
RETURN_HEADERS = {
    "mean_return": "mean return per episode",
    "auc": "step-weighted mean return (`auc`)",
    "end_return": f"end-of-task return (last {END_EPISODES} episodes)",
    "return_drop": "drop vs task 0",
}
#: Table headers of the continual quantities (summary.csv / continual.csv keys).
CONTINUAL_HEADERS = {
    "eval_final": "final return",
    "eval_learned": "return when learned",
    "forgetting": "forgetting",
    "learning_auc": "learning-curve area",
    "eval_final_norm": "final (normalised)",
    "forgetting_norm": "forgetting (normalised)",
    "forward_transfer": "forward transfer",
}
#: What the three return measures are, which one is the headline, and why they can differ by 10×.
RETURNS_NOTE = (
    "**Headline: mean return per episode** (`mean_return`); the drop and the NC1 correlations use it. "
    "The step-weighted mean return (`auc` in summary.csv) is the area under the return-vs-step curve "
    "divided by the task's step span (every env step weighs the same); the end-of-task return is the "
    f"mean of the task's last {END_EPISODES} episodes. They can differ by 10×: short (failed) episodes "
    "early in a task are many and long ones late in it are few, so the per-episode mean is dominated "
    "by the early episodes and the step-weighted mean and end-of-task return by the late ones. "
    "Drop = task 0's mean return − this task's: positive = worse than task 0, negative = better than "
    "task 0."
)


def report_markdown(rep: Report, sweep: Path, plots: dict[str, bool]) -> str:
    """report.md's text.

    Args:
        rep: the computed report.
        sweep: the sweep directory (named in the title).
        plots: ``{"returns": drawn, "collapse": drawn, "nc1": drawn}``: whether those figures hold data.
    """
    methods = rep.methods
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    md = [f"# Sweep report: `{sweep}`", "", f"Generated {now} from {len(rep.runs)} finished runs.", ""]
    md += [f"Methods are listed in {rep.method_order_source}, in every table and figure.", ""]
    md += _runs(rep, methods)
    md += _task_plasticity(rep, methods)
    md += _continual(rep, methods)
    md += _metrics(rep, methods)
    md += _correlations(rep)
    md += _plots(plots)
    md += [
        "Files: `summary.csv` (method, task, quantity, n, mean, iqm, ci_low, ci_high — one row per method × "
        "task × quantity; task `all` = pooled, its `n` counts seed × task values; `ci_low`/`ci_high` are "
        "empty below 3 seeds), `correlations.csv` (every correlation, with the reason in `note` when it "
        "is not shown here). Definitions: docs/compare.md.",
        "",
    ]
    if rep.continual is not None and rep.continual.any:
        md += [
            "Continual-learning files: `continual.csv` (per-run means over tasks, aggregated like "
            "`summary.csv`, task `mean`) and `improvement.csv` (x, y, quantity, probability, ci_low, "
            "ci_high, runs_x, runs_y, tasks).",
            "",
        ]
    return "\n".join(md)


def _runs(rep: Report, methods: list[str]) -> list[str]:
    md = ["## Runs", ""]
    all_methods = list(dict.fromkeys([*methods, *(e.get("method", "?") for e in rep.entries.values())]))
    walls, rates, rows = [], [], []
    for m in all_methods:
        mruns = [r for r in rep.runs if r.method == m]
        states = [e.get("state") for e in rep.entries.values() if e.get("method") == m]
        w = [float(r.summary.get("wall_time_s") or math.nan) for r in mruns]
        sp = [float(r.summary.get("steps_per_s") or math.nan) for r in mruns]
        walls.append(float(np.nanmean(w)) if np.isfinite(w).any() else math.nan)
        rates.append(float(np.nanmean(sp)) if np.isfinite(sp).any() else math.nan)
        rows.append(
            [
                m,
                str(len(mruns)),
                str(states.count("failed")),
                str(sum(states.count(s) for s in ("pending", "running", "interrupted"))),
                ", ".join(str(r.seed) for r in sorted(mruns, key=lambda r: r.seed)) or "–",
            ]
        )
    wf, rf = column_format(walls), column_format(rates)
    for row, wall, rate in zip(rows, walls, rates, strict=True):
        row += [wf(wall) if math.isfinite(wall) else "–", rf(rate) if math.isfinite(rate) else "–"]
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


def _table(
    rep: Report, methods: list[str], columns: list[str], with_all: bool
) -> tuple[list[list[str]], dict[tuple[str, str], Cell | None]]:
    """Rows ``[method, task, seeds, seed × task, *formatted columns]`` and the first column's cells."""
    lookup = {(c.method, c.task, c.quantity): c for c in rep.cells}
    keys = [(m, t) for m in methods for t in [*_tasks(rep, m), *(["all"] if with_all else [])]]
    formatted = {q: format_cells([lookup.get((m, t, q)) for m, t in keys]) for q in columns}
    # the counts of a row come from its first column with a value
    first = {(m, t): next((lookup[(m, t, q)] for q in columns if (m, t, q) in lookup), None) for m, t in keys}
    rows = []
    for i, (m, t) in enumerate(keys):
        c = first[(m, t)]
        if t == "all":
            counts = [str(c.seeds) if c else "0", str(c.n) if c else "0"]
        else:
            counts = [str(c.n) if c else "0", "–"]
        rows.append([m, t, *counts, *(formatted[q][i] for q in columns)])
    return rows, first


def _task_plasticity(rep: Report, methods: list[str]) -> list[str]:
    md = ["## Task plasticity (IQM over seeds)", "", RETURNS_NOTE, "", INTERVAL_LEGEND, ""]
    quantities = list(RETURN_QUANTITIES)
    rows, _ = _table(rep, methods, quantities, with_all=True)
    md += markdown_table(
        ["method", "task", "seeds", "seed × task", *(RETURN_HEADERS[q] for q in quantities)], rows
    )
    md.append("")
    negative: dict[str, list[str]] = {}
    for c in rep.cells:
        if c.quantity == "return_drop" and c.n and math.isfinite(c.iqm) and c.iqm < 0:
            negative.setdefault(c.method, []).append(c.task)
    if negative:
        which = "; ".join(f"`{m}` {_task_list(ts)}" for m, ts in negative.items())
        md += [
            f"Negative drops ({which}): there the mean return per episode was higher than in task 0 — "
            "better than task 0 (for instance when task 0 was learned slowly), not a loss of plasticity.",
            "",
        ]
    return md


def _task_list(tasks: list[str]) -> str:
    """``task 1``, ``tasks 1, 2``, ``tasks 1, 2 and pooled``."""
    ids = [t for t in tasks if t != "all"]
    text = ("task " if len(ids) == 1 else "tasks ") + ", ".join(ids) if ids else ""
    if "all" in tasks:
        text = f"{text} and pooled (`all`)" if text else "pooled (`all`)"
    return text


def _metrics(rep: Report, methods: list[str]) -> list[str]:
    scored = {*RETURN_QUANTITIES, *CONTINUAL_QUANTITIES}
    present = list(dict.fromkeys(c.quantity for c in rep.cells if c.quantity not in scored))
    shown = [c for c in MAIN_METRICS if c in present]
    other = sorted(c for c in present if not c.startswith(PAPER_PREFIXES))[:MAX_OTHER_METRICS]
    md = ["## Collapse and plasticity metrics per task (IQM over seeds of the task mean)", ""]
    if not shown:
        md += ["No metrics: no run logged a `collapse/…` or `plasticity/…` column (metrics disabled?).", ""]
    else:
        md += [INTERVAL_LEGEND, ""]
        rows, _ = _table(rep, methods, shown, with_all=False)
        md += markdown_table(
            ["method", "task", "seeds", *(s.split("/", 1)[1] for s in shown)],
            [[*r[:3], *r[4:]] for r in rows],
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
        rows, _ = _table(rep, logged, other, with_all=False)
        md += markdown_table(["method", "task", "seeds", *other], [[*r[:3], *r[4:]] for r in rows])
        md.append("")
    if shown or other:
        more = len(present) - len(shown) - len(other)
        md += [f"All {len(present)} metric columns ({more} more) are in `summary.csv`.", ""]
    return md


def _continual(rep: Report, methods: list[str]) -> list[str]:
    cont = rep.continual
    if cont is None or not cont.any:
        return []
    settings = eval_settings(rep.runs) or {}
    how = ""
    if settings:
        how = (
            f" (ε = {settings.get('epsilon')}, {settings.get('episodes')} episodes per task, every "
            f"{settings.get('every_steps')} env steps and at the end)"
        )
    ref = cont.reference
    md = [
        "## Continual-learning evaluation (IQM over seeds)",
        "",
        f"Greedy returns on every task seen so far{how}, logged as `eval/task_<k>/return`. "
        "**Final return**: the task's return at the run's last evaluation; **return when learned**: at "
        "the last evaluation of the task's own training span; **forgetting**: the best earlier "
        "evaluation minus the final one (not for the task still trained at the end; biased upwards "
        "by evaluation noise); **learning-curve area**: the step-weighted mean return over the task's "
        "training span. "
        + (
            f"Normalised scores: (x − random) / (`{ref}` − random) per task, with random = the "
            "random policy's return and "
            f"`{ref}` = the mean return when learned of the `{ref}` runs (0 = random, 1 = from "
            f"scratch); **forward transfer**: the normalised learning-curve area minus `{ref}`'s (> 0: "
            "learned faster or better than from scratch)."
            if ref
            else "No normalised scores or forward transfer: " + "; ".join(cont.notes) + "."
        ),
        "",
    ]
    if ref and cont.notes:
        md += ["Note: " + "; ".join(cont.notes) + ".", ""]
    md += [INTERVAL_LEGEND, ""]
    lookup = {(c.method, c.quantity): c for c in rep.run_cells}
    shown = [q for q in RUN_MEAN_QUANTITIES if any(c.quantity == q for c in rep.run_cells)]
    rows_methods = [m for m in methods if any(c.method == m for c in rep.run_cells)]
    formatted = {q: format_cells([lookup.get((m, q)) for m in rows_methods]) for q in shown}
    seeds = {m: next((str(c.n) for c in rep.run_cells if c.method == m), "0") for m in rows_methods}
    md += [
        "Per run, the mean over its tasks (**average final return** = the average performance at the "
        "end), then the IQM over the runs (`continual.csv`):",
        "",
    ]
    md += markdown_table(
        ["method", "seeds", *(f"average {CONTINUAL_HEADERS[q]}" for q in shown)],
        [[m, seeds[m], *(formatted[q][i] for q in shown)] for i, m in enumerate(rows_methods)],
    )
    md += ["", "Per task (and `all`: every seed × task pooled; `summary.csv`):", ""]
    per_task = [q for q in CONTINUAL_QUANTITIES if any(c.quantity == q for c in rep.cells)]
    evaluated = [m for m in methods if any(c.method == m and c.quantity == "eval_final" for c in rep.cells)]
    rows, _ = _table(rep, evaluated, per_task, with_all=True)
    md += markdown_table(
        ["method", "task", "seeds", "seed × task", *(CONTINUAL_HEADERS[q] for q in per_task)], rows
    )
    md.append("")
    if rep.improvements:
        tasks = rep.improvements[0][2].tasks
        md += [
            f"**Probability of improvement** P(X > Y) on the final return (rliable's: the probability "
            f"that a run of X beats a run of Y on a task, ties ½, averaged over the {tasks} tasks every "
            "run has; 95% stratified-bootstrap CI, runs resampled within each task; P(Y > X) = 1 − "
            "P(X > Y); `improvement.csv`):",
            "",
        ]
        fmt = column_format([0.5])
        md += markdown_table(
            ["X", "Y", "P(X > Y) [95% CI]", "runs X", "runs Y"],
            [
                [x, y, f"{fmt(p.probability)} [{fmt(p.low)}, {fmt(p.high)}]", str(p.runs_x), str(p.runs_y)]
                for x, y, p in rep.improvements
            ],
        )
        md.append("")
    return md


def _correlations(rep: Report) -> list[str]:
    md = [
        "## NC1 vs plasticity",
        "",
        "Pearson r [95% Fisher-z CI] and Spearman ρ [95% bootstrap CI]. Task 0: one point per logging "
        "row of task 0 with an NC1 value (y = rolling mean return / probe ratio at that row). Tasks ≥ 1: "
        "one point per (seed, task) (x = the task's mean NC1, y = the task's mean return / mean probe "
        "ratio). Seeds are pooled within a method; `all` pools every method. The r on "
        "`nc1_vs_plasticity.png` is the tasks ≥ 1 row of this table.",
        "",
    ]
    if not rep.correlations:
        return [*md, "No NC1 column in any run (metrics disabled?): no correlations.", ""]
    shown = [c for c in rep.correlations if c.shown()]
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
        for c in shown
    ]
    if rows:
        md += markdown_table(["scope", "phase", "NC1", "plasticity", "n", "Pearson r", "Spearman ρ"], rows)
        md.append("")
    hidden = len(rep.correlations) - len(shown)
    if hidden:
        md += [
            f"{hidden} of {len(rep.correlations)} rows have fewer than {MIN_CORRELATION_N} points or could "
            "not be computed: they are in `correlations.csv`, with the reason in `note`.",
            "",
        ]
    return md


def _plots(plots: dict[str, bool]) -> list[str]:
    md = ["## Plots", ""]
    notes = {
        "returns": "returns.png: no episodes finished.",
        "collapse": "collapse.png: no metrics.",
        "nc1": "nc1_vs_plasticity.png: no NC1.",
    }
    files = {"returns": "returns", "collapse": "collapse", "nc1": "nc1_vs_plasticity"}
    # the continual-learning figures exist only for runs with evaluation columns
    files.update(
        {k: k for k in ("eval_returns", "performance_profiles", "probability_of_improvement") if k in plots}
    )
    notes.update(
        eval_returns="eval_returns.png: no evaluations.",
        performance_profiles="performance_profiles.png: no task every run has a final score for.",
        probability_of_improvement="probability_of_improvement.png: fewer than two evaluated methods.",
    )
    for key, stem in files.items():
        if plots.get(key, False):
            md += [
                f"![{stem.replace('_', ' ')}]({stem}.png)",
                "",
                f"Vector version: `{stem}.{VECTOR_FORMAT}`.",
                "",
            ]
        else:
            md += [notes[key], ""]
    return md
