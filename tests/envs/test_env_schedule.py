"""The task schedule: exact switch steps, cycle/hold, episode mode, state save/restore, bad input."""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from rlplast.envs import TaskSequenceWrapper, find_task_wrapper, task_rng
from rlplast.errors import UserError


class CounterEnv(gym.Env):
    """Observation = [steps in episode]; episodes end after ``episode_len`` steps."""

    def __init__(self, episode_len: int = 1_000_000) -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        self.episode_len = episode_len
        self.n = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.n = 0
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action: Any):
        self.n += 1
        return np.array([self.n], dtype=np.float32), 0.0, self.n >= self.episode_len, False, {}


class RecordTask(TaskSequenceWrapper):
    """Records every applied task and draws a per-task parameter."""

    def __init__(self, env: gym.Env, **schedule: Any) -> None:
        super().__init__(env, **schedule)
        self.applied: list[int] = []
        self.param = 0.0
        self._init_task()

    def apply_task(self, task: int) -> None:
        self.applied.append(task)
        self.param = float(task_rng(self.task_seed, task).random())


def run_steps(env: gym.Env, n: int) -> list[int]:
    """Step ``n`` times (resetting at episode ends); return the task_id of every step."""
    tasks = []
    for _ in range(n):
        _, _, terminated, truncated, info = env.step(0)
        tasks.append(info["task_id"])
        if terminated or truncated:
            env.reset()
    return tasks


