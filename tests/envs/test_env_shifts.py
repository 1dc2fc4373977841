"""Each shift: task 0 is the identity, later tasks change what the agent sees or does."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from rlplast.envs import ChangeDynamics, OffsetObservation, PermuteActions, PermuteObservation
from rlplast.errors import UserError

OBS_SHIFTS = [PermuteObservation, OffsetObservation]


class RecordAction(gym.Wrapper):
    """Remembers the action the wrapped env received."""

    def step(self, action: Any):
        self.last_action = int(action)
        return self.env.step(action)


def rollout(env: gym.Env, actions: list[int], seed: int) -> list[np.ndarray]:
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for a in actions:
        obs, *_ = env.step(a)
        out.append(obs)
    return out


@pytest.mark.parametrize("shift", OBS_SHIFTS)
@pytest.mark.parametrize("base", ["CartPole-v1", "Acrobot-v1"])
def test_task_zero_of_an_observation_shift_is_the_identity(shift, base):
    actions = [0, 1, 1, 0, 1, 0, 0, 1]
    raw = rollout(gym.make(base), actions, seed=5)
    shifted = rollout(shift(gym.make(base), steps_per_task=1000), actions, seed=5)
    for r, s in zip(raw, shifted, strict=True):
        np.testing.assert_array_equal(r, s)


@pytest.mark.parametrize("shift", OBS_SHIFTS)
def test_observation_shifts_change_what_the_agent_sees(shift):
    env = shift(gym.make("Acrobot-v1"), n_tasks=3, seed=1)
    raw, _ = gym.make("Acrobot-v1").reset(seed=2)
    seen = []
    for k in (1, 2):
        env.set_task(k)
        obs, _ = env.reset(seed=2)  # the same underlying state
        assert obs in env.observation_space
        seen.append(obs)
    assert not np.allclose(seen[0], raw)
    assert not np.allclose(seen[1], raw)
    assert not np.allclose(seen[0], seen[1])


def test_permute_observation_keeps_the_values_and_widens_the_bounds():
    env = PermuteObservation(gym.make("CartPole-v1"), n_tasks=3)
    raw, _ = gym.make("CartPole-v1").reset(seed=0)
    env.set_task(1)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(np.sort(obs), np.sort(raw))
    np.testing.assert_array_equal(obs, raw[env.permutation])
    assert not np.array_equal(env.permutation, np.arange(4))
    assert np.all(env.observation_space.low == -np.inf)


def test_offset_observation_draws_gaussian_offsets_inside_the_space():
    env = OffsetObservation(gym.make("Acrobot-v1"), sigma=2.0, n_tasks=10, seed=0)
    offsets = []
    for k in range(10):
        env.set_task(k)
        offsets.append(env.offset)
        obs, _ = env.reset(seed=k)
        assert obs in env.observation_space
    assert np.all(offsets[0] == 0)
    spread = np.std(np.stack(offsets[1:]))
    assert 1.0 < spread < 3.5  # sigma = 2


def test_offset_observation_rejects_bad_sigma():
    with pytest.raises(UserError, match="sigma"):
        OffsetObservation(gym.make("CartPole-v1"), sigma=-1.0)


def test_permute_actions_task_zero_is_the_identity_and_later_tasks_remap():
    env = PermuteActions(RecordAction(gym.make("Acrobot-v1")), n_tasks=10, seed=0)
    env.reset(seed=0)
    inner = env.env
    for a in range(3):
        env.step(a)
        assert inner.last_action == a
    seq = [(0, 1, 2)]
    for k in range(1, 10):
        env.set_task(k)
        received = []
        for a in range(3):
            env.step(a)
            received.append(inner.last_action)
        assert sorted(received) == [0, 1, 2] and tuple(received) != seq[-1]  # every switch remaps
        seq.append(tuple(received))
    assert len(set(seq[:6])) == 6  # all 3! labelings are used before any repeats


@pytest.mark.parametrize("env_id", ["rlplast/PermutedCartPole-v0", "rlplast/ActionShuffledCartPole-v0"])
@pytest.mark.parametrize("seed", range(5))
def test_every_switch_changes_the_permutation(env_id, seed):
    """Tasks never repeat while unused permutations remain, and never repeat back to back (CartPole
    has only 4! observation orders and 2 action labelings, so independent draws collide)."""
    from rlplast.envs import find_task_wrapper

    n_tasks = 30
    env = find_task_wrapper(gym.make(env_id, n_tasks=n_tasks, seed=seed))
    seq = []
    for k in range(n_tasks):
        env.set_task(k)
        seq.append(tuple(int(i) for i in env.permutation))
    n = len(seq[0])
    total = math.factorial(n)
    assert seq[0] == tuple(range(n))
    assert len(set(seq[:total])) == total  # the first n! tasks are all different
    assert all(a != b for a, b in zip(seq[:-1], seq[1:], strict=True))
    again = find_task_wrapper(gym.make(env_id, n_tasks=n_tasks, seed=seed))
    for k in reversed(range(n_tasks)):  # a pure function of (seed, k), in any order
        again.set_task(k)
        assert tuple(int(i) for i in again.permutation) == seq[k]


def test_schedule_seed_is_checked_when_the_env_is_built():
    from rlplast.errors import UserError

    with pytest.raises(UserError, match=r"seed .* >= 0"):
        PermuteActions(gym.make("Acrobot-v1"), n_tasks=3, seed=-1)
    with pytest.raises(UserError, match=r"seed .* >= 0"):
        gym.make("rlplast/PermutedCartPole-v0", seed=1.5)


def test_permute_actions_respects_the_action_space_start():
    class StartAtOne(gym.Env):
        observation_space = spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
        action_space = spaces.Discrete(3, start=1)

    env = PermuteActions(StartAtOne(), n_tasks=2, seed=0)
    assert env.action_space == spaces.Discrete(3, start=1)
    assert [int(env.action(a)) for a in (1, 2, 3)] == [1, 2, 3]
    env.set_task(1)
    mapped = [int(env.action(a)) for a in (1, 2, 3)]
    assert sorted(mapped) == [1, 2, 3] and mapped != [1, 2, 3]


def test_permute_actions_needs_a_discrete_action_space():
    with pytest.raises(UserError, match=r"PermuteActions needs a Discrete action space, got Box"):
        PermuteActions(gym.make("Pendulum-v1"))


def test_observation_shifts_need_a_box():
    with pytest.raises(UserError, match="Box"):
        PermuteObservation(gym.make("FrozenLake-v1"))


def test_shift_parameters_agree_across_instances_and_differ_across_seeds():
    a = PermuteObservation(gym.make("Acrobot-v1"), seed=4)
    b = PermuteObservation(gym.make("Acrobot-v1"), seed=4)
    c = OffsetObservation(gym.make("Acrobot-v1"), seed=4)
    d = OffsetObservation(gym.make("Acrobot-v1"), seed=4)
    e = OffsetObservation(gym.make("Acrobot-v1"), seed=5)
    for k in range(1, 5):
        for env in (a, b, c, d, e):
            env.set_task(k)
        np.testing.assert_array_equal(a.permutation, b.permutation)
        np.testing.assert_array_equal(c.offset, d.offset)
        assert not np.array_equal(c.offset, e.offset)


def test_change_dynamics_cartpole_changes_and_recomputes_physics():
    env = ChangeDynamics(gym.make("CartPole-v1"), n_tasks=3, seed=0)
    base = env.unwrapped
    assert env.params == {"gravity": 9.8, "length": 0.5, "masscart": 1.0, "force_mag": 10.0}
    env.set_task(1)
    p1 = dict(env.params)
    for name, (lo, hi) in env.ranges.items():
        assert lo <= p1[name] <= hi and getattr(base, name) == p1[name]
        assert p1[name] != env.defaults[name]
    assert base.total_mass == pytest.approx(base.masspole + p1["masscart"])
    assert base.polemass_length == pytest.approx(base.masspole * p1["length"])
    env.set_task(2)
    assert env.params != p1
    env.set_task(0)
    assert base.gravity == 9.8 and base.polemass_length == pytest.approx(0.05)


def test_change_dynamics_changes_the_trajectory():
    actions = [1] * 8
    env = ChangeDynamics(gym.make("CartPole-v1"), n_tasks=2, seed=0)
    default = rollout(env, actions, seed=3)
    env.set_task(1)
    shifted = rollout(env, actions, seed=3)
    np.testing.assert_array_equal(default[0], shifted[0])
    assert not np.allclose(default[-1], shifted[-1])


def test_change_dynamics_acrobot_and_custom_ranges():
    env = ChangeDynamics(gym.make("Acrobot-v1"), ranges={"LINK_MASS_1": (3.0, 3.0)}, seed=0)
    env.set_task(1)
    base = env.unwrapped
    assert base.LINK_MASS_1 == 3.0
    assert pytest.approx(0.5 * base.LINK_LENGTH_2) == base.LINK_COM_POS_2
    env.set_task(0)
    assert base.LINK_MASS_1 == 1.0 and base.LINK_COM_POS_1 == 0.5


def test_change_dynamics_rejects_unsupported_envs_and_unknown_ranges():
    with pytest.raises(UserError, match="ChangeDynamics supports CartPoleEnv, AcrobotEnv; got PendulumEnv"):
        ChangeDynamics(gym.make("Pendulum-v1"))
    with pytest.raises(UserError, match="gravty"):
        ChangeDynamics(gym.make("CartPole-v1"), ranges={"gravty": (1.0, 2.0)})


def test_a_restored_schedule_reproduces_the_shift_parameters():
    import json

    import rlplast.envs  # noqa: F401  (registers the ids)
    from rlplast.envs import find_task_wrapper

    a = gym.make("rlplast/OffsetCartPole-v0", steps_per_task=4, n_tasks=5, seed=9)
    a.reset(seed=0)
    for _ in range(9):
        a.step(0)
    state = json.loads(json.dumps(find_task_wrapper(a).schedule_state()))
    b = gym.make("rlplast/OffsetCartPole-v0", steps_per_task=4, n_tasks=5, seed=9)
    wb = find_task_wrapper(b)
    wb.load_schedule_state(state)
    wa = find_task_wrapper(a)
    assert wb.task_id == wa.task_id == 2
    np.testing.assert_array_equal(wa.offset, wb.offset)
    assert wa.observation_space == wb.observation_space
