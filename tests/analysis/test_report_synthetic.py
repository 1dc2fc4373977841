"""`rlplast report` end to end on hand-written run directories: files, known answers, bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from rlplast.analysis import write_report
from rlplast.cli import main


def _summary_rows(path: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    with open(path, newline="") as fh:
        return {(r["method"], r["task"], r["quantity"]): r for r in csv.DictReader(fh)}


def test_report_without_metrics_or_manifest(two_runs: Path, capsys):
    assert main(["report", str(two_runs)]) == 0
    assert "report written" in capsys.readouterr().out
    rep = two_runs / "report"
    md = (rep / "report.md").read_text()
    assert "No metrics" in md and "No NC1 column" in md and "Other metric columns" not in md
    for f in ("returns.png", "collapse.png", "nc1_vs_plasticity.png", "summary.csv", "correlations.csv"):
        assert (rep / f).stat().st_size > 0
    rows = _summary_rows(rep / "summary.csv")
    r = rows[("m", "0", "mean_return")]
    assert int(r["n"]) == 2 and float(r["iqm"]) == pytest.approx(7 / 3 + 0.5)
    assert r["ci_low"] == r["ci_high"] == ""  # 2 seeds: no CI in summary.csv
    assert rows[("m", "all", "mean_return")]["n"] == "4"
    # report.md: the range of the 2 seeds, labelled as such; the pooled row without an interval
    assert "| m | 0 | 2 | – | 2.83 (2.33 to 3.33) |" in md
    assert "| m | all | 2 | 4 | 4.42 |" in md  # IQM of 7/3, 10/3, 5.5, 6.5 = mean of the middle two
    assert "min to max of 2 seeds" in md
    assert rows[("m", "0", "return_drop")]["n"] == "0" and rows[("m", "0", "return_drop")]["iqm"] == ""
    assert {q for _, _, q in rows} == {"mean_return", "auc", "end_return", "return_drop"}


def test_user_metric_and_intervention_columns_are_reported(tmp_path: Path, write_run, episodes):
    # 11 logging rows: steps 10..90 are task 0, steps 100 and 110 task 1.
    for seed in range(2):
        cols = {
            "custom/score": [float(seed + i) for i in range(11)],
            "intervention/resets": [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1],
            "collapse/nc1_greedy": [2.0] * 11,
            "train/loss": [0.5] * 11,  # a base column: never a metric
        }
        write_run(tmp_path / "runs" / f"m-s{seed}", episodes(float(seed)), cols)
    out = write_report(tmp_path, tmp_path / "out")
    rows = _summary_rows(out / "summary.csv")
    score0, score1 = rows[("m", "0", "custom/score")], rows[("m", "1", "custom/score")]
    # seed 0: task 0 = mean(0..8) = 4, task 1 = mean(9, 10) = 9.5; seed 1 one more
    assert (score0["n"], float(score0["mean"])) == ("2", pytest.approx(4.5))
    assert float(score1["mean"]) == pytest.approx(10.0)
    assert float(rows[("m", "1", "intervention/resets")]["iqm"]) == 1.0
    assert rows[("m", "all", "custom/score")]["n"] == "4"
    assert not any(
        q.startswith(("train/", "rollout/", "shift/")) or q in ("time_s", "step") for _, _, q in rows
    )
    # order: return quantities, then collapse/… and plasticity/…, then the other metric columns
    order = list(dict.fromkeys(q for _, _, q in rows))
    assert order[4:] == ["collapse/nc1_greedy", "custom/score", "intervention/resets"]
    md = (out / "report.md").read_text()
    assert "### Other metric columns per task" in md
    assert "| method | task | seeds | custom/score | intervention/resets |" in md
    assert "| m | 1 | 2 | 10.0 (9.50 to 10.5) | 1.00 (1.00 to 1.00) |" in md
    assert "All 3 metric columns (0 more) are in `summary.csv`." in md


def test_report_of_a_folder_of_train_run_dirs(tmp_path: Path, write_run, episodes):
    # `rlplast train`'s default names: <config>[-<method>]-s<seed>; no manifest, no runs/ folder
    for name, offset in (("cartpole-reset-s0", 0.0), ("cartpole-reset-s1", 1.0), ("cartpole-s0", 5.0)):
        write_run(tmp_path / "runs_here" / name, episodes(offset))
    out = write_report(tmp_path / "runs_here")
    assert out == tmp_path / "runs_here" / "report"
    rows = _summary_rows(out / "summary.csv")
    assert rows[("cartpole-reset", "0", "mean_return")]["n"] == "2"
    assert float(rows[("cartpole", "0", "mean_return")]["mean"]) == pytest.approx(7 / 3 + 5)
    assert "| cartpole-reset | 2 | 0 | 0 | 0, 1 |" in (out / "report.md").read_text()


# ------------------------------------------------------------------ bad input: one line, exit 2
def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("rlplast: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


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
def test_report_names_a_manifest_that_is_not_a_manifest(two_runs: Path, capsys, text: str, problem: str):
    (two_runs / "manifest.json").write_text(text)
    assert main(["report", str(two_runs)]) == 2
    assert f"cannot read sweep manifest {two_runs / 'manifest.json'}: {problem}" in _one_line_error(capsys)
    assert not (two_runs / "report").exists()


@pytest.mark.parametrize(("text", "problem"), [("{bad", "Expecting property name"), ("[]", "got an array")])
def test_report_names_a_corrupt_run_summary(two_runs: Path, capsys, text: str, problem: str):
    (two_runs / "runs" / "m-s1" / "summary.json").write_text(text)
    assert main(["report", str(two_runs)]) == 2
    err = _one_line_error(capsys)
    assert (
        f"cannot read run summary {two_runs / 'runs' / 'm-s1' / 'summary.json'}: " in err and problem in err
    )
    assert not (two_runs / "report").exists()


def test_report_names_a_csv_it_cannot_decode(two_runs: Path, capsys):
    (two_runs / "runs" / "m-s1" / "episodes.csv").write_bytes(b"step,episode_return\n\xff\xfe\n")
    assert main(["report", str(two_runs)]) == 2
    assert f"cannot read {two_runs / 'runs' / 'm-s1' / 'episodes.csv'}: " in _one_line_error(capsys)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_report_out_that_cannot_be_created(two_runs: Path, capsys):
    assert main(["report", str(two_runs), "--out", "/proc/x/y"]) == 2
    assert "cannot create report directory /proc/x/y: " in _one_line_error(capsys)


def test_report_out_is_a_file_or_below_one(two_runs: Path, tmp_path: Path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep me\n")
    for out in (afile, afile / "sub"):
        assert main(["report", str(two_runs), "--out", str(out)]) == 2
        assert f"cannot create report directory {out}: " in _one_line_error(capsys)
    assert afile.read_text() == "keep me\n"
    (two_runs / "report").write_text("not a folder\n")  # the default --out
    assert main(["report", str(two_runs)]) == 2
    assert "it exists and is not a directory" in _one_line_error(capsys)
    assert (two_runs / "report").read_text() == "not a folder\n"


def test_report_cli_refuses_an_explicit_reference_the_sweep_lacks(
    tmp_path: Path, write_run, episodes, capsys
):
    """`rlplast report --reference NAME` names a method of the sweep, else one line and exit 2."""
    sweep = tmp_path / "sweep"
    for method in ("vanilla", "reset"):
        write_run(sweep / "runs" / f"{method}-s0", episodes(0.0))
    assert main(["report", str(sweep), "--reference", "nosuch", "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nosuch" in err[0] and "reset, vanilla" in err[0]
    assert not (tmp_path / "rep").exists()
    assert main(["report", str(sweep), "--reference", "vanilla", "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "report.md").is_file()