def test_step_mode_switches_exactly_at_the_boundary_and_cycles():
    env = RecordTask(CounterEnv(), steps_per_task=100, n_tasks=3)
    _, info = env.reset(seed=0)
    assert info["task_id"] == 0
    tasks = run_steps(env, 700)
    # steps 0..99 (the first 100 calls) are task 0, the 101st call (step 100) is task 1, ...
    expected = [(t // 100) % 3 for t in range(700)]
    assert tasks == expected
    assert tasks[99] == 0 and tasks[100] == 1
    assert env.applied == [0, 1, 2, 0, 1, 2, 0]
    assert env.total_steps == 700


def test_step_mode_holds_the_last_task():
    env = RecordTask(CounterEnv(), steps_per_task=10, n_tasks=3, after_last="hold")
    env.reset(seed=0)
    assert run_steps(env, 60) == [min(t // 10, 2) for t in range(60)]
    assert env.applied == [0, 1, 2]


def test_clock_runs_over_episode_ends_and_reset_applies_a_due_switch():
    env = RecordTask(CounterEnv(episode_len=7), steps_per_task=10, n_tasks=4)
    env.reset(seed=0)
    assert run_steps(env, 40) == [t // 10 for t in range(40)]
    # an episode ending exactly at the boundary: the reset already returns the next task
    env = RecordTask(CounterEnv(episode_len=5), steps_per_task=10, n_tasks=4)
    env.reset(seed=0)
    run_steps(env, 9)
    _, _, terminated, _, info = env.step(0)  # 10th call: still task 0, ends the episode
    assert terminated and info["task_id"] == 0
    _, info = env.reset()
    assert info["task_id"] == 1


def test_episode_mode_switches_at_the_first_reset_after_the_boundary():
    env = RecordTask(CounterEnv(episode_len=7), steps_per_task=10, n_tasks=2, switch_at="episode")
    env.reset(seed=0)
    tasks = run_steps(env, 35)
    # episodes are steps 0-6, 7-13, 14-20, 21-27, 28-34; the clock enters block 1 (t=10) in
    # episode 2 and block 2 (t=20) in episode 3, so episode 3 runs task 1 and episodes 4-5 task 0.
    assert tasks == [0] * 14 + [1] * 7 + [0] * 14
    # run_steps resets after the last episode (t=35, block 3): task 1 again
    assert env.applied == [0, 1, 0, 1]


def test_episode_mode_marks_a_pending_switch():
    env = RecordTask(CounterEnv(), steps_per_task=10, n_tasks=3, switch_at="episode", after_last="hold")
    env.reset(seed=0)
    assert run_steps(env, 15) == [0] * 15
    state = env.schedule_state()
    assert state == {"step": 15, "task_id": 0, "block": 0, "pending": True}
    _, info = env.reset()
    assert info["task_id"] == 1 and not env.switch_pending


def test_schedule_state_round_trips_through_json():
    a = RecordTask(CounterEnv(episode_len=7), steps_per_task=10, n_tasks=5, seed=3)
    a.reset(seed=0)
    run_steps(a, 23)
    state = json.loads(json.dumps(a.schedule_state()))
    b = RecordTask(CounterEnv(episode_len=7), steps_per_task=10, n_tasks=5, seed=3)
    b.load_schedule_state(state)
    assert b.task_id == a.task_id == 2 and b.param == a.param
    b.reset(seed=0)
    a.reset(seed=0)
    assert run_steps(a, 30) == run_steps(b, 30)
    assert a.schedule_state() == b.schedule_state()


def test_task_parameters_are_a_function_of_seed_and_task():
    a = RecordTask(CounterEnv(), seed=7)
    b = RecordTask(CounterEnv(), seed=7)
    c = RecordTask(CounterEnv(), seed=8)
    for k in range(5):
        a.set_task(k)
        b.set_task(k)
        c.set_task(k)
        assert a.param == b.param
        if k:
            assert a.param != c.param


def test_set_task_applies_now_and_the_schedule_resumes_at_the_next_boundary():
    env = RecordTask(CounterEnv(), steps_per_task=10, n_tasks=4)
    env.reset(seed=0)
    run_steps(env, 3)
    env.set_task(3)
    assert env.task_id == 3
    assert run_steps(env, 10) == [3] * 7 + [1] * 3


def test_find_task_wrapper_sees_through_gym_make_wrappers():
    import rlplast.envs  # noqa: F401  (registers the ids)

    env = gym.make("rlplast/PermutedCartPole-v0")
    assert isinstance(find_task_wrapper(env), TaskSequenceWrapper)
    with pytest.raises(UserError):
        find_task_wrapper(gym.make("CartPole-v1"))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"steps_per_task": 0}, "steps_per_task"),
        ({"steps_per_task": -5}, "steps_per_task"),
        ({"steps_per_task": 1.5}, "steps_per_task"),
        ({"n_tasks": 0}, "n_tasks"),
        ({"switch_at": "never"}, "switch_at"),
        ({"after_last": "stop"}, "after_last"),
    ],
)
def test_bad_schedule_arguments_raise_user_error(kwargs, field):
    with pytest.raises(UserError, match=field) as err:
        RecordTask(CounterEnv(), **kwargs)
    assert "\n" not in str(err.value)


def test_bad_set_task_and_state_raise_user_error():
    env = RecordTask(CounterEnv(), n_tasks=3)
    with pytest.raises(UserError, match="task"):
        env.set_task(3)
    with pytest.raises(UserError, match="schedule state"):
        env.load_schedule_state({"step": 1})


# ---------------------------------------------------------------------------------- the lifecycle
class LogHooks(TaskSequenceWrapper):
    """No ``_init_task()`` call: the base class applies task 0 once construction is complete."""

    def __init__(self, env: gym.Env, **schedule: Any) -> None:
        super().__init__(env, **schedule)
        self.log: list[tuple[str, int]] = []  # set up after super().__init__: apply_task must wait

    def apply_task(self, task: int) -> None:
        self.log.append(("apply_task", task))

    def action(self, action: Any) -> Any:
        self.log.append(("action", self.task_id))
        return action

    def observation(self, observation: Any) -> Any:
        self.log.append(("observation", self.task_id))
        return observation + 100.0 * self.task_id

    def reward(self, reward: Any) -> float:
        self.log.append(("reward", self.task_id))
        return float(reward) + self.task_id


class LogHooksWithMore(LogHooks):
    def __init__(self, env: gym.Env, **schedule: Any) -> None:
        super().__init__(env, **schedule)
        self.extra = "set up before task 0 is applied"

    def apply_task(self, task: int) -> None:
        assert self.extra
        super().apply_task(task)


def test_task_0_is_applied_once_right_after_construction():
    env = LogHooks(CounterEnv(), steps_per_task=3, n_tasks=2)
    assert env.log == [("apply_task", 0)]
    assert LogHooksWithMore(CounterEnv()).log == [("apply_task", 0)]
    # the old private call still works and does not apply task 0 twice
    assert RecordTask(CounterEnv()).applied == [0]


def test_step_mode_hooks_of_a_step_all_run_under_the_task_it_reports():
    env = LogHooks(CounterEnv(), steps_per_task=2, n_tasks=3)
    env.reset(seed=0)
    env.log.clear()
    results = [env.step(0) for _ in range(3)]
    assert [info["task_id"] for *_, info in results] == [0, 0, 1]
    assert [r for _, r, *_ in results] == [0.0, 0.0, 1.0]
    assert [float(obs[0]) for obs, *_ in results] == [1.0, 2.0, 103.0]  # mid-episode switch
    step = [("action", 0), ("observation", 0), ("reward", 0)]
    assert env.log == [*step, *step, ("apply_task", 1), ("action", 1), ("observation", 1), ("reward", 1)]


def test_episode_mode_applies_the_switch_in_reset_before_its_observation():
    env = LogHooks(CounterEnv(episode_len=3), steps_per_task=2, n_tasks=2, switch_at="episode")
    env.reset(seed=0)
    results = [env.step(0) for _ in range(3)]
    assert [info["task_id"] for *_, info in results] == [0, 0, 0]  # the episode finishes in task 0
    assert [r for _, r, *_ in results] == [0.0, 0.0, 0.0]
    env.log.clear()
    obs, info = env.reset()
    assert info["task_id"] == 1 and float(obs[0]) == 100.0
    assert env.log == [("apply_task", 1), ("observation", 1)]
    _, reward, *_ = env.step(0)
    assert reward == 1.0


def test_the_default_hooks_change_nothing():
    env = RecordTask(CounterEnv(), steps_per_task=2, n_tasks=2)
    assert env.reward(3.5) == 3.5 and env.action(1) == 1
    obs = np.ones(1, dtype=np.float32)
    assert env.observation(obs) is obs
