"""Continual-learning evaluation: training unchanged, exact resume, frozen tasks, known columns."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlplast.agents import PlasticDQN
from rlplast.callbacks import Evaluation, StepRecord
from rlplast.callbacks.eval import freeze_task, play_episode, preserved_rng
from rlplast.cli import main
from rlplast.config import EvalConfig, load_config
from rlplast.envs import find_task_wrapper, make_env
from rlplast.errors import UserError
from rlplast.runlog import WALL_CLOCK_COLUMNS, read_metrics_csv

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import REPO, tiny_overrides  # noqa: E402

STEPS = 2400
BASE = [
    *tiny_overrides(STEPS, metrics=True),
    "env.kwargs.steps_per_task=700",
    "env.kwargs.n_tasks=4",
    "output.tensorboard=false",
    "interventions=[{name: reset_last_layers, every_steps: 900}]",
]
EVAL = ["eval.enabled=true", "eval.every_steps=300", "eval.episodes=2"]


def _train(out: Path, overrides: list[str]) -> None:
    args = ["train", str(REPO / "configs/permuted_cartpole.yaml"), "--out", str(out), "--quiet"]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 0


def _params(run: Path) -> list[torch.Tensor]:
    return [p.detach().clone() for p in PlasticDQN.load(run / "model.zip").q_net.parameters()]


def _rows(run: Path, drop_eval: bool) -> list[dict[str, str]]:
    return [
        {
            k: v
            for k, v in r.items()
            if k not in WALL_CLOCK_COLUMNS and not (drop_eval and k.startswith("eval/"))
        }
        for r in read_metrics_csv(run / "metrics.csv")
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """The same run without and with evaluation (metrics on, a reset every 900 steps)."""
    root = tmp_path_factory.mktemp("eval")
    _train(root / "plain", BASE)
    _train(root / "eval", [*BASE, *EVAL, "checkpoint.every_steps=100", "checkpoint.keep=50"])
    return root / "plain", root / "eval"


def test_evaluation_leaves_training_bit_for_bit_unchanged(runs):
    plain, evaluated = runs
    for p, q in zip(_params(plain), _params(evaluated), strict=True):
        assert torch.equal(p, q)
    assert (plain / "episodes.csv").read_text() == (evaluated / "episodes.csv").read_text()
    assert _rows(plain, drop_eval=True) == _rows(evaluated, drop_eval=True)  # metrics columns included
    assert not any(k.startswith("eval/") for k in _rows(plain, drop_eval=False)[0])


def test_evaluation_columns(runs):
    _, evaluated = runs
    rows = {int(r["step"]): r for r in read_metrics_csv(evaluated / "metrics.csv")}
    evaluated_steps = [s for s, r in rows.items() if r["eval/mean_return"]]
    assert evaluated_steps == list(range(300, STEPS + 1, 300))
    # tasks: 0..699 -> 0, 700..1399 -> 1, ...; an evaluation sees every task reported so far
    seen = {300: [0], 600: [0], 900: [0, 1], 1200: [0, 1], 1500: [0, 1, 2], 2400: [0, 1, 2, 3]}
    for step, tasks in seen.items():
        row = rows[step]
        got = [t for t in range(4) if row.get(f"eval/task_{t}/return")]
        assert got == tasks, step
        mean = np.mean([float(row[f"eval/task_{t}/return"]) for t in tasks])
        assert float(row["eval/mean_return"]) == pytest.approx(mean)
    # the random-policy return once per task: in the first evaluation that includes it
    first = {0: 300, 1: 900, 2: 1500, 3: 2400}
    for task, step in first.items():
        with_random = [s for s, r in rows.items() if r.get(f"eval/task_{task}/random_return")]
        assert with_random == [step]
        assert float(rows[step][f"eval/task_{task}/random_return"]) > 0  # CartPole: >= 1 per episode


def _kill_after_checkpoint(out: Path, overrides: list[str], min_step: int) -> None:
    args = ["train", str(REPO / "configs/permuted_cartpole.yaml"), "--out", str(out), "--quiet"]
    for o in overrides:
        args += ["--set", o]
    proc = subprocess.Popen([sys.executable, "-m", "rlplast.cli", *args], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ckpts = sorted((out / "checkpoints").glob("ckpt-*.pkl")) if (out / "checkpoints").is_dir() else []
            if ckpts and int(ckpts[-1].stem.split("-")[1]) >= min_step:
                proc.send_signal(signal.SIGKILL)
                break
            if proc.poll() is not None:
                pytest.fail(f"training ended before the kill point: {proc.stderr.read().decode()}")
            time.sleep(0.005)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists()


@pytest.mark.parametrize("kill_after", [800, 1000], ids=["after-task-switch", "after-evaluation"])
def test_sigkill_then_resume_is_exact_with_evaluation(runs, tmp_path, kill_after):
    _, reference = runs
    out = tmp_path / "run"
    _kill_after_checkpoint(
        out, [*BASE, *EVAL, "checkpoint.every_steps=100", "checkpoint.keep=50"], kill_after
    )
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    for p, q in zip(_params(reference), _params(out), strict=True):
        assert torch.equal(p, q)
    assert (reference / "episodes.csv").read_text() == (out / "episodes.csv").read_text()
    ra, rb = _rows(reference, drop_eval=False), _rows(out, drop_eval=False)
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    assert ra == rb  # eval columns included


def test_the_budget_row_is_evaluated(tmp_path):
    out = tmp_path / "run"
    _train(out, [*tiny_overrides(1000), "eval.enabled=true", "eval.every_steps=300", "eval.episodes=1"])
    rows = read_metrics_csv(out / "metrics.csv")
    assert [r["step"] for r in rows if r["eval/mean_return"]] == ["300", "600", "900", "1000"]


def test_every_steps_must_be_a_multiple_of_log_every_steps():
    with pytest.raises(UserError, match=r"eval.every_steps \(150\) must be a multiple of"):
        load_config(REPO / "configs/cartpole.yaml", ["eval.enabled=true", "eval.every_steps=150"])
    load_config(REPO / "configs/cartpole.yaml", ["eval.every_steps=150"])  # not checked when disabled


def test_freeze_task_holds_the_task_past_the_schedule():
    env = make_env("rlplast/PermutedCartPole-v0", {"steps_per_task": 5, "n_tasks": 3, "switch_at": "step"})
    freeze_task(env, 2)
    env.reset(seed=0)
    for _ in range(40):
        _, _, terminated, truncated, info = env.step(0)
        assert info["task_id"] == 2
        if terminated or truncated:
            _, info = env.reset()
            assert info["task_id"] == 2
    reference = make_env("rlplast/PermutedCartPole-v0", {"steps_per_task": 5, "n_tasks": 3})
    find_task_wrapper(reference).set_task(2)
    a, _ = env.reset(seed=3)
    b, _ = reference.reset(seed=3)
    np.testing.assert_array_equal(a, b)  # the same task 2 as the training env's


def test_freeze_task_on_an_env_without_tasks():
    env = gym.make("CartPole-v1")
    freeze_task(env, 0)
    with pytest.raises(UserError, match="no task schedule"):
        freeze_task(env, 1)


def test_play_episode_draws_only_from_its_generator():
    env = gym.make("CartPole-v1")
    np.random.seed(0)
    state = np.random.get_state()[1].copy()
    a = play_episode(env, lambda obs: 0, np.random.default_rng(5), epsilon=0.5)
    b = play_episode(env, lambda obs: 0, np.random.default_rng(5), epsilon=0.5)
    assert a == b
    assert (np.random.get_state()[1] == state).all()
    # epsilon = 1: every action is random, whatever the greedy one
    assert play_episode(env, lambda obs: 0, np.random.default_rng(1), epsilon=1.0) == play_episode(
        env, lambda obs: 1, np.random.default_rng(1), epsilon=1.0
    )
    assert play_episode(env, lambda obs: 0, np.random.default_rng(1), epsilon=0.0, max_steps=3) == 3.0


def test_preserved_rng_restores_the_global_states():
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    with preserved_rng():
        random.random(), np.random.rand(3), torch.rand(5)
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(1), expected[2])


def test_evaluation_state_round_trips():
    model = PlasticDQN("MlpPolicy", "CartPole-v1", seed=0, learning_starts=10, device="cpu")
    record = StepRecord()
    record.task_id = 0
    cfg = EvalConfig(enabled=True, every_steps=100, episodes=2)

    def evaluation() -> Evaluation:
        ev = Evaluation(cfg, lambda: gym.make("CartPole-v1"), seed=3, record=record, total_steps=1000)
        ev.init_callback(model)
        return ev

    first = evaluation()
    first.evaluate()
    state = first.state_dict()
    again = first.evaluate()
    resumed = evaluation()
    resumed.load_state_dict(state)
    assert resumed.evaluate() == again
    assert "eval/task_0/random_return" not in again  # measured once
    assert (
        first.due(100, 0) and not first.due(150, 100) and first.due(1000, 950) and not first.due(1050, 1000)
    )
