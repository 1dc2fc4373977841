"""`rlplast report` on hand-written run directories: known answers, no metrics, no manifest."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from rlplast.cli import main
from rlplast.report import build_report, load_run, task_scores
from rlplast.runlog import BASE_COLUMNS


def _write_run(run: Path, episodes: list[tuple[int, float, int]], metric_cols: dict[str, list] | None = None):
    """episodes: (step, return, task). Logging rows every 10 steps carry the task of that step."""
    run.mkdir(parents=True)
    with open(run / "episodes.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "episode_return", "episode_length", "task_id"])
        for step, ret, task in episodes:
            w.writerow([step, ret, 10, task])
    last = max(s for s, _, _ in episodes)
    steps = list(range(10, last + 10, 10))
    task_at = {s: max((t for st, _, t in episodes if st <= s), default=0) for s in steps}
    extra = sorted(metric_cols or {})
    with open(run / "metrics.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(BASE_COLUMNS + extra)
        for i, s in enumerate(steps):
            base = {"step": s, "shift/task_id": task_at[s], "rollout/ep_return_mean": float(i)}
            row = [base.get(c, "") for c in BASE_COLUMNS]
            row += [metric_cols[c][i] if i < len(metric_cols[c]) else "" for c in extra]
            w.writerow(row)
    (run / "summary.json").write_text(json.dumps({"wall_time_s": 1.0, "steps_per_s": 100.0, "steps": last}))


def _episodes(offset: float) -> list[tuple[int, float, int]]:
    task0 = [(10, 1.0 + offset, 0), (20, 2.0 + offset, 0), (40, 4.0 + offset, 0)]
    task1 = [(100 + i, float(i) + offset, 1) for i in range(12)]
    return task0 + task1


def test_task_scores_known_answers(tmp_path: Path):
    _write_run(tmp_path / "runs" / "m-s0", _episodes(0.0))
    run = load_run(tmp_path / "runs" / "m-s0")
    assert (run.method, run.seed) == ("m", 0)
    sc = task_scores(run)
    assert sc[0]["mean_return"] == pytest.approx(7 / 3)
    # trapezoid: (1+2)/2*10 + (2+4)/2*20 = 75 over a span of 30 steps
    assert sc[0]["auc"] == pytest.approx(2.5)
    assert sc[0]["end_return"] == pytest.approx(7 / 3)  # fewer than 10 episodes: all of them
    assert sc[1]["mean_return"] == pytest.approx(5.5)
    assert sc[1]["end_return"] == pytest.approx(np.mean(np.arange(2, 12)))  # last 10 episodes
    assert sc[1]["return_drop"] == pytest.approx(7 / 3 - 5.5)
    assert np.isnan(sc[0]["return_drop"])


def test_report_without_metrics_or_manifest(tmp_path: Path, capsys):
    for seed, offset in ((0, 0.0), (1, 1.0)):
        _write_run(tmp_path / "runs" / f"m-s{seed}", _episodes(offset))
    assert main(["report", str(tmp_path)]) == 0
    assert "report written" in capsys.readouterr().out
    rep = tmp_path / "report"
    md = (rep / "report.md").read_text()
    assert "No metrics" in md and "No NC1 column" in md
    for f in ("returns.png", "collapse.png", "nc1_vs_plasticity.png", "summary.csv", "correlations.csv"):
        assert (rep / f).stat().st_size > 0
    with open(rep / "summary.csv", newline="") as fh:
        rows = {(r["method"], r["task"], r["quantity"]): r for r in csv.DictReader(fh)}
    r = rows[("m", "0", "mean_return")]
    assert int(r["n"]) == 2 and float(r["iqm"]) == pytest.approx(7 / 3 + 0.5)
    assert float(r["ci_low"]) <= float(r["iqm"]) <= float(r["ci_high"])
    assert rows[("m", "all", "mean_return")]["n"] == "4"
    assert rows[("m", "0", "return_drop")]["n"] == "0" and rows[("m", "0", "return_drop")]["iqm"] == ""


def test_metric_means_and_correlation_points(tmp_path: Path):
    # NC1 rises with the logging step in task 0 while the rolling return (= row index) rises too.
    # Logging rows at steps 10..90 are task 0, rows at 100 and 110 task 1.
    nc1 = [1.0, 2.0, 3.0, 4.0, "", "", 7.0, 8.0, 9.0, 9.0, 9.0]
    for seed in range(3):
        _write_run(
            tmp_path / "runs" / f"m-s{seed}",
            _episodes(float(seed)),
            {"collapse/nc1_greedy": nc1, "plasticity/srank": [5] * 11},
        )
    rep = build_report(tmp_path)
    sc = rep.scores["m-s0"]
    assert sc[0]["collapse/nc1_greedy"] == pytest.approx(34 / 7)  # empty cells ignored
    assert sc[1]["collapse/nc1_greedy"] == pytest.approx(9.0)
    assert sc[0]["plasticity/srank"] == 5.0
    first = [c for c in rep.correlations if c.scope == "all" and c.phase.startswith("task 0")]
    assert first and first[0].pearson.n == 21 and first[0].pearson.r == pytest.approx(1.0)
    later = [c for c in rep.correlations if c.scope == "m" and c.phase.startswith("tasks >= 1")]
    assert later[0].pearson.n == 3 and later[0].pearson.reason == "constant input"  # NC1 9 everywhere


# ------------------------------------------------------------------ bad input: one line, exit 2
def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("rlplast: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _two_runs(root: Path) -> Path:
    for seed, offset in ((0, 0.0), (1, 1.0)):
        _write_run(root / "runs" / f"m-s{seed}", _episodes(offset))
    return root


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[1, 2]", "expected a JSON object, got an array"),
        ("3", "expected a JSON object, got a number"),
        ('{"runs": [1]}', "'runs' must be an object of run entries, got an array"),
        ('{"runs": {"m-s0": "done"}}', "run 'm-s0' must be an object, got a string"),
        ('{"runs": {"m-s0": {"state": "done", "run_dir": 5}}}', "run 'm-s0': 'run_dir' must be a string"),
        ('{"runs": {"m-s0": {"state": "done", "seed": "x"}}}', "run 'm-s0': 'seed' must be a number"),
    ],
)
def test_report_names_a_manifest_that_is_not_a_manifest(tmp_path: Path, capsys, text: str, problem: str):
    sweep = _two_runs(tmp_path)
    (sweep / "manifest.json").write_text(text)
    assert main(["report", str(sweep)]) == 2
    assert f"cannot read sweep manifest {sweep / 'manifest.json'}: {problem}" in _one_line_error(capsys)
    assert not (sweep / "report").exists()


@pytest.mark.parametrize(("text", "problem"), [("{bad", "Expecting property name"), ("[]", "got an array")])
def test_report_names_a_corrupt_run_summary(tmp_path: Path, capsys, text: str, problem: str):
    sweep = _two_runs(tmp_path)
    (sweep / "runs" / "m-s1" / "summary.json").write_text(text)
    assert main(["report", str(sweep)]) == 2
    err = _one_line_error(capsys)
    assert f"cannot read run summary {sweep / 'runs' / 'm-s1' / 'summary.json'}: " in err and problem in err
    assert not (sweep / "report").exists()


def test_report_names_a_csv_it_cannot_decode(tmp_path: Path, capsys):
    sweep = _two_runs(tmp_path)
    (sweep / "runs" / "m-s1" / "episodes.csv").write_bytes(b"step,episode_return\n\xff\xfe\n")
    assert main(["report", str(sweep)]) == 2
    assert f"cannot read {sweep / 'runs' / 'm-s1' / 'episodes.csv'}: " in _one_line_error(capsys)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_report_out_that_cannot_be_created(tmp_path: Path, capsys):
    sweep = _two_runs(tmp_path)
    assert main(["report", str(sweep), "--out", "/proc/x/y"]) == 2
    assert "cannot create report directory /proc/x/y: " in _one_line_error(capsys)


def test_report_out_is_a_file_or_below_one(tmp_path: Path, capsys):
    sweep = _two_runs(tmp_path / "sweep")
    afile = tmp_path / "afile"
    afile.write_text("keep me\n")
    for out in (afile, afile / "sub"):
        assert main(["report", str(sweep), "--out", str(out)]) == 2
        assert f"cannot create report directory {out}: " in _one_line_error(capsys)
    assert afile.read_text() == "keep me\n"
    (sweep / "report").write_text("not a folder\n")  # the default --out
    assert main(["report", str(sweep)]) == 2
    assert "it exists and is not a directory" in _one_line_error(capsys)
    assert (sweep / "report").read_text() == "not a folder\n"
