"""Continual-learning scores: known answers for forgetting, forward transfer and normalisation on
hand-made evaluation curves, and the report's continual section, files and figures."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from rlplast.analysis import build_report, compute_scores, load_sweep, write_report
from rlplast.analysis.continual import (
    continual_scores,
    eval_curves,
    forgetting,
    learning_auc,
    normalise,
    training_span,
)
from rlplast.analysis.load import is_metric_column
from rlplast.analysis.stats import (
    improvement,
    performance_profile,
    probability_of_improvement,
    score_distribution,
    stratified_bootstrap,
)
from rlplast.runlog import BASE_COLUMNS

NAN = math.nan
STEPS = [10, 20, 30, 40]
TASK_AT = [0, 0, 1, 1]  # the training task at each evaluation row

#: Hand-made evaluation curves: run → (task 0 returns, task 1 returns, random returns of 0 and 1).
CURVES = {
    "vanilla-s0": ([2, 6, 4, 3], [NAN, NAN, 5, 9], (1, 3)),
    "vanilla-s1": ([4, 8, 8, 8], [NAN, NAN, 1, 3], (3, 1)),
    "from_scratch-s0": ([2, 6, 1, 1], [NAN, NAN, 3, 7], (1, 3)),
    "from_scratch-s1": ([4, 8, 2, 1], [NAN, NAN, 5, 11], (3, 1)),
}


# ------------------------------------------------------------------------------------ pure functions
def test_forgetting_is_the_best_earlier_evaluation_minus_the_last():
    assert forgetting([2.0, 6.0, 4.0, 3.0]) == 3.0
    assert forgetting([4.0, 8.0, 8.0, 8.0]) == 0.0
    assert forgetting([1.0, 2.0, 5.0]) == -3.0  # still improving: negative forgetting
    assert forgetting([NAN, 7.0, NAN, 5.0]) == 2.0
    assert math.isnan(forgetting([3.0])) and math.isnan(forgetting([NAN, NAN]))


def test_learning_auc_is_the_step_weighted_mean_of_the_curve():
    assert learning_auc([10, 20], [2.0, 6.0]) == 4.0
    assert learning_auc([0, 10, 30], [0.0, 10.0, 10.0]) == pytest.approx(250 / 30)
    assert learning_auc([5], [7.0]) == 7.0
    assert learning_auc([0, 10, 20], [1.0, NAN, 3.0]) == 2.0
    assert math.isnan(learning_auc([], []))


def test_normalise_maps_random_to_0_and_the_reference_to_1():
    assert normalise(2.0, 2.0, 7.0) == 0.0 and normalise(7.0, 2.0, 7.0) == 1.0
    assert normalise(np.array([-3.0, 12.0]), 2.0, 7.0).tolist() == [-1.0, 2.0]
    assert math.isnan(normalise(5.0, 7.0, 7.0))  # no scale
    assert np.isnan(normalise(np.array([1.0, 2.0]), 3.0, 1.0)).all()  # reference below random


def test_training_span_is_the_first_block_of_the_task():
    assert training_span(np.array([0, 0, 1, 1, 0, 1]), 1).tolist() == [2, 3]
    assert training_span(np.array([0, 0, 1, 1, 0, 1]), 0).tolist() == [0, 1]
    assert training_span(np.array([0, 0]), 3).tolist() == []


# ------------------------------------------------------------------------------------ hand-made sweep
def _write_run(run: Path, task0: list[float], task1: list[float], random: tuple[float, float]) -> None:
    run.mkdir(parents=True)
    with open(run / "episodes.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "episode_return", "episode_length", "task_id"])
        for step, task in ((5, 0), (15, 0), (25, 1), (35, 1)):
            w.writerow([step, 10.0, 10, task])
    extra = [
        "eval/mean_return",
        "eval/task_0/random_return",
        "eval/task_0/return",
        "eval/task_1/random_return",
        "eval/task_1/return",
    ]
    with open(run / "metrics.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*BASE_COLUMNS, *extra])
        for i, (step, task) in enumerate(zip(STEPS, TASK_AT, strict=True)):
            base = {"step": step, "shift/task_id": task}
            row = [base.get(c, "") for c in BASE_COLUMNS]
            t0, t1 = task0[i], task1[i]
            both = [v for v in (t0, t1) if not math.isnan(v)]
            row += [
                float(np.mean(both)),
                random[0] if i == 0 else "",
                t0,
                random[1] if i == 2 else "",
                "" if math.isnan(t1) else t1,
            ]
            w.writerow(row)
    (run / "summary.json").write_text(json.dumps({"wall_time_s": 1.0, "steps_per_s": 10.0, "steps": 40}))
    (run / "config.yaml").write_text("eval: {enabled: true, every_steps: 10, episodes: 3, epsilon: 0.001}\n")


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """``tmp_path/sweep``: a manifest listing vanilla then from_scratch, 2 seeds each, the CURVES."""
    sweep = tmp_path / "sweep"
    for name, (task0, task1, random) in CURVES.items():
        _write_run(sweep / "runs" / name, task0, task1, random)
    runs = {
        name: {
            "method": name.rsplit("-s", 1)[0],
            "seed": int(name[-1]),
            "state": "done",
            "run_dir": f"runs/{name}",
        }
        for name in CURVES
    }
    manifest = {"methods": ["vanilla", "from_scratch"], "runs": runs}
    (sweep / "manifest.json").write_text(json.dumps(manifest))
    return sweep


def test_eval_curves_and_raw_scores_of_one_run(sweep):
    runs, _ = load_sweep(sweep)
    run = next(r for r in runs if r.name == "vanilla-s0")
    curves = eval_curves(run)
    assert curves is not None
    assert curves.steps.tolist() == STEPS and curves.task_at.tolist() == TASK_AT
    assert curves.random == {0: 1.0, 1: 3.0}
    scores = curves.scores()
    assert scores[0] == {"eval_final": 3.0, "eval_learned": 6.0, "forgetting": 3.0, "learning_auc": 4.0}
    assert scores[1]["eval_final"] == 9.0 and scores[1]["eval_learned"] == 9.0
    assert math.isnan(scores[1]["forgetting"])  # still trained at the last evaluation
    assert scores[1]["learning_auc"] == 7.0
    assert not any(c.startswith("eval/") for c in run.metric_columns())
    assert not is_metric_column("eval/task_0/return") and is_metric_column("custom/score")


def test_normalised_scores_and_forward_transfer_known_answers(sweep):
    runs, _ = load_sweep(sweep)
    scores = compute_scores(runs)
    cont = continual_scores(runs, scores, "from_scratch")
    assert cont.reference == "from_scratch"
    # random: mean over all runs (1, 3, 1, 3 and 3, 1, 3, 1); from scratch: mean "learned" return
    assert cont.random == {0: 2.0, 1: 2.0}
    assert cont.scratch == {0: 7.0, 1: 9.0}  # (6 + 8) / 2, (7 + 11) / 2
    row = {name: i for i, name in enumerate(scores.runs)}
    v = cont.values
    s0, s1, f0 = row["vanilla-s0"], row["vanilla-s1"], row["from_scratch-s0"]
    assert v["eval_final_norm"][s0].tolist() == pytest.approx([(3 - 2) / 5, (9 - 2) / 7])
    assert v["eval_final_norm"][s1].tolist() == pytest.approx([(8 - 2) / 5, (3 - 2) / 7])
    assert v["forgetting_norm"][s0, 0] == pytest.approx(3 / 5) and v["forgetting_norm"][s1, 0] == 0.0
    assert v["forgetting_norm"][f0, 0] == pytest.approx(5 / 5)  # max(2, 6, 1) - 1
    # the reference's normalised learning-curve areas: task 0 (4-2)/5, (6-2)/5; task 1 (5-2)/7, (8-2)/7
    assert cont.scratch_auc == pytest.approx({0: 0.6, 1: 9 / 14})
    assert v["forward_transfer"][s0].tolist() == pytest.approx([0.4 - 0.6, 5 / 7 - 9 / 14])
    assert v["forward_transfer"][s1].tolist() == pytest.approx([0.8 - 0.6, 0 - 9 / 14])
    assert np.nanmean(v["forward_transfer"][scores.rows("from_scratch")], axis=0) == pytest.approx([0, 0])
    # per-run means over tasks: the average performance at the end
    assert cont.run_means["eval_final"][s0] == 6.0
    assert cont.run_means["eval_final_norm"][s0] == pytest.approx((0.2 + 1.0) / 2)
    assert cont.run_means["forgetting"][s0] == 3.0  # task 1 has none


def test_without_the_reference_there_are_no_normalised_scores(sweep):
    runs, _ = load_sweep(sweep)
    scores = compute_scores(runs)
    cont = continual_scores(runs, scores, "nope")
    assert cont.reference is None and "`nope`" in cont.notes[0]
    assert np.isnan(cont.values["forward_transfer"]).all() and np.isnan(cont.values["eval_final_norm"]).all()
    assert np.isfinite(cont.values["eval_final"]).all()


def test_a_task_the_reference_does_not_learn_has_no_normalised_score(tmp_path):
    sweep = tmp_path / "sweep"
    _write_run(sweep / "runs" / "vanilla-s0", [2, 6, 4, 3], [NAN, NAN, 5, 9], (1, 3))
    _write_run(sweep / "runs" / "from_scratch-s0", [2, 6, 1, 1], [NAN, NAN, 3, 2], (1, 3))
    runs, _ = load_sweep(sweep)
    scores = compute_scores(runs)
    cont = continual_scores(runs, scores, "from_scratch")
    assert np.isfinite(cont.values["eval_final_norm"][:, 0]).all()
    assert np.isnan(cont.values["eval_final_norm"][:, 1]).all()  # learned 2 < random 3
    assert "task(s) 1" in cont.notes[0]


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_report_has_the_continual_section_files_and_figures(sweep):
    out = write_report(sweep)
    md = (out / "report.md").read_text()
    assert "## Continual-learning evaluation" in md and "ε = 0.001, 3 episodes per task" in md
    assert "P(X > Y)" in md and "| vanilla | from_scratch |" in md
    for stem in ("eval_returns", "performance_profiles", "probability_of_improvement"):
        assert (out / f"{stem}.png").is_file() and (out / f"{stem}.pdf").is_file()
        assert f"![{stem.replace('_', ' ')}]({stem}.png)" in md
    summary = _csv(out / "summary.csv")
    ft = {(r["method"], r["task"]): float(r["iqm"]) for r in summary if r["quantity"] == "forward_transfer"}
    assert ft[("vanilla", "0")] == pytest.approx(0.0, abs=1e-12)  # mean of -0.2 and 0.2
    assert ft[("from_scratch", "0")] == 0.0  # rounding noise (1e-17) snapped to 0
    assert not any(r["quantity"].startswith("eval/") for r in summary)
    means = {(r["method"], r["quantity"]): r for r in _csv(out / "continual.csv")}
    assert float(means[("vanilla", "eval_final")]["iqm"]) == pytest.approx((6.0 + 5.5) / 2)
    assert means[("vanilla", "eval_final")]["task"] == "mean"
    (imp,) = _csv(out / "improvement.csv")
    # final returns, task 0: vanilla 3, 8 vs from_scratch 1, 1 -> 1; task 1: 9, 3 vs 7, 11 -> 1/4
    assert (imp["x"], imp["y"]) == ("vanilla", "from_scratch")
    assert float(imp["probability"]) == pytest.approx((1 + 0.25) / 2)
    assert int(imp["tasks"]) == 2
    # "Other metric columns" lists no continual quantity
    assert "### Other metric columns" not in md


def test_report_without_evaluations_is_unchanged(tmp_path, write_run, episodes):
    sweep = tmp_path / "plain"
    write_run(sweep / "runs" / "m-s0", episodes(0.0))
    rep = build_report(sweep)
    assert rep.continual is not None and not rep.continual.any and not rep.improvements
    out = write_report(sweep)
    assert "Continual-learning" not in (out / "report.md").read_text()
    assert not (out / "continual.csv").exists() and not (out / "eval_returns.png").exists()


# ------------------------------------------------------------------------------------ rliable's views
def test_probability_of_improvement_known_answers():
    x = np.array([[3.0, 2.0]])
    y = np.array([[1.0, 1.0], [4.0, 2.0]])
    # task 0: 3 > 1, 3 < 4 -> 1/2; task 1: 2 > 1, 2 = 2 (a tie counts 1/2) -> 3/4
    assert probability_of_improvement(x, y) == pytest.approx((0.5 + 0.75) / 2)
    assert probability_of_improvement(y, x) == pytest.approx(1 - 0.625)
    same = np.array([[1.0, 5.0], [2.0, 7.0]])
    assert probability_of_improvement(same, same) == 0.5
    with pytest.raises(ValueError, match="same tasks"):
        probability_of_improvement(x, np.ones((2, 3)))
    with pytest.raises(ValueError, match="finite"):
        probability_of_improvement(np.array([[NAN, 1.0]]), y)


def test_score_distribution_and_profile():
    scores = np.array([[0.0, 1.0], [0.5, 2.0]])
    assert score_distribution(scores, [-1.0, 0.0, 0.5, 2.0]).tolist() == [1.0, 0.75, 0.5, 0.0]
    p = performance_profile(scores, np.linspace(-1, 3, 9), n_boot=200, seed=0)
    assert (np.diff(p.fraction) <= 0).all() and (p.low <= p.fraction).all() and (p.fraction <= p.high).all()
    assert (p.runs, p.tasks) == (2, 2)


def test_stratified_bootstrap_resamples_runs_within_tasks():
    # task columns are constant across runs: every resample equals the data
    scores = np.array([[1.0, 5.0], [1.0, 5.0], [1.0, 5.0]])
    point, low, high = stratified_bootstrap(scores, lambda m: m.mean(axis=0), n_boot=50, seed=1)
    assert point.tolist() == low.tolist() == high.tolist() == [1.0, 5.0]
    imp = improvement(np.array([[2.0], [3.0]]), np.array([[0.0], [1.0]]), n_boot=100, seed=0)
    assert imp.probability == imp.low == imp.high == 1.0 and (imp.runs_x, imp.runs_y, imp.tasks) == (2, 2, 1)
