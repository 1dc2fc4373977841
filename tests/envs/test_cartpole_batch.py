"""CartPoleBatch steps S CartPoles as arrays, bitwise as S gym.make("CartPole-v1") in a SyncVectorEnv."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.wrappers import RecordEpisodeStatistics

from rlplast.envs import make_env
from rlplast.envs.cartpole_batch import CartPoleBatch, batch_cartpoles
from rlplast.population import Population
from rlplast.population.envs import make_member_envs


def _run_side_by_side(make, n_envs: int, steps: int, seeds: list[int]) -> int:
    """Step a SyncVectorEnv of ``make()`` and its CartPoleBatch twin with the same actions; assert
    every output equal (values and dtypes, infos included); return the number of episode ends."""
    sync = make_member_envs(make, n_envs, batched=False)
    batch = batch_cartpoles([make() for _ in range(n_envs)])
    assert isinstance(sync, gym.vector.SyncVectorEnv) and isinstance(batch, CartPoleBatch)
    assert batch.single_observation_space == sync.single_observation_space
    assert batch.single_action_space == sync.single_action_space
    a, _ = sync.reset(seed=seeds)
    b, _ = batch.reset(seed=seeds)
    assert np.array_equal(a, b) and a.dtype == b.dtype
    rng = np.random.default_rng(0)
    ends = 0
    for t in range(steps):
        # Random actions, and stretches of one action (fast terminations, long balancing runs).
        actions = rng.integers(0, 2, n_envs) if t % 50 < 30 else np.full(n_envs, (t // 50) % 2)
        ours, theirs = batch.step(actions), sync.step(actions)
        for k in range(4):
            assert np.array_equal(ours[k], theirs[k]) and ours[k].dtype == theirs[k].dtype, (t, k)
        assert ours[4].keys() == theirs[4].keys(), t
        if theirs[4]:
            ends += 1
            assert np.array_equal(ours[4]["_final_obs"], theirs[4]["_final_obs"])
            assert np.array_equal(ours[4]["_final_info"], theirs[4]["_final_info"])
            for x, y in zip(ours[4]["final_obs"], theirs[4]["final_obs"], strict=True):
                assert (x is None and y is None) or np.array_equal(x, y)
    return ends


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"sutton_barto_reward": True}, {"max_episode_steps": 40}],
    ids=["default", "sutton_barto", "time_limit_40"],
)
def test_batch_equals_cartpole_envs_step_by_step(kwargs):
    ends = _run_side_by_side(lambda: gym.make("CartPole-v1", **kwargs), 5, 3000, [3, 1, 4, 1, 5])
    assert ends > 50  # many terminations (and truncations with the short limit) were compared


def test_batch_follows_changed_physics_and_the_semi_implicit_integrator():
    def make():
        env = gym.make("CartPole-v1")
        env.unwrapped.gravity = 11.5  # type: ignore[attr-defined]
        env.unwrapped.kinematics_integrator = "semi-implicit"  # type: ignore[attr-defined]
        return env

    batch = batch_cartpoles([make()])
    assert batch is not None and batch.gravity == 11.5
    assert _run_side_by_side(make, 3, 2000, [0, 1, 2]) > 20


def test_only_plain_cartpoles_are_batched():
    plain = gym.make("CartPole-v1")
    assert isinstance(batch_cartpoles([plain, gym.make("CartPole-v1")]), CartPoleBatch)
    assert isinstance(batch_cartpoles([make_env("CartPole-v1")]), CartPoleBatch)
    changed = gym.make("CartPole-v1")
    changed.unwrapped.masscart = 2.0  # type: ignore[attr-defined]
    not_batched = {
        "extra wrapper": [RecordEpisodeStatistics(gym.make("CartPole-v1"))],
        "render mode": [gym.make("CartPole-v1", render_mode="rgb_array")],
        "no time limit": [gym.make("CartPole-v1").unwrapped],
        "shifted": [make_env("rlplast/PermutedCartPole-v0")],
        "another env": [gym.make("Acrobot-v1")],
        "different physics": [plain, changed],
        "different limits": [plain, gym.make("CartPole-v1", max_episode_steps=100)],
        "none": [],
    }
    for what, envs in not_batched.items():
        assert batch_cartpoles(envs) is None, what


def test_bad_actions_and_step_before_reset_are_refused():
    batch = CartPoleBatch(3)
    with pytest.raises(gym.error.ResetNeeded):
        batch.step(np.zeros(3, dtype=np.int64))
    batch.reset(seed=0)
    for bad in (np.array([0, 2, 1]), np.array([0, -1, 1]), np.array([0.0, 1.0, 1.0]), np.array([0, 1])):
        with pytest.raises(ValueError, match="actions in"):
            batch.step(bad)
    with pytest.raises(ValueError, match="2 seeds for 3 envs"):
        batch.reset(seed=[1, 2])


def test_reset_seeds_as_sync_vector_env():
    """An int seed s seeds env i with s + i; later resets continue each env's own generator."""
    sync = make_member_envs("CartPole-v1", 4, batched=False)
    batch = make_member_envs("CartPole-v1", 4)
    assert isinstance(batch, CartPoleBatch)
    for seed in (7, None):
        a, _ = sync.reset(seed=seed)
        b, _ = batch.reset(seed=seed)
        assert np.array_equal(a, b)


def test_a_population_trains_the_same_on_the_batch_as_on_the_envs():
    """A CartPole-v1 population (stepped as a CartPoleBatch) and one whose envs carry an extra
    pass-through wrapper (stepped as a SyncVectorEnv) train to the same parameters and episodes."""
    settings = dict(
        policy_kwargs={"net_arch": [16]}, learning_starts=50, buffer_size=500, batch_size=16, device="cpu"
    )
    batched = Population("MlpPolicy", "CartPole-v1", [0, 1, 2], **settings)
    wrapped = Population(
        "MlpPolicy", lambda: RecordEpisodeStatistics(gym.make("CartPole-v1")), [0, 1, 2], **settings
    )
    assert isinstance(batched.envs, CartPoleBatch)
    assert isinstance(wrapped.envs, gym.vector.SyncVectorEnv)
    batched.learn(600)
    wrapped.learn(600)
    assert batched.tracker.episodes == wrapped.tracker.episodes and len(batched.tracker.episodes) > 20
    for a, b in zip(batched.net.params, wrapped.net.params, strict=True):
        assert torch.equal(a, b)
