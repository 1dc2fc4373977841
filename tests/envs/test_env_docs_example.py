"""The user env of docs/environments.md, run as documented: it passes Gymnasium's check_env.

The code is read from the Markdown, so the documented pattern cannot rot.
"""

from __future__ import annotations

import importlib.util
import re
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from rlplast.envs import find_task_wrapper, make_env
from rlplast.errors import UserError

DOC = Path(__file__).resolve().parents[2] / "docs" / "environments.md"
IDS = ("mylab/ScaledRewardCartPole-v0", "mylab/ScaledAcrobot-v0")
# Warnings check_env gives for every wrapped env, and for CartPole's own infinite velocity bounds.
EXPECTED_WARNINGS = ("is different from the unwrapped version", "infinity. This is probably too")
HAS_PYGAME = importlib.util.find_spec("pygame") is not None


def documented_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    (code,) = [b for b in blocks if b.startswith("# mylab/envs.py")]
    return code


@pytest.fixture
def doc_envs():
    namespace: dict = {"__name__": "mylab_envs_from_docs"}
    exec(compile(documented_example(), str(DOC), "exec"), namespace)  # noqa: S102 - our own docs
    yield namespace
    for env_id in IDS:
        gym.registry.pop(env_id, None)


@pytest.mark.parametrize("env_id", IDS)
def test_the_documented_env_passes_check_env(doc_envs, env_id):
    env = gym.make(env_id, disable_env_checker=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Rendering needs pygame, which the test environment may lack; the render_mode plumbing
        # (what the old example got wrong) is checked below either way.
        check_env(env, skip_render_check=not HAS_PYGAME)
    unexpected = [str(w.message) for w in caught if not any(e in str(w.message) for e in EXPECTED_WARNINGS)]
    assert not unexpected
    for mode in env.metadata["render_modes"]:
        assert gym.make(env_id, render_mode=mode).render_mode == mode


def test_the_documented_reward_shift_scales_rewards_from_the_switch_step(doc_envs):
    env = gym.make("mylab/ScaledRewardCartPole-v0", steps_per_task=5, n_tasks=3, seed=2)
    wrapper = find_task_wrapper(env)
    env.reset(seed=0)
    rewards, tasks = [], []
    for _ in range(12):
        _, reward, terminated, truncated, info = env.step(0)
        rewards.append(reward)
        tasks.append(info["task_id"])
        if terminated or truncated:
            env.reset()
    assert tasks == [0] * 5 + [1] * 5 + [2] * 2
    scales = {k: float(np.random.default_rng([2, k]).uniform(0.5, 2.0)) for k in (1, 2)}
    expected = [1.0] * 5 + [scales[1]] * 5 + [scales[2]] * 2  # CartPole pays 1 per step
    assert rewards == pytest.approx(expected)
    assert wrapper.scale == pytest.approx(scales[2])


def test_the_documented_observation_shift_stays_in_its_widened_space(doc_envs):
    env = gym.make("mylab/ScaledAcrobot-v0", steps_per_task=3, n_tasks=4)
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    seen = set()
    for _ in range(12):
        assert obs in env.observation_space
        obs, _, _, _, info = env.step(env.action_space.sample())
        seen.add(info["task_id"])
    assert obs in env.observation_space
    assert seen == {0, 1, 2, 3} and find_task_wrapper(env).scale != 1.0


def test_the_documented_value_error_and_a_misspelt_kwarg_are_one_line_errors(doc_envs):
    with pytest.raises(UserError) as err:
        make_env("mylab/ScaledRewardCartPole-v0", {"low": 3.0})
    message = str(err.value)
    assert message.startswith(
        "env 'mylab/ScaledRewardCartPole-v0' raised ValueError in its constructor: need 0 < low <= high"
    )
    assert "environments.md" in message  # where it was raised (here: the docs themselves)
    with pytest.raises(UserError) as err:
        make_env("mylab/ScaledAcrobot-v0", {"steps_per_tsak": 10})
    message = str(err.value)
    assert "bad kwargs for env 'mylab/ScaledAcrobot-v0': unknown kwarg 'steps_per_tsak'" in message
    assert "(did you mean 'steps_per_task'?)" in message
    assert "valid: render_mode, steps_per_task, n_tasks, seed, switch_at, after_last" in message
    assert "TaskSequenceWrapper" not in message
