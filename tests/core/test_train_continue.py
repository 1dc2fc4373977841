"""Continuing a run with a larger budget: ``rlplast train --resume RUN --total-steps N``.

What is exact: the exploration schedule keeps the run's original budget N1 (epsilon reaches its
final value after exploration_fraction × N1 and stays there), so a run trained to N1 and continued
to N2 is the run of N2 steps whose exploration schedule is the first run's: a fresh run with
exploration_fraction × N1 / N2. Here N1 = 1024 and N2 = 2048 make that fraction exact in floating
point, so both runs compute bitwise the same epsilon at every step.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

from rlplast.agents import PlasticDQN
from rlplast.checkpoint import list_checkpoints
from rlplast.cli import main
from rlplast.runlog import WALL_CLOCK_COLUMNS, read_metrics_csv

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import REPO, tiny_overrides  # noqa: E402

N1, N2 = 1024, 2048
FRACTION = 0.75  # epsilon's schedule ends at 768 of the first 1024 steps


def _train(out: Path, steps: int, fraction: float) -> None:
    argv = ["train", str(REPO / "configs/cartpole.yaml"), "--out", str(out), "--quiet"]
    overrides = [
        *tiny_overrides(steps, metrics=True),
        f"agent.exploration_fraction={fraction}",
        "checkpoint.every_steps=300",
        "output.tensorboard=false",
    ]
    for o in overrides:
        argv += ["--set", o]
    assert main(argv) == 0


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished run of N1 steps."""
    out = tmp_path_factory.mktemp("first") / "run"
    _train(out, N1, FRACTION)
    return out


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    """A run of N2 steps from the start, with the first run's exploration schedule."""
    out = tmp_path_factory.mktemp("fresh") / "run"
    _train(out, N2, FRACTION * N1 / N2)
    return out


@pytest.fixture
def run(finished, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def _rows(run: Path) -> list[dict[str, str]]:
    return [
        {k: v for k, v in r.items() if k not in WALL_CLOCK_COLUMNS}
        for r in read_metrics_csv(run / "metrics.csv")
    ]


def _assert_same_run(a: Path, b: Path) -> None:
    pa = PlasticDQN.load(a / "model.zip").q_net.parameters()
    pb = PlasticDQN.load(b / "model.zip").q_net.parameters()
    for p, q in zip(pa, pb, strict=True):
        assert torch.equal(p, q)
    assert _rows(a) == _rows(b)
    assert (a / "episodes.csv").read_text() == (b / "episodes.csv").read_text()


def test_a_finished_run_keeps_a_checkpoint_of_its_last_step(finished):
    steps = [int(p.stem.split("-")[1]) for p in list_checkpoints(finished / "checkpoints")]
    assert steps[0] == N1 == json.loads((finished / "summary.json").read_text())["steps"]
    # Its final row (off the logging grid of 100 steps) was written after that checkpoint.
    assert _rows(finished)[-1]["step"] == str(N1)


def test_continuing_equals_a_longer_run_with_the_first_runs_schedule(run, fresh, capsys):
    assert main(["train", "--resume", str(run), "--total-steps", str(N2), "--quiet"]) == 0
    assert f"resuming {run} from ckpt-{N1:012d}.pkl (step {N1}) to {N2} steps" in capsys.readouterr().err
    _assert_same_run(run, fresh)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == N2 and summary["schedule_total_steps"] == N1 and summary["resumed"]
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["total_steps"] == N2
    assert str(N1) not in {r["step"] for r in _rows(run)}  # the first run's final row is gone
    # The comparison can fail: with SB3's default, epsilon would rise again (the schedule would span
    # 2048 steps from the start); here it stays at its final value (0.04 in cartpole.yaml) after 768.
    rates = {int(r["step"]): float(r["rollout/exploration_rate"]) for r in _rows(run)}
    assert rates[700] > 0.1 and {v for k, v in rates.items() if k > 800} == {0.04}


def test_an_interrupted_continuation_resumes_with_total_steps(run, fresh, capsys):
    # As if killed right after the continuation rewrote config.yaml: no new checkpoint yet.
    data = yaml.safe_load((run / "config.yaml").read_text())
    data["train"]["total_steps"] = N2
    (run / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (run / "summary.json").unlink()
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert (
        f"at train.total_steps: {N2} (config.yaml) vs {N1} (checkpoint)" in err and "--total-steps N" in err
    )
    assert main(["train", "--resume", str(run), "--total-steps", str(N2), "--quiet"]) == 0
    _assert_same_run(run, fresh)


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


def _fails(argv: list[str], capsys, expect: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("rlplast: error:") and expect in err, err


@pytest.mark.parametrize(
    ("total", "expect"),
    [
        (N1, f"has already trained {N1} steps"),
        (10, f"has already trained {N1} steps"),
        (-5, "already trained"),
    ],
)
def test_a_budget_not_above_the_steps_trained_is_refused(run, capsys, total, expect):
    before = _snapshot(run)
    _fails(["train", "--resume", str(run), "--total-steps", str(total)], capsys, expect)
    assert _snapshot(run) == before


def test_a_finished_run_without_a_final_checkpoint_is_refused(run, capsys):
    list_checkpoints(run / "checkpoints")[0].unlink()
    before = _snapshot(run)
    _fails(
        ["train", "--resume", str(run), "--total-steps", str(N2)],
        capsys,
        f"finished at step {N1} but its latest checkpoint is from step 900",
    )
    assert _snapshot(run) == before


def test_finished_run_without_total_steps_says_how_to_continue(run, capsys):
    before = _snapshot(run)
    _fails(
        ["train", "--resume", str(run)],
        capsys,
        f"already finished (summary.json exists); nothing to resume; to train it for more steps: rlplast train --resume {run} --total-steps N",
    )
    assert _snapshot(run) == before


def test_total_steps_without_resume_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = str(REPO / "configs/cartpole.yaml")
    _fails(
        ["train", config, "--total-steps", "5000", "--out", "out"],
        capsys,
        "--total-steps continues a run: use it with --resume RUN_DIR (for a new run: --set train.total_steps=5000)",
    )
    assert not list(tmp_path.iterdir())
