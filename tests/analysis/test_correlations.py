"""NC1-vs-plasticity points and coefficients on hand-written runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlplast.analysis import build_report, correlation_points


def test_metric_means_and_correlation_points(tmp_path: Path, write_run, episodes):
    # NC1 rises with the logging step in task 0 while the rolling return (= row index) rises too.
    # Logging rows at steps 10..90 are task 0, rows at 100 and 110 task 1.
    nc1 = [1.0, 2.0, 3.0, 4.0, "", "", 7.0, 8.0, 9.0, 9.0, 9.0]
    for seed in range(3):
        write_run(
            tmp_path / "runs" / f"m-s{seed}",
            episodes(float(seed)),
            {"collapse/nc1_greedy": nc1, "plasticity/srank": [5] * 11},
        )
    rep = build_report(tmp_path)
    sc = rep.scores
    assert sc.get("collapse/nc1_greedy", "m-s0", 0) == pytest.approx(34 / 7)  # empty cells ignored
    assert sc.get("collapse/nc1_greedy", "m-s0", 1) == pytest.approx(9.0)
    assert sc.get("plasticity/srank", "m-s0", 0) == 5.0
    first = [c for c in rep.correlations if c.scope == "all" and c.phase.startswith("task 0")]
    assert first and first[0].pearson.n == 21 and first[0].pearson.r == pytest.approx(1.0)
    later = [c for c in rep.correlations if c.scope == "m" and c.phase.startswith("tasks >= 1")]
    assert later[0].pearson.n == 3 and later[0].pearson.reason == "constant input"  # NC1 9 everywhere
    x, y = correlation_points(rep.runs, sc, "collapse/nc1_greedy", "return", "later")
    assert x.tolist() == [9.0, 9.0, 9.0] and y.tolist() == pytest.approx([5.5, 6.5, 7.5])
    x, y = correlation_points(rep.runs[:1], sc, "collapse/nc1_greedy", "return", "first")
    assert x.tolist() == [1.0, 2.0, 3.0, 4.0, 7.0, 8.0, 9.0] and y.tolist() == [
        0.0,
        1.0,
        2.0,
        3.0,
        6.0,
        7.0,
        8.0,
    ]
