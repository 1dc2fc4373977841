"""Continual-learning scores from the evaluation columns (``eval.enabled`` runs): final performance,
forgetting, forward transfer and scores normalised to [random, from scratch].

A run's evaluations (:func:`eval_curves`) are its ``metrics.csv`` rows with an
``eval/task_<k>/return`` value (the mean greedy return of task ``k`` at that step; see
:mod:`rlplast.callbacks.eval`). For run ``r`` and task ``k`` with evaluations ``R_k(e)`` at the
evaluation rows ``e = 1..L`` (``L``: the run's last evaluation):

* ``eval_final`` = ``R_k(L)``: the task's return at the end of the run.
* ``eval_learned`` = ``R_k(e_k)``, ``e_k`` the last evaluation of the task's own training span
  (the first block of evaluation rows whose training task is ``k``): what was learned on it.
* ``forgetting`` = ``max_{e < L} R_k(e) − R_k(L)``: the best earlier evaluation minus the final one
  (:func:`forgetting`); not defined for the task still being trained at ``L`` (it is still learned)
  or a task evaluated once. The maximum of noisy evaluations is biased upwards: with few
  evaluation episodes, a method that forgets nothing still shows a small positive forgetting.
* ``learning_auc``: the area under the task's learning curve over its training span divided by the
  span (:func:`learning_auc`: a step-weighted mean of ``R_k`` there; one evaluation → its value).

Normalised quantities need a reference method, ``from_scratch`` by default (each task learned by a
fresh agent for the same budget; ``configs/methods/from_scratch.yaml``). Per task ``k``:
``random_k`` = the mean over all runs of their ``eval/task_<k>/random_return`` (a uniformly random
policy), ``scratch_k`` = the mean over the reference's runs of ``eval_learned``. Then
(:func:`normalise`) ``x̂ = (x − random_k) / (scratch_k − random_k)`` (0 = random, 1 = from scratch):

* ``eval_final_norm`` = normalised ``eval_final``;
* ``forgetting_norm`` = ``forgetting / (scratch_k − random_k)``;
* ``forward_transfer`` = normalised ``learning_auc`` minus the reference's (the mean over its runs):
  > 0 = the task was learned faster, or better, than from scratch.

Tasks where the reference does not beat the random policy (``scratch_k ≤ random_k``) get no
normalised value. ``run_means`` averages a quantity over a run's tasks (the run's "average
performance at the end" for ``eval_final``).

Example:
    >>> forgetting(np.array([1.0, 5.0, 3.0, 2.0]))
    3.0
    >>> learning_auc(np.array([0.0, 10.0]), np.array([0.0, 2.0]))
    1.0
    >>> normalise(np.array([20.0, 110.0]), 20.0, 200.0).tolist()
    [0.0, 0.5]
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlplast.analysis.aggregate import Cell, summary_cell
from rlplast.analysis.load import STEP_COLUMN, TASK_COLUMN, RunData
from rlplast.analysis.scores import Scores
from rlplast.analysis.stats import N_BOOT, Improvement, Profile, improvement, performance_profile

__all__ = [
    "CONTINUAL_QUANTITIES",
    "DEFAULT_REFERENCE",
    "IMPROVEMENT_COLUMNS",
    "NORMALISED_QUANTITIES",
    "RUN_MEAN_QUANTITIES",
    "Continual",
    "EvalCurves",
    "common_matrices",
    "continual_scores",
    "eval_curves",
    "eval_settings",
    "forgetting",
    "has_eval",
    "improvement_rows",
    "improvements",
    "learning_auc",
    "normalise",
    "profiles",
    "run_mean_cells",
    "snap_rounding",
    "training_span",
    "with_continual",
]

#: The method whose runs define "from scratch" unless the report names another.
DEFAULT_REFERENCE = "from_scratch"
#: The continual quantities, in report order (summary.csv keys).
CONTINUAL_QUANTITIES = (
    "eval_final",
    "eval_learned",
    "forgetting",
    "learning_auc",
    "eval_final_norm",
    "forgetting_norm",
    "forward_transfer",
)
#: The quantities that need the reference method.
NORMALISED_QUANTITIES = ("eval_final_norm", "forgetting_norm", "forward_transfer")
#: The per-run means over tasks shown in report.md's summary table and continual.csv.
RUN_MEAN_QUANTITIES = ("eval_final", "eval_final_norm", "forgetting", "forgetting_norm", "forward_transfer")

_RETURN = re.compile(r"^eval/task_(\d+)/return$")
_RANDOM = re.compile(r"^eval/task_(\d+)/random_return$")


# ------------------------------------------------------------------------------------ known answers
def forgetting(values: np.ndarray | Sequence[float]) -> float:
    """The best earlier evaluation minus the last one (NaN entries dropped; NaN below 2 values).

    Example:
        >>> forgetting([2.0, float("nan"), 1.0]), forgetting([1.0, 4.0])
        (1.0, -3.0)
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return math.nan
    return float(v[:-1].max() - v[-1])


