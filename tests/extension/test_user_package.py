"""A user package with an env, an intervention and a metric, loaded through ``plugins``.

``plastlab/`` (next to this file) is written the way docs/environments.md, docs/interventions.md and
docs/metrics.md describe: a reward shift using the ``reward()`` hook, a head-noise intervention using
the public helpers, and a metric in one file. The end-to-end run is a subprocess with ``PYTHONPATH``,
as a user would run ``rlplast train``; the bad-input cases run in-process and unload the package.
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest
import yaml

from rlplast.cli import main
from rlplast.interventions import INTERVENTIONS
from rlplast.metrics import METRICS

HERE = Path(__file__).resolve().parent
ENV_ID = "plastlab/RewardScaledCartPole-v0"

CONFIG = {
    "plugins": ["plastlab"],
    "env": {
        "id": ENV_ID,
        # switch between episodes, and task 1's factor is exactly 3 (low = high)
        "kwargs": {"steps_per_task": 300, "n_tasks": 2, "switch_at": "episode", "low": 3.0, "high": 3.0},
    },
    "agent": {
        "learning_starts": 100,
        "buffer_size": 2000,
        "batch_size": 32,
        "net_arch": [32, 32],
        "target_update_interval": 100,
    },
    "train": {"total_steps": 800, "seed": 0, "device": "cpu", "log_every_steps": 200, "progress": False},
    "metrics": {
        "every_steps": 400,
        "probe_size": 128,
        "probe_every_steps": 800,
        "n_min": 2,
        "names": ["plastlab_q_gap", "feature_norm"],
    },
    "interventions": [{"name": "plastlab_head_noise", "std": 0.01, "every_updates": 20}],
    "checkpoint": {"every_steps": 0},
    "output": {"tensorboard": False, "save_model": False},
}


def _write_config(folder: Path, **changes: object) -> Path:
    config = {**CONFIG, **changes}
    path = folder / "plastlab.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_the_user_package_trains_end_to_end(tmp_path):
    config = _write_config(tmp_path)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "rlplast.cli", "train", str(config), "--out", str(out), "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    rows = _rows(out / "metrics.csv")
    gaps = [float(r["plasticity/plastlab_q_gap"]) for r in rows if r["plasticity/plastlab_q_gap"]]
    assert len(gaps) == 2 and all(math.isfinite(g) and g >= 0 for g in gaps)  # steps 400 and 800
    injections = [float(r["intervention/head_noise_injections"]) for r in rows]
    assert injections == sorted(injections) and injections[-1] >= 5  # ~175 updates / 20
    assert float(rows[-1]["intervention/head_noise_norm"]) > 0
    assert {r["shift/task_id"] for r in rows} == {"0", "1"}

    # The reward() hook: CartPole pays 1 per step, task 1 pays 3 (switches only between episodes).
    episodes = _rows(out / "episodes.csv")
    by_task = {task: [e for e in episodes if e["task_id"] == task] for task in ("0", "1")}
    assert by_task["0"] and by_task["1"]
    for task, factor in (("0", 1.0), ("1", 3.0)):
        for e in by_task[task]:
            assert float(e["episode_return"]) == pytest.approx(factor * int(e["episode_length"]))

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["plugins"] == ["plastlab"]


# ---------------------------------------------------------------------------------- bad input
def _unload_plastlab() -> None:
    for name in [m for m in sys.modules if m == "plastlab" or m.startswith("plastlab.")]:
        del sys.modules[name]
    INTERVENTIONS.unregister("plastlab_head_noise")
    METRICS.unregister("plastlab_q_gap")
    gym.registry.pop(ENV_ID, None)


@pytest.fixture
def importable(monkeypatch):
    """plastlab on sys.path for this test only; its registrations are removed afterwards."""
    _unload_plastlab()
    monkeypatch.syspath_prepend(str(HERE))
    yield
    _unload_plastlab()


def _fails(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlplast: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _train(config: Path, out: Path) -> list[str]:
    return ["train", str(config), "--out", str(out), "--quiet"]


def test_a_plugin_that_cannot_be_imported_is_one_line(tmp_path, capsys, importable):
    out = tmp_path / "run"
    err = _fails(_train(_write_config(tmp_path, plugins=["plastlab", "plastlab_missing"]), out), capsys)
    assert "cannot import plugin 'plastlab_missing': No module named 'plastlab_missing'" in err
    assert not out.exists()


def test_a_plugin_that_raises_while_imported_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "plastlab_broken.py").write_text("x = 1\nraise RuntimeError('broken plugin')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "plastlab_broken", raising=False)
    out = tmp_path / "run"
    err = _fails(_train(_write_config(tmp_path, plugins=["plastlab_broken"]), out), capsys)
    assert "cannot import plugin 'plastlab_broken': RuntimeError: broken plugin (" in err
    assert "plastlab_broken.py:2)" in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("changes", "expect"),
    [
        ({"plugins": []}, "interventions[0]: unknown intervention 'plastlab_head_noise'"),
        (
            {
                "plugins": [],
                "interventions": [],
                "metrics": {**CONFIG["metrics"], "names": ["plastlab_q_gap"]},
            },
            "unknown metric 'plastlab_q_gap'",
        ),
        ({"plugins": [], "interventions": []}, "unknown metric 'plastlab_q_gap'"),
        ({"plugins": [], "interventions": [], "metrics": {"enabled": False}}, f"unknown env id '{ENV_ID}'"),
    ],
    ids=["intervention", "metric", "metric-among-others", "env"],
)
def test_names_from_a_package_not_listed_hint_at_plugins(tmp_path, capsys, importable, changes, expect):
    out = tmp_path / "run"
    err = _fails(_train(_write_config(tmp_path, **changes), out), capsys)
    assert expect in err
    assert "list the module that registers it under plugins" in err
    assert not out.exists()


def test_a_bad_intervention_parameter_of_the_package_is_caught_when_the_config_loads(
    tmp_path, capsys, importable
):
    out = tmp_path / "run"
    config = _write_config(tmp_path, interventions=[{"name": "plastlab_head_noise", "std": -1}])
    err = _fails(_train(config, out), capsys)
    assert "interventions[0]: intervention 'plastlab_head_noise': std must be >= 0.0, got -1.0" in err
    assert not out.exists()


def test_a_value_error_of_the_env_constructor_is_one_line_in_train_and_compare(tmp_path, capsys, importable):
    bad_env = {**CONFIG["env"], "kwargs": {"low": 3.0, "high": 1.0}}
    config = _write_config(tmp_path, env=bad_env)
    expect = (
        f"env '{ENV_ID}' raised ValueError in its constructor: need 0 < low <= high, got low=3.0, high=1.0 ("
    )
    out = tmp_path / "run"
    err = _fails(_train(config, out), capsys)
    assert expect in err and "plastlab" in err.split(expect)[1]  # where: plastlab/envs.py
    assert not out.exists()

    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "vanilla.yaml").write_text("{}\n")
    sweep = tmp_path / "sweep"
    err = _fails(
        ["compare", str(config), "--methods", "vanilla", "--seeds", "1", "--out", str(sweep)], capsys
    )
    assert expect in err
    assert not sweep.exists()


def test_a_misspelt_env_kwarg_names_the_env_and_its_kwargs(tmp_path, capsys, importable):
    config = _write_config(tmp_path, env={**CONFIG["env"], "kwargs": {"hihg": 2.0}})
    out = tmp_path / "run"
    err = _fails(_train(config, out), capsys)
    assert f"bad kwargs for env '{ENV_ID}': unknown kwarg 'hihg' (did you mean 'high'?)" in err
    assert "valid: steps_per_task, render_mode, low, high, n_tasks, seed, switch_at, after_last" in err
    assert not out.exists()
