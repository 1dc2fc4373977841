"""Training on shifting environments: task ids reach metrics.csv, summary.json and user envs."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from rlplast.cli import main
from rlplast.runlog import read_metrics_csv

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import REPO, tiny_overrides  # noqa: E402


def test_task_ids_are_logged_and_returns_split_per_task(tmp_path):
    out = tmp_path / "run"
    args = ["train", str(REPO / "configs/permuted_cartpole.yaml"), "--out", str(out), "--quiet"]
    for o in [*tiny_overrides(900), "env.kwargs.steps_per_task=300", "env.kwargs.n_tasks=3"]:
        args += ["--set", o]
    assert main(args) == 0
    rows = read_metrics_csv(out / "metrics.csv")
    tasks = {int(r["step"]): int(r["shift/task_id"]) for r in rows}
    # The step-th env step runs under task (step - 1) // 300: the row at step 300 is still task 0.
    assert tasks[300] == 0 and tasks[400] == 1 and tasks[600] == 1 and tasks[700] == 2
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["returns_per_task"]) == {"0", "1", "2"}
    episodes = (out / "episodes.csv").read_text().splitlines()
    assert episodes[0] == "step,episode_return,episode_length,task_id"
    assert {line.rsplit(",", 1)[1] for line in episodes[1:]} == {"0", "1", "2"}


def test_user_env_from_a_module_outside_rlplast(tmp_path, monkeypatch):
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "envs.py").write_text(
        textwrap.dedent(
            """
            import gymnasium as gym
            import numpy as np
            from rlplast.envs import TaskSequenceWrapper


            class FlipObservation(TaskSequenceWrapper):
                '''Odd tasks negate the observation.'''

                def __init__(self, env, **schedule):
                    super().__init__(env, **schedule)
                    self._init_task()

                def apply_task(self, k):
                    self.sign = -1.0 if k % 2 else 1.0

                def observation(self, obs):
                    return (self.sign * obs).astype(np.float32)


            def make(**kw):
                return FlipObservation(gym.make("CartPole-v1"), **kw)


            gym.register("userpkg/FlipCartPole-v0", entry_point=make, kwargs={"steps_per_task": 200})
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = tmp_path / "flip.yaml"
    cfg.write_text("env:\n  id: userpkg/FlipCartPole-v0\n  import: userpkg.envs\n  kwargs: {n_tasks: 2}\n")
    out = tmp_path / "run"
    args = ["train", str(cfg), "--out", str(out), "--quiet"]
    for o in tiny_overrides(500):
        args += ["--set", o]
    assert main(args) == 0
    rows = read_metrics_csv(out / "metrics.csv")
    assert {int(r["shift/task_id"]) for r in rows} == {0, 1}


@pytest.mark.parametrize("config", ["minatar_sequence.yaml", "minatar_sequence_short.yaml"])
def test_minatar_sequence_trains_with_the_cnn(tmp_path, config):
    pytest.importorskip("minatar")
    out = tmp_path / "minatar"
    args = ["train", str(REPO / "configs" / config), "--out", str(out), "--quiet"]
    overrides = [o for o in tiny_overrides(400, metrics=True) if not o.startswith("agent.net_arch")]
    for o in [*overrides, "env.kwargs.steps_per_task=150"]:
        args += ["--set", o]
    assert main(args) == 0
    rows = read_metrics_csv(out / "metrics.csv")
    assert len({r["shift/task_id"] for r in rows}) >= 2
    assert any(r.get("collapse/nc1_taken", "") != "" for r in rows)
