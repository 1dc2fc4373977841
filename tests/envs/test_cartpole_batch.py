"""CartPoleBatch steps S CartPoles as arrays, bitwise as S gym.make("CartPole-v1") (or S shifting
rlplast/ CartPoles) in a SyncVectorEnv."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.wrappers import RecordEpisodeStatistics

from rlplast.envs import PermuteObservation, make_env
from rlplast.envs.cartpole_batch import CartPoleBatch, batch_cartpoles
from rlplast.population import Population
from rlplast.population.envs import make_member_envs


def _infos_equal(ours: dict, theirs: dict, where: object) -> None:
    """Vector infos equal: the same keys, equal arrays (and dtypes), equal nested dicts and
    final observations."""
    assert ours.keys() == theirs.keys(), (where, ours.keys(), theirs.keys())
    for key, value in theirs.items():
        mine = ours[key]
        if isinstance(value, dict):
            _infos_equal(mine, value, (where, key))
        elif key == "final_obs":
            for x, y in zip(mine, value, strict=True):
                assert (x is None and y is None) or np.array_equal(x, y), (where, key)
        else:
            assert np.array_equal(mine, value) and mine.dtype == value.dtype, (where, key)


def _run_side_by_side(make, n_envs: int, steps: int, seeds: list[int], batch=None) -> int:
    """Step a SyncVectorEnv of ``make()`` and its CartPoleBatch twin (the population's, or ``batch``)
    with the same actions; assert every output equal (values and dtypes, infos included); return
    the number of episode ends."""
    sync = make_member_envs(make, n_envs, batched=False)
    batch = make_member_envs(make, n_envs) if batch is None else batch
    assert isinstance(sync, gym.vector.SyncVectorEnv) and isinstance(batch, CartPoleBatch)
    assert batch.single_observation_space == sync.single_observation_space
    assert batch.single_action_space == sync.single_action_space
    a, info_a = sync.reset(seed=seeds)
    b, info_b = batch.reset(seed=seeds)
    assert np.array_equal(a, b) and a.dtype == b.dtype
    _infos_equal(info_b, info_a, "reset")
    rng = np.random.default_rng(0)
    ends = 0
    for t in range(steps):
        # Random actions, and stretches of one action (fast terminations, long balancing runs).
        actions = rng.integers(0, 2, n_envs) if t % 50 < 30 else np.full(n_envs, (t // 50) % 2)
        ours, theirs = batch.step(actions), sync.step(actions)
        for k in range(4):
            assert np.array_equal(ours[k], theirs[k]) and ours[k].dtype == theirs[k].dtype, (t, k)
        _infos_equal(ours[4], theirs[4], t)
        ends += "final_obs" in theirs[4]
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
    assert batch is not None and list(batch.gravity) == [11.5]
    assert _run_side_by_side(make, 3, 2000, [0, 1, 2]) > 20


@pytest.mark.parametrize(
    "env_id, kwargs",
    [
        ("rlplast/PermutedCartPole-v0", {}),
        ("rlplast/ActionShuffledCartPole-v0", {}),
        ("rlplast/OffsetCartPole-v0", {}),
        ("rlplast/ShiftingCartPole-v0", {}),
        ("rlplast/PermutedCartPole-v0", {"switch_at": "episode", "after_last": "hold", "n_tasks": 4}),
    ],
    ids=["permuted", "action_shuffled", "offset", "dynamics", "episode_switch_hold"],
)
def test_batch_of_shifting_cartpoles_equals_their_envs(env_id, kwargs):
    """Each env's task wrapper runs around the array step: clocks, switches (every 37 steps here),
    transformations, physics per task and info["task_id"] as in S separate envs."""
    settings = {"steps_per_task": 37, "n_tasks": 6, "seed": 3, **kwargs}
    ends = _run_side_by_side(lambda: make_env(env_id, settings), 4, 2000, [8, 9, 10, 11])
    assert ends > 50


def test_which_envs_are_batched():
    plain = gym.make("CartPole-v1")
    changed = gym.make("CartPole-v1")
    changed.unwrapped.masscart = 2.0  # type: ignore[attr-defined]
    batched = {
        "plain": [plain, gym.make("CartPole-v1")],
        "made by rlplast": [make_env("CartPole-v1")],
        "physics per env": [plain, changed],
        "shifting": [make_env("rlplast/PermutedCartPole-v0"), make_env("rlplast/ShiftingCartPole-v0")],
    }
    for what, envs in batched.items():
        assert isinstance(batch_cartpoles(envs), CartPoleBatch), what
    batch = batch_cartpoles([plain, changed])
    assert batch is not None and list(batch.masscart) == [1.0, 2.0]
    not_batched = {
        "extra wrapper": [RecordEpisodeStatistics(gym.make("CartPole-v1"))],
        "render mode": [gym.make("CartPole-v1", render_mode="rgb_array")],
        "no time limit": [gym.make("CartPole-v1").unwrapped],
        "another env": [gym.make("Acrobot-v1")],
        "shifted Acrobot": [make_env("rlplast/PermutedAcrobot-v0")],
        "plain and shifting": [plain, make_env("rlplast/PermutedCartPole-v0")],
        "different limits": [plain, gym.make("CartPole-v1", max_episode_steps=100)],
        "wrapper over the task wrapper": [RecordEpisodeStatistics(make_env("rlplast/PermutedCartPole-v0"))],
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


@pytest.mark.parametrize("env_id", ["CartPole-v1", "rlplast/PermutedCartPole-v0"])
def test_a_population_trains_the_same_on_the_batch_as_on_the_envs(env_id):
    """A population stepped as a CartPoleBatch and one whose envs carry an extra pass-through
    wrapper (stepped as a SyncVectorEnv) train to the same parameters, episodes and task switches."""
    kwargs = {"steps_per_task": 150, "n_tasks": 3} if env_id.startswith("rlplast/") else {}
    settings = dict(
        policy_kwargs={"net_arch": [16]}, learning_starts=50, buffer_size=500, batch_size=16, device="cpu"
    )
    batched = Population("MlpPolicy", lambda: make_env(env_id, kwargs), [0, 1, 2], **settings)
    wrapped = Population(
        "MlpPolicy", lambda: RecordEpisodeStatistics(make_env(env_id, kwargs)), [0, 1, 2], **settings
    )
    assert isinstance(batched.envs, CartPoleBatch)
    assert isinstance(wrapped.envs, gym.vector.SyncVectorEnv)
    batched.learn(600)
    wrapped.learn(600)
    assert batched.tracker.episodes == wrapped.tracker.episodes and len(batched.tracker.episodes) > 20
    assert batched.tracker.switches == wrapped.tracker.switches
    if kwargs:
        assert len(batched.tracker.switches) == 3 * 3  # 600 steps: tasks 1, 2 and back to 0
    for a, b in zip(batched.net.params, wrapped.net.params, strict=True):
        assert torch.equal(a, b)


class _PermuteWithExtraInfo(PermuteObservation):
    """A task wrapper whose step reports one more info entry (the batch's generic info path)."""

    def finish_step(self, obs, reward, terminated, truncated, info):
        out = super().finish_step(obs, reward, terminated, truncated, info)
        out[4]["clock"] = float(self.total_steps)
        return out


def test_a_task_wrapper_of_the_users_batches_when_given_explicitly_and_its_infos_are_merged():
    """A user's task wrapper is not batched automatically (it might read the wrapped env's state,
    which a batch does not step); given to CartPoleBatch explicitly it is, and its own infos are
    merged as SyncVectorEnv merges them."""

    def make():
        return _PermuteWithExtraInfo(gym.make("CartPole-v1"), steps_per_task=29, n_tasks=3)

    assert batch_cartpoles([make()]) is None
    assert isinstance(make_member_envs(make, 2), gym.vector.SyncVectorEnv)
    first = make()
    batch = CartPoleBatch(
        3,
        tasks=[first, make(), make()],
        observation_space=first.observation_space,
        action_space=first.action_space,
    )
    assert _run_side_by_side(make, 3, 800, [0, 1, 2], batch=batch) > 20


class _OwnStep(PermuteObservation):
    def step(self, action):
        return super().step(action)


def test_a_task_wrapper_that_overrides_step_is_refused_by_the_batch():
    with pytest.raises(ValueError, match="_OwnStep overrides step"):
        CartPoleBatch(1, tasks=[_OwnStep(gym.make("CartPole-v1"))])
