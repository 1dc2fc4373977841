"""The observation-offset ids of the continual-control protocols (TRAC / C-CHAIN).

Each level k >= 1 adds eps_k ~ N(0, 2^2 I), drawn from ``task_rng(seed, k)``: a pure function of
(seed, k), the same in every copy of the env; level 0 is unshifted; 10 levels by default.
"""

from __future__ import annotations

import importlib.util

import gymnasium as gym
import numpy as np
import pytest

import rlplast.envs  # noqa: F401  (registers the ids)
from rlplast.envs import find_task_wrapper, make_env, task_rng
from rlplast.errors import UserError

HAS_BOX2D = importlib.util.find_spec("Box2D") is not None
OFFSET_IDS = [
    "rlplast/OffsetCartPole-v0",
    "rlplast/OffsetAcrobot-v0",
    pytest.param(
        "rlplast/OffsetLunarLander-v0",
        marks=pytest.mark.skipif(not HAS_BOX2D, reason="Box2D is not installed (rlplast[box2d])"),
    ),
]


def _offsets(env_id: str, seed: int) -> np.ndarray:
    wrapper = find_task_wrapper(make_env(env_id, {"seed": seed}))
    rows = []
    for k in range(wrapper.n_tasks):
        wrapper.set_task(k)
        rows.append(wrapper.offset.copy())
    return np.stack(rows)


@pytest.mark.parametrize("env_id", OFFSET_IDS)
def test_offsets_are_n_0_4_per_level_and_a_pure_function_of_seed_and_level(env_id):
    offsets = _offsets(env_id, seed=3)
    assert offsets.shape[0] == 10  # 10 levels by default
    assert not offsets[0].any()  # level 0 is the unshifted env
    for k in range(1, 10):
        expected = task_rng(3, k).normal(0.0, 2.0, size=offsets.shape[1:]).astype(offsets.dtype)
        np.testing.assert_array_equal(offsets[k], expected)
    np.testing.assert_array_equal(_offsets(env_id, seed=3), offsets)  # another copy: the same levels
    assert not np.array_equal(_offsets(env_id, seed=4)[1:], offsets[1:])  # another seed: other levels


BASE_IDS = {
    "rlplast/OffsetCartPole-v0": "CartPole-v1",
    "rlplast/OffsetAcrobot-v0": "Acrobot-v1",
    "rlplast/OffsetLunarLander-v0": "LunarLander-v3",
}


@pytest.mark.parametrize("env_id", OFFSET_IDS)
def test_observations_are_the_base_observations_plus_the_level_offset(env_id):
    env = make_env(env_id, {"seed": 0})
    wrapper = find_task_wrapper(env)
    for k in (0, 2, 9):
        wrapper.set_task(k)
        obs, info = env.reset(seed=1)
        plain, _ = gym.make(BASE_IDS[env_id]).reset(seed=1)
        assert info["task_id"] == k
        np.testing.assert_array_equal(obs, (plain + wrapper.offset).astype(obs.dtype))
        assert obs in env.observation_space


def test_the_offset_pooled_over_many_levels_has_standard_deviation_2():
    env = make_env("rlplast/OffsetCartPole-v0", {"seed": 0, "n_tasks": 400})
    wrapper = find_task_wrapper(env)
    draws = []
    for k in range(1, 400):
        wrapper.set_task(k)
        draws.append(wrapper.offset.copy())
    pooled = np.concatenate(draws).astype(np.float64)  # 399 levels x 4 entries
    assert abs(pooled.mean()) < 0.2
    assert 1.85 < pooled.std() < 2.15


@pytest.mark.skipif(HAS_BOX2D, reason="Box2D is installed: nothing to refuse")
def test_offset_lunar_lander_without_box2d_is_a_one_line_error():
    with pytest.raises(UserError) as info:
        make_env("rlplast/OffsetLunarLander-v0", {})
    message = str(info.value)
    assert "\n" not in message
    assert "rlplast/OffsetLunarLander-v0" in message and "Box2D" in message
