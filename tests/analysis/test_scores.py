"""Per-run, per-task scores as (runs × tasks) arrays, and their aggregation over seeds."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from rlplast.analysis import aggregate, compute_scores, load_run, load_sweep, order_quantities, task_scores

nan = math.nan


def test_task_scores_known_answers(tmp_path: Path, write_run, episodes):
    run = load_run(write_run(tmp_path / "runs" / "m-s0", episodes(0.0)))
    sc = task_scores(run)
    assert sc[0]["mean_return"] == pytest.approx(7 / 3)
    # trapezoid: (1+2)/2*10 + (2+4)/2*20 = 75 over a span of 30 steps
    assert sc[0]["auc"] == pytest.approx(2.5)
    assert sc[0]["end_return"] == pytest.approx(7 / 3)  # fewer than 10 episodes: all of them
    assert sc[1]["mean_return"] == pytest.approx(5.5)
    assert sc[1]["end_return"] == pytest.approx(np.mean(np.arange(2, 12)))  # last 10 episodes
    assert sc[1]["return_drop"] == pytest.approx(7 / 3 - 5.5)
    assert np.isnan(sc[0]["return_drop"])


@pytest.fixture
def small_sweep(tmp_path: Path, write_run) -> Path:
    """a-s0, a-s1: two tasks and a custom/score column; b-s0: task 0 only, no metric column."""
    a0 = [(10, 1.0, 0), (20, 2.0, 0), (40, 4.0, 0), (100, 3.0, 1), (110, 5.0, 1)]
    a1 = [(s, r + 1.0, t) for s, r, t in a0]
    # 11 logging rows (steps 10..110): rows 0..8 in task 0, rows 9 and 10 in task 1
    write_run(tmp_path / "runs" / "a-s0", a0, {"custom/score": [float(i) for i in range(11)]})
    write_run(tmp_path / "runs" / "a-s1", a1, {"custom/score": [2.0 * i for i in range(11)]})
    write_run(tmp_path / "runs" / "b-s0", [(10, 10.0, 0), (30, 20.0, 0)])
    return tmp_path


def test_scores_arrays_hand_computed(small_sweep: Path):
    runs, _ = load_sweep(small_sweep)
    s = compute_scores(runs)
    assert s.runs == ("a-s0", "a-s1", "b-s0")
    assert (s.methods, s.seeds, s.tasks) == (("a", "a", "b"), (0, 1, 0), (0, 1))
    assert s.quantities == ["mean_return", "auc", "end_return", "return_drop", "custom/score"]
    np.testing.assert_array_equal(s.seen, [[True, True], [True, True], [True, False]])
    expected = {
        "mean_return": [[7 / 3, 4.0], [10 / 3, 5.0], [15.0, nan]],
        # a-s0 task 0: (1.5 * 10 + 3 * 20) / 30; task 1: (3 + 5) / 2 over a 10-step span
        "auc": [[2.5, 4.0], [3.5, 5.0], [15.0, nan]],
        "end_return": [[7 / 3, 4.0], [10 / 3, 5.0], [15.0, nan]],
        "return_drop": [[nan, 7 / 3 - 4.0], [nan, 10 / 3 - 5.0], [nan, nan]],
        "custom/score": [[4.0, 9.5], [8.0, 19.0], [nan, nan]],  # mean of rows 0..8 and of rows 9, 10
    }
    for q, want in expected.items():
        assert s.values[q].shape == (3, 2)
        np.testing.assert_allclose(s.values[q], want, err_msg=q)
    by_method = s.by_method("mean_return")
    assert list(by_method) == ["a", "b"] and by_method["a"].shape == (2, 2) and by_method["b"].shape == (1, 2)
    assert s.get("custom/score", "a-s1", 1) == 19.0 and math.isnan(s.get("nope", "a-s1", 1))
    assert s.run_tasks(2) == [0]


def test_aggregate_hand_computed(small_sweep: Path):
    runs, _ = load_sweep(small_sweep)
    cells = {(c.method, c.task, c.quantity): c for c in aggregate(compute_scores(runs))}
    c = cells[("a", "1", "custom/score")]
    assert (c.n, c.mean, c.iqm) == (2, pytest.approx(14.25), pytest.approx(14.25))
    # 2 seeds: no CI, the min–max range instead
    assert math.isnan(c.ci_low) and math.isnan(c.ci_high) and c.interval == "range"
    assert (c.min, c.max) == (9.5, 19.0) and c.bounds == (9.5, 19.0)
    pooled = cells[("a", "all", "mean_return")]
    assert pooled.n == 4 and pooled.mean == pytest.approx((7 / 3 + 4 + 10 / 3 + 5) / 4)
    assert (pooled.seeds, pooled.pooled, pooled.interval) == (2, True, "none")
    assert cells[("a", "0", "return_drop")].n == 0
    # b saw task 0 only and logged no metric column: no task-1 row, no custom/score row
    assert {k for k in cells if k[0] == "b"} == {
        ("b", t, q) for t in ("0", "all") for q in ("mean_return", "auc", "end_return", "return_drop")
    }
    single = cells[("b", "0", "mean_return")]
    assert (single.n, single.iqm) == (1, 15.0) and math.isnan(single.ci_low)
    assert single.interval == "none" and single.fmt() == "15.0"


def test_order_quantities_keeps_paper_metrics_first():
    names = [
        "train/nc_reg_loss",
        "plasticity/srank",
        "auc",
        "custom/score",
        "collapse/nc1_greedy",
        "mean_return",
    ]
    assert order_quantities(names) == [
        "mean_return",
        "auc",
        "collapse/nc1_greedy",
        "plasticity/srank",
        "custom/score",
        "train/nc_reg_loss",
    ]


def test_a_new_metric_column_leaves_existing_cis_unchanged(tmp_path: Path, write_run, episodes):
    nc1 = [1.0, 3.0, 2.0, 5.0, 4.0, 6.0, 9.0, 7.0, 8.0, 9.0, 1.0]

    def cells(root: Path, extra: dict) -> dict:
        for seed in range(6):  # enough seeds that the bootstrap CIs depend on the bootstrap seed
            cols = {
                "collapse/nc1_greedy": [v * (seed + 1) for v in nc1],
                "plasticity/srank": [v + seed**1.5 for v in nc1],
            }
            cols.update(extra)
            write_run(root / "runs" / f"m-s{seed}", episodes(float(seed)), cols)
        runs, _ = load_sweep(root)
        return {(c.method, c.task, c.quantity): c for c in aggregate(compute_scores(runs))}

    before = cells(tmp_path / "a", {})
    after = cells(tmp_path / "b", {"custom/score": [1.0] * 11, "intervention/resets": [2.0] * 11})
    assert set(after) - set(before) == {
        ("m", t, q) for t in ("0", "1", "all") for q in ("custom/score", "intervention/resets")
    }
    assert all(str(after[k]) == str(before[k]) for k in before)  # same bootstrap seeds, same CIs
