"""Every registered ``rlplast/`` id passes Gymnasium's checker; make_env, list_envs and extensions."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import rlplast.envs
from rlplast.envs import ENVS, find_task_wrapper, format_env_table, list_envs, make_env
from rlplast.errors import UserError

HAS_MINATAR = importlib.util.find_spec("minatar") is not None
#: Optional extra -> whether it is installed (an id that needs a missing one is skipped).
INSTALLED = {"minatar": HAS_MINATAR, "box2d": importlib.util.find_spec("Box2D") is not None}
NEEDS = {e.id: e.needs for e in ENVS}
# Warnings check_env gives for every wrapped env, and for CartPole's own infinite velocity bounds.
EXPECTED_WARNINGS = ("is different from the unwrapped version", "infinity. This is probably too")


def registered_ids() -> list:
    params = []
    for env_id in sorted(i for i in gym.registry if i.startswith("rlplast/")):
        marks = []
        need = NEEDS.get(env_id)
        if need is not None and not INSTALLED.get(need, True):
            marks.append(pytest.mark.skip(reason=f"{need} is not installed"))
        params.append(pytest.param(env_id, marks=marks))
    return params


@pytest.mark.parametrize("env_id", registered_ids())
def test_every_registered_env_passes_check_env(env_id):
    env = gym.make(env_id, disable_env_checker=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=True)
    unexpected = [str(w.message) for w in caught if not any(e in str(w.message) for e in EXPECTED_WARNINGS)]
    assert not unexpected


@pytest.mark.parametrize("env_id", registered_ids())
def test_every_registered_env_stays_in_its_spaces_across_task_switches(env_id):
    env = gym.make(env_id, steps_per_task=5, n_tasks=3, seed=1)
    env.action_space.seed(0)
    obs, info = env.reset(seed=0)
    seen = {info["task_id"]}
    for _ in range(2_000):  # MinAtar switches only between episodes, which can be long
        if len(seen) == 3:
            break
        assert obs in env.observation_space
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert np.isscalar(reward) or np.ndim(reward) == 0
        seen.add(info["task_id"])
        if terminated or truncated:
            obs, info = env.reset()
            seen.add(info["task_id"])
    assert seen == {0, 1, 2}
    assert find_task_wrapper(env).n_tasks == 3


def test_the_required_ids_are_registered_with_schedule_defaults():
    rows = {row["id"]: row for row in list_envs()}
    for env_id in (
        "rlplast/PermutedCartPole-v0",
        "rlplast/ActionShuffledCartPole-v0",
        "rlplast/OffsetCartPole-v0",
        "rlplast/ShiftingCartPole-v0",
        "rlplast/ShiftingAcrobot-v0",
        "rlplast/MinAtarSequence-v0",
        "rlplast/PermutedAcrobot-v0",
    ):
        row = rows[env_id]
        assert row["description"]
        assert {"steps_per_task", "n_tasks", "seed", "switch_at", "after_last"} <= set(row["kwargs"])
    assert rows["rlplast/PermutedCartPole-v0"]["kwargs"]["steps_per_task"] == 20_000
    text = format_env_table()
    assert all(env_id in text for env_id in rows)


def test_make_env_passes_kwargs_and_rejects_bad_input():
    env = make_env("rlplast/OffsetCartPole-v0", {"steps_per_task": 7, "sigma": 1.0})
    wrapper = find_task_wrapper(env)
    assert wrapper.steps_per_task == 7 and wrapper.sigma == 1.0
    assert make_env("CartPole-v1", None).spec.id == "CartPole-v1"
    with pytest.raises(UserError, match="rlplast/PermutedCartPole-v0") as err:
        make_env("rlplast/PermutedCartpole-v0", {})
    assert "did you mean" in str(err.value) and "Gymnasium" in str(err.value)
    assert "under plugins in the config, or name it in env.import" in str(err.value)
    with pytest.raises(UserError, match="bad kwargs") as err:
        make_env("rlplast/PermutedCartPole-v0", {"no_such_arg": 1})
    assert str(err.value).startswith(
        "bad kwargs for env 'rlplast/PermutedCartPole-v0': unknown kwarg 'no_such_arg'"
    )
    assert str(err.value).endswith(
        "valid: steps_per_task, n_tasks, seed, switch_at, after_last, render_mode, max_episode_steps"
    )
    with pytest.raises(UserError, match="steps_per_task"):
        make_env("rlplast/PermutedCartPole-v0", {"steps_per_task": 0})
    with pytest.raises(UserError, match="no_such_module_xyz"):
        make_env("rlplast/PermutedCartPole-v0", {}, import_module="no_such_module_xyz")


@pytest.mark.parametrize(
    ("env_id", "kwargs", "expect"),
    [
        ("rlplast/OffsetCartPole-v0", {"sigm": 1.0}, "unknown kwarg 'sigm' (did you mean 'sigma'?)"),
        ("rlplast/ShiftingCartPole-v0", {"range": {}}, "unknown kwarg 'range' (did you mean 'ranges'?)"),
        ("CartPole-v1", {"foo": 1}, "valid: sutton_barto_reward, render_mode, max_episode_steps"),
    ],
)
def test_a_kwarg_typo_names_the_env_and_what_it_takes(env_id, kwargs, expect):
    with pytest.raises(UserError) as err:
        make_env(env_id, kwargs)
    message = str(err.value)
    assert message.startswith(f"bad kwargs for env '{env_id}': ") and expect in message
    assert "__init__" not in message and "Wrapper" not in message


class _RaisesInItsConstructor(gym.Env):
    def __init__(self, level: int = 0) -> None:
        if level < 0:
            raise ValueError(f"level must be >= 0, got {level}")
        raise RuntimeError("")


class _NeedsALevel(gym.Env):
    def __init__(self, level: int) -> None:
        raise AssertionError("not reached")


def test_any_exception_of_the_constructor_is_one_line_naming_the_env(monkeypatch):
    for env_id, entry in (("test/Raises-v0", _RaisesInItsConstructor), ("test/NeedsALevel-v0", _NeedsALevel)):
        monkeypatch.setitem(gym.registry, env_id, gym.envs.registration.EnvSpec(env_id, entry_point=entry))
    with pytest.raises(UserError) as err:
        make_env("test/Raises-v0", {"level": -1})
    assert str(err.value).startswith(
        "env 'test/Raises-v0' raised ValueError in its constructor: level must be >= 0, got -1 ("
    )
    assert "test_env_registry.py:" in str(err.value)
    with pytest.raises(UserError, match=r"^env 'test/Raises-v0' raised RuntimeError in its constructor: \("):
        make_env("test/Raises-v0", {})
    with pytest.raises(UserError) as err:
        make_env("test/NeedsALevel-v0", {})
    assert str(err.value) == (
        "bad kwargs for env 'test/NeedsALevel-v0': missing 1 required positional argument: 'level'; "
        "valid: level, max_episode_steps"
    )


class _NeedsMissingPackage(gym.Env):
    def __init__(self) -> None:
        raise gym.error.DependencyNotInstalled("Box2D is not installed, pip install 'gymnasium[box2d]'")


def test_make_env_reports_a_missing_dependency(monkeypatch):
    monkeypatch.setitem(
        gym.registry,
        "test/NeedsBox2D-v0",
        gym.envs.registration.EnvSpec("test/NeedsBox2D-v0", entry_point=_NeedsMissingPackage),
    )
    with pytest.raises(
        UserError, match=r"env 'test/NeedsBox2D-v0' needs a package that is not installed: Box2D"
    ):
        make_env("test/NeedsBox2D-v0", {})


EXTENSION = '''
    """A user's shift, one file: a wrapper subclass and one register call."""
    import gymnasium as gym
    import numpy as np

    from rlplast.envs import TaskSequenceWrapper, task_rng


    class ScaleObservation(TaskSequenceWrapper):
        def __init__(self, env, **schedule):
            super().__init__(env, **schedule)
            self.scale = 1.0
            self._init_task()

        def apply_task(self, task):
            self.scale = 1.0 if task == 0 else float(task_rng(self.task_seed, task).uniform(0.5, 2.0))

        def observation(self, observation):
            return (observation * self.scale).astype(np.float32)


    def make(steps_per_task=100, n_tasks=2, seed=0):
        return ScaleObservation(gym.make("Acrobot-v1"), steps_per_task=steps_per_task, n_tasks=n_tasks,
                                seed=seed)


    gym.register(id="mypkg/ScaledAcrobot-v0", entry_point=make)
'''


def test_an_extension_outside_the_package_is_loaded_by_make_env(tmp_path, monkeypatch):
    (tmp_path / "mypkg_envs.py").write_text(textwrap.dedent(EXTENSION))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mypkg_envs", raising=False)
    try:
        env = make_env("mypkg/ScaledAcrobot-v0", {"steps_per_task": 3}, import_module="mypkg_envs")
        wrapper = find_task_wrapper(env)
        assert type(wrapper).__name__ == "ScaleObservation" and wrapper.steps_per_task == 3
        _, info = env.reset(seed=0)
        for _ in range(3):
            env.step(0)
        *_, info = env.step(0)
        assert info["task_id"] == 1 and wrapper.scale != 1.0
        assert find_task_wrapper(make_env("mypkg_envs:mypkg/ScaledAcrobot-v0", {})).steps_per_task == 100
    finally:
        gym.registry.pop("mypkg/ScaledAcrobot-v0", None)


def test_importing_the_package_registers_idempotently():
    before = set(gym.registry)
    rlplast.envs.register_envs()
    assert set(gym.registry) == before
