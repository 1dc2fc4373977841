"""RunCallbacks: each step's infos read once, each child called only for the events it defines."""

from __future__ import annotations

import cProfile
import pstats
import sys
from types import SimpleNamespace

import pytest
from stable_baselines3.common.callbacks import BaseCallback

from rlplast.callbacks import (
    EpisodeLog,
    Progress,
    RunCallback,
    RunCallbacks,
    StepRecord,
    StopRequest,
)


class Spy(RunCallback):
    """Records every event it defines."""

    def __init__(self, log: list, name: str) -> None:
        super().__init__()
        self.log, self.name = log, name

    def on_task_switch(self, task_id):
        self.log.append((self.name, "switch", task_id))

    def on_episode_end(self, step, episode_return, length):
        self.log.append((self.name, "episode", step, episode_return, length))


class EveryStep(RunCallback):
    per_step = True

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[int] = []

    def _on_step(self) -> bool:
        self.steps.append(self.num_timesteps)
        return True


class StepNoop(RunCallback):
    per_step = True


class Passive(RunCallback):
    """Defines no event: never called while training."""


class PlainSB3(BaseCallback):
    """An ordinary SB3 callback: it gets SB3's locals and on_step on every step."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []
        self.rollouts = 0

    def _on_step(self) -> bool:
        self.seen.append(len(self.locals["infos"]))
        return self.num_timesteps < 4  # stops training at step 4

    def _on_rollout_start(self) -> None:
        self.rollouts += 1


def _drive(callbacks: RunCallbacks, infos_per_step: list[list[dict]]) -> list[bool]:
    """What SB3's collect_rollouts does around each env step."""
    model = SimpleNamespace(num_timesteps=0)
    callbacks.init_callback(model)  # type: ignore[arg-type]
    callbacks.on_training_start({}, {})
    callbacks.on_rollout_start()
    results = []
    for infos in infos_per_step:
        model.num_timesteps += 1
        callbacks.update_locals({"infos": infos})
        results.append(callbacks.on_step())
    callbacks.on_rollout_end()
    return results


def test_events_reach_only_the_children_that_define_them():
    log: list = []
    record = StepRecord()
    every, plain = EveryStep(), PlainSB3()
    callbacks = RunCallbacks([Spy(log, "a"), Passive(), every, plain, Spy(log, "b")], record)
    infos = [
        [{"task_id": 0}],
        [{"task_id": 0, "episode": {"r": 3.0, "l": 2}}],
        [{"task_id": 1}],
        [{"task_id": 1}],
        [{"task_id": 2, "episode": {"r": 5.0, "l": 3}}],
    ]
    results = _drive(callbacks, infos)
    # Not for the first task; each switch once; children in list order.
    assert log == [
        ("a", "episode", 2, 3.0, 2),
        ("b", "episode", 2, 3.0, 2),
        ("a", "switch", 1),
        ("b", "switch", 1),
        ("a", "switch", 2),
        ("b", "switch", 2),
        ("a", "episode", 5, 5.0, 3),
        ("b", "episode", 5, 5.0, 3),
    ]
    assert record.task_id == 2
    assert every.steps == [1, 2, 3, 4, 5]
    assert plain.seen == [1, 1, 1, 1, 1] and plain.rollouts == 1  # SB3's protocol, unchanged
    assert results == [True, True, True, False, False]  # a child's False stops training, as in SB3


def test_an_episode_ending_at_a_switch_belongs_to_the_new_task(tmp_path):
    record = StepRecord()
    episodes = EpisodeLog(tmp_path / "episodes.csv", window_size=10, record=record)
    callbacks = RunCallbacks([episodes], record)
    _drive(
        callbacks,
        [[{"task_id": 0, "episode": {"r": 1.0, "l": 1}}], [{"task_id": 4, "episode": {"r": 2.0, "l": 1}}]],
    )
    episodes.flush()
    lines = (tmp_path / "episodes.csv").read_text().splitlines()
    assert lines == ["step,episode_return,episode_length,task_id", "1,1.0,1,0", "2,2.0,1,4"]
    assert episodes.returns_per_task() == {"0": 1.0, "4": 2.0}


def _calls_per_step(children: list, steps: int = 200) -> float:
    record = StepRecord()
    callbacks = RunCallbacks(children, record)
    model = SimpleNamespace(num_timesteps=0)
    callbacks.init_callback(model)  # type: ignore[arg-type]
    callbacks.on_training_start({}, {})
    locals_ = {"infos": [{"task_id": 0, "TimeLimit.truncated": False}]}
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        model.num_timesteps += 1
        callbacks.update_locals(locals_)
        callbacks.on_step()
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = sum(v[1] for v in stats.stats.values())  # type: ignore[attr-defined]
    return (total - 1) / steps  # minus profiler.disable


def test_a_step_costs_the_same_calls_however_many_callbacks_there_are():
    few = _calls_per_step([StepNoop()])
    many = _calls_per_step([StepNoop(), *[Passive() for _ in range(6)], Spy([], "x")])
    # update_locals, on_step, _on_step, two dict.get, the per-step child's on_step and _on_step
    assert few == many == 7
    # The comparison can fail: every plain SB3 callback adds SB3's per-step calls.
    assert _calls_per_step([StepNoop(), PlainSB3()]) > few


def test_plastic_dqn_calls_on_iteration_end_on_nested_callbacks():
    from stable_baselines3.common.callbacks import CallbackList

    from rlplast.agents import PlasticDQN

    class Ends(BaseCallback):
        def __init__(self, stop_after: int | None = None) -> None:
            super().__init__()
            self.ends: list[int] = []
            self.stop_after = stop_after

        def _on_step(self) -> bool:
            return True

        def on_iteration_end(self):
            self.ends.append(self.model.num_timesteps)
            return None if self.stop_after is None else len(self.ends) < self.stop_after

    outer, inner = Ends(), Ends(stop_after=3)
    model = PlasticDQN("MlpPolicy", "CartPole-v1", seed=0, train_freq=4, learning_starts=10)
    model.learn(100, callback=CallbackList([outer, CallbackList([inner])]))
    assert inner.ends == [4, 8, 12]  # False after the third iteration stopped training there
    assert outer.ends == [4, 8, 12]  # None does not stop; every hook runs at every iteration end
    assert model.num_timesteps == 12


def test_progress_bar_keeps_its_total(monkeypatch):
    class Terminal:
        def __init__(self) -> None:
            self.text = ""

        def isatty(self) -> bool:
            return True

        def write(self, text: str) -> int:
            self.text += text
            return len(text)

        def flush(self) -> None:
            pass

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    progress = Progress(total_steps=1234)
    progress.init_callback(SimpleNamespace(num_timesteps=400))  # type: ignore[arg-type]
    progress.on_training_start({}, {})
    assert progress.bar.n == 400 and progress.bar.total == 1234  # a resumed run starts where it was
    progress.on_row(1236, 1200, {"rollout/ep_return_mean": None, "shift/task_id": 0})
    assert progress.bar.n == 1234 and progress.bar.total == 1234  # the last iteration ran past it
    progress.on_training_end()
    assert "1234/1234" in terminal.text


@pytest.mark.parametrize("reason", ["first", "second"])
def test_stop_request_keeps_the_first_reason(reason):
    stop = StopRequest()
    stop.request("first")
    stop.request(reason)
    assert stop.reason == "first"