def learning_auc(steps: np.ndarray | Sequence[float], values: np.ndarray | Sequence[float]) -> float:
    """Area under a learning curve divided by its step span: a step-weighted mean (trapezoids).

    NaN points are dropped; one point gives its value, none NaN.

    Example:
        >>> learning_auc([0, 10, 30], [0.0, 10.0, 10.0])
        8.333333333333334
    """
    s = np.asarray(steps, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(s) & np.isfinite(v)
    s, v = s[keep], v[keep]
    if v.size == 0:
        return math.nan
    span = float(s[-1] - s[0]) if v.size > 1 else 0.0
    return float(np.trapezoid(v, s) / span) if span > 0 else float(v.mean())


def normalise(x: Any, low: float, high: float) -> Any:
    """``(x − low) / (high − low)``: 0 at ``low`` (random), 1 at ``high`` (from scratch).

    NaN when ``high`` is not above ``low`` or either is not finite (no scale to normalise by).
    """
    ok = math.isfinite(low) and math.isfinite(high) and high > low
    if not ok:
        return np.full(np.shape(x), np.nan) if np.ndim(x) else math.nan
    return (
        (np.asarray(x, dtype=np.float64) - low) / (high - low)
        if np.ndim(x)
        else (float(x) - low) / (high - low)
    )


def training_span(task_at: np.ndarray, task: int) -> np.ndarray:
    """Indices of the first block of consecutive evaluations whose training task is ``task``.

    Example:
        >>> training_span(np.array([0, 0, 1, 1, 0, 1]), 1).tolist()
        [2, 3]
    """
    hits = np.flatnonzero(np.asarray(task_at) == task)
    if hits.size == 0:
        return hits
    breaks = np.flatnonzero(np.diff(hits) != 1)
    end = breaks[0] + 1 if breaks.size else hits.size
    return hits[:end]


# ------------------------------------------------------------------------------------ one run
@dataclass(frozen=True)
class EvalCurves:
    """A run's evaluations.

    Attributes:
        steps: env step of each evaluation row.
        task_at: the training task at each evaluation (``shift/task_id``; -1 where not logged).
        returns: task → its ``eval/task_<k>/return`` at each evaluation (NaN where not evaluated).
        random: task → its ``eval/task_<k>/random_return``.
    """

    steps: np.ndarray
    task_at: np.ndarray
    returns: dict[int, np.ndarray]
    random: dict[int, float]

    def scores(self) -> dict[int, dict[str, float]]:
        """The run's raw quantities per task: ``eval_final``, ``eval_learned``, ``forgetting``,
        ``learning_auc`` (module docstring)."""
        last = len(self.steps) - 1
        out: dict[int, dict[str, float]] = {}
        for task, values in self.returns.items():
            span = training_span(self.task_at, task)
            seen = span[np.isfinite(values[span])] if span.size else span
            out[task] = {
                "eval_final": float(values[last]),
                "eval_learned": float(values[seen[-1]]) if seen.size else math.nan,
                # the task still being trained at the last evaluation has forgotten nothing yet
                "forgetting": forgetting(values) if self.task_at[last] != task else math.nan,
                "learning_auc": learning_auc(self.steps[span], values[span]) if span.size else math.nan,
            }
        return out


def has_eval(run: RunData) -> bool:
    """Whether the run logged at least one ``eval/task_<k>/return`` value."""
    return any(_RETURN.match(c) and np.isfinite(v).any() for c, v in run.metrics.items())


def eval_curves(run: RunData) -> EvalCurves | None:
    """The run's evaluations (None without ``eval/task_<k>/return`` values)."""
    cols = {int(m.group(1)): c for c in run.metrics if (m := _RETURN.match(c))}
    if not cols:
        return None
    table = np.vstack([run.metrics[c] for c in cols.values()])
    rows = np.flatnonzero(np.isfinite(table).any(axis=0))
    if rows.size == 0:
        return None
    steps = run.metrics.get(STEP_COLUMN, np.arange(table.shape[1], dtype=np.float64))[rows]
    task_col = run.metrics.get(TASK_COLUMN)
    task_at = (
        np.where(np.isfinite(task_col[rows]), task_col[rows], -1).astype(int)
        if task_col is not None
        else np.full(rows.size, -1)
    )
    random: dict[int, float] = {}
    for c, v in run.metrics.items():
        m = _RANDOM.match(c)
        if m and np.isfinite(v).any():
            random[int(m.group(1))] = float(v[np.isfinite(v)][0])
    returns = {task: run.metrics[c][rows] for task, c in sorted(cols.items())}
    return EvalCurves(steps, task_at, returns, random)


def eval_settings(runs: Sequence[RunData]) -> dict[str, Any] | None:
    """The ``eval`` section of the first run's ``config.yaml`` that has one (None otherwise)."""
    import yaml

    for run in runs:
        path = run.path / "config.yaml"
        try:
            section = (yaml.safe_load(path.read_text()) or {}).get("eval") if path.is_file() else None
        except (OSError, yaml.YAMLError, AttributeError):
            section = None
        if isinstance(section, dict):
            return section
    return None


# ------------------------------------------------------------------------------------ all runs
@dataclass
class Continual:
    """The continual-learning scores of a set of runs.

    Attributes:
        values: quantity → ``(n_runs, n_tasks)`` array aligned with the :class:`Scores` it was
            computed with (NaN for runs without evaluations); :data:`CONTINUAL_QUANTITIES` order.
        run_means: quantity → ``(n_runs,)`` mean over each run's tasks (NaN-aware).
        evaluated: ``(n_runs,)`` bool: the run has evaluations.
        reference: the method the normalised quantities use (None when there is none).
        random: task → random-policy return (mean over all runs that measured it).
        scratch: task → the reference's mean ``eval_learned``.
        scratch_auc: task → the reference's mean normalised ``learning_auc``.
        notes: why some quantities are missing, in words (for report.md).
    """

    values: dict[str, np.ndarray]
    run_means: dict[str, np.ndarray]
    evaluated: np.ndarray
    reference: str | None
    random: dict[int, float] = field(default_factory=dict)
    scratch: dict[int, float] = field(default_factory=dict)
    scratch_auc: dict[int, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def any(self) -> bool:
        """Whether any run has evaluations."""
        return bool(self.evaluated.any())


def continual_scores(
    runs: Sequence[RunData], scores: Scores, reference: str | None = DEFAULT_REFERENCE
) -> Continual:
    """The continual quantities of every run and task (module docstring), aligned with ``scores``.

    Args:
        runs: the runs, in the order of ``scores``' rows.
        scores: their per-task scores (gives the rows and task columns).
        reference: the method whose runs define "from scratch" (None: no normalised quantities).
    """
    n, tasks = len(runs), list(scores.tasks)
    col = {t: j for j, t in enumerate(tasks)}
    values = {q: np.full((n, len(tasks)), np.nan) for q in CONTINUAL_QUANTITIES}
    evaluated = np.zeros(n, dtype=bool)
    randoms: dict[int, list[float]] = {}
    for i, run in enumerate(runs):
        curves = eval_curves(run)
        if curves is None:
            continue
        evaluated[i] = True
        for task, row in curves.scores().items():
            if task in col:
                for q, v in row.items():
                    values[q][i, col[task]] = v
        for task, v in curves.random.items():
            randoms.setdefault(task, []).append(v)
    random = {t: float(np.mean(v)) for t, v in sorted(randoms.items())}
    notes: list[str] = []
    ref_rows = np.flatnonzero(evaluated & (np.asarray(scores.methods, dtype=object) == reference))
    scratch: dict[int, float] = {}
    scratch_auc: dict[int, float] = {}
    if evaluated.any() and ref_rows.size == 0:
        notes.append(
            f"no evaluated runs of the reference method `{reference}`: no normalised scores or forward "
            "transfer (add it to the sweep, e.g. `--methods ...,from_scratch`, or name another reference)"
            if reference
            else "no reference method: no normalised scores or forward transfer"
        )
    elif ref_rows.size:
        unlearned = []
        for t, j in col.items():
            learned = values["eval_learned"][ref_rows, j]
            learned = learned[np.isfinite(learned)]
            if not learned.size or t not in random:
                continue
            scratch[t] = float(learned.mean())
            low, high = random[t], scratch[t]
            if not high > low:
                unlearned.append(t)
                continue
            scale = high - low
            values["eval_final_norm"][:, j] = normalise(values["eval_final"][:, j], low, high)
            values["forgetting_norm"][:, j] = values["forgetting"][:, j] / scale
            auc = normalise(values["learning_auc"][:, j], low, high)
            ref_auc = auc[ref_rows]
            ref_auc = ref_auc[np.isfinite(ref_auc)]
            if ref_auc.size:
                scratch_auc[t] = float(ref_auc.mean())
                transfer = auc - scratch_auc[t]
                # the reference's own values average to 0: keep rounding noise (1e-17) out of tables
                values["forward_transfer"][:, j] = np.where(np.abs(transfer) < 1e-12, 0.0, transfer)
        if unlearned:
            notes.append(
                f"task(s) {', '.join(map(str, unlearned))}: `{reference}` does not beat the random policy "
                "there, so they have no normalised scores"
            )
    values = {q: np.where(evaluated[:, None], v, np.nan) for q, v in values.items()}
    run_means = {q: _row_means(values[q]) for q in CONTINUAL_QUANTITIES}
    return Continual(
        values,
        run_means,
        evaluated,
        reference if ref_rows.size else None,
        random,
        scratch,
        scratch_auc,
        notes,
    )


def _row_means(a: np.ndarray) -> np.ndarray:
    ok = np.isfinite(a)
    counts = ok.sum(axis=1)
    sums = np.where(ok, a, 0.0).sum(axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def with_continual(scores: Scores, continual: Continual) -> Scores:
    """``scores`` with the continual quantities added after its own (whose CIs stay unchanged)."""
    extra = {q: v for q, v in continual.values.items() if np.isfinite(v).any()}
    return Scores(
        runs=scores.runs,
        methods=scores.methods,
        seeds=scores.seeds,
        tasks=scores.tasks,
        seen=scores.seen,
        values={**scores.values, **extra},
    )


# ------------------------------------------------------------------------------------ aggregate views
#: Header of improvement.csv; :func:`improvement_rows` gives its rows.
IMPROVEMENT_COLUMNS = ["x", "y", "quantity", "probability", "ci_low", "ci_high", "runs_x", "runs_y", "tasks"]


def run_mean_cells(
    scores: Scores, continual: Continual, methods: Sequence[str], n_boot: int = N_BOOT
) -> list[Cell]:
    """continual.csv's rows: per method and quantity of :data:`RUN_MEAN_QUANTITIES`, the IQM over
    its runs of the run's mean over tasks, with the seed-count interval rule of summary.csv (task
    label ``mean``). Bootstrap seeds: ``1000 × method index + 37 × quantity index + 555``."""
    cells = []
    for mi, method in enumerate(methods):
        rows = [i for i in scores.rows(method) if continual.evaluated[i]]
        if not rows:
            continue
        for qi, q in enumerate(RUN_MEAN_QUANTITIES):
            vals = continual.run_means[q][rows]
            if np.isfinite(vals).any():
                cells.append(summary_cell(method, "mean", q, vals, None, 1000 * mi + 37 * qi + 555, n_boot))
    return snap_rounding(cells)


def snap_rounding(cells: Sequence[Cell]) -> list[Cell]:
    """Set to 0 the estimates of continual quantities that are 0 up to rounding (in place).

    The reference's forward transfer averages to 0 by construction; its mean or IQM over seeds
    comes out as ±1e-17, which would switch a whole table column to scientific notation. An
    estimate whose magnitude is below 1e-12 × the largest value aggregated is 0.
    """
    for cell in cells:
        if cell.quantity not in CONTINUAL_QUANTITIES:
            continue
        scale = max(abs(cell.min), abs(cell.max)) if math.isfinite(cell.min) else 0.0
        for name in ("mean", "iqm", "ci_low", "ci_high"):
            value = getattr(cell, name)
            if math.isfinite(value) and value != 0 and abs(value) < 1e-12 * scale:
                setattr(cell, name, 0.0)
    return list(cells)


def common_matrices(
    scores: Scores, quantity: str, methods: Sequence[str]
) -> tuple[dict[str, np.ndarray], list[int]]:
    """``{method: (runs, tasks)}`` of ``quantity`` on the tasks where every run of every listed method
    has a value (rliable's input: complete matrices), and those tasks. Methods with no run that
    has a value are left out."""
    values = scores.values.get(quantity)
    if values is None:
        return {}, []
    rows = {m: scores.rows(m) for m in methods}
    rows = {m: r[np.isfinite(values[r]).any(axis=1)] for m, r in rows.items()}
    rows = {m: r for m, r in rows.items() if r.size}
    if not rows:
        return {}, []
    every = np.concatenate(list(rows.values()))
    keep = np.isfinite(values[every]).all(axis=0)
    tasks = [t for t, k in zip(scores.tasks, keep, strict=True) if k]
    if not tasks:
        return {}, []
    return {m: values[r][:, keep] for m, r in rows.items()}, tasks


def profiles(
    matrices: dict[str, np.ndarray], methods: Sequence[str], points: int = 101, n_boot: int = N_BOOT
) -> dict[str, Profile]:
    """rliable's performance profile of every method over one grid of thresholds (the scores'
    range, ``points`` thresholds); bootstrap seed = the method's index."""
    if not matrices:
        return {}
    every = np.concatenate([m.ravel() for m in matrices.values()])
    lo, hi = float(every.min()), float(every.max())
    pad = 0.05 * (hi - lo) if hi > lo else 0.5
    taus = np.linspace(lo - pad, hi + pad, points)
    return {
        m: performance_profile(matrices[m], taus, n_boot=n_boot, seed=i)
        for i, m in enumerate(methods)
        if m in matrices
    }


def improvements(
    matrices: dict[str, np.ndarray], methods: Sequence[str], n_boot: int = N_BOOT
) -> list[tuple[str, str, Improvement]]:
    """P(X > Y) with its CI for every pair of methods, X before Y in ``methods`` (P(Y > X) = 1 − P(X > Y));
    bootstrap seed ``1000 × i + j`` for the pair of the i-th and j-th method."""
    order = [m for m in methods if m in matrices]
    return [
        (x, y, improvement(matrices[x], matrices[y], n_boot=n_boot, seed=1000 * i + j))
        for i, x in enumerate(order)
        for j, y in enumerate(order)
        if i < j
    ]


def improvement_rows(pairs: Sequence[tuple[str, str, Improvement]], quantity: str) -> list[list[Any]]:
    """improvement.csv's rows, in :data:`IMPROVEMENT_COLUMNS` order."""
    return [[x, y, quantity, p.probability, p.low, p.high, p.runs_x, p.runs_y, p.tasks] for x, y, p in pairs]
