"""from_scratch: a fresh agent at every task switch (network, optimizer, replay buffer, schedules)."""

from __future__ import annotations

import cloudpickle
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback

from rlplast.interventions import build_intervention


class Trace(BaseCallback):
    """Records, per env step, the exploration rate the next action uses and the update count."""

    def __init__(self) -> None:
        super().__init__()
        self.eps: dict[int, float] = {}
        self.updates: dict[int, int] = {}

    def _on_step(self) -> bool:
        self.eps[self.num_timesteps] = float(self.model.exploration_rate)
        self.updates[self.num_timesteps] = int(self.model.n_updates)
        return True


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def test_fire_starts_a_fresh_agent(make_dqn):
    fresh = build_intervention({"name": "from_scratch"})
    assert fresh.when == "task_switch"
    model = make_dqn([fresh], learning_starts=100)
    model.learn(400)
    policy = model.policy
    before = _snapshot(policy.q_net)
    assert model.replay_size() == 400 and len(policy.optimizer.state) == 6

    fresh.on_task_switch(1, model.num_timesteps)

    assert fresh.fires == 1 and fresh.log_values() == {"intervention/fresh_starts": 1.0}
    after = dict(policy.q_net.named_parameters())
    target = dict(policy.q_net_target.named_parameters())
    for name, param in after.items():
        assert not torch.equal(param, before[name]), name
        assert torch.equal(target[name], param), name
    assert len(policy.optimizer.state) == 0
    assert model.replay_size() == 0
    assert model.schedule_start == 400 and model.learning_starts == 500


def test_exploration_and_warm_up_restart_at_the_switch(make_dqn):
    fresh = build_intervention({"name": "from_scratch"})
    model = make_dqn([fresh], learning_starts=100, train_freq=1, exploration_fraction=0.5)
    model.schedule_timesteps = 300  # the schedules span 300 steps in both learn calls
    trace = Trace()
    model.learn(300, callback=trace)
    fresh.on_task_switch(1, model.num_timesteps)  # between two learn calls: at step 300
    model.learn(300, reset_num_timesteps=False, callback=trace)
    # The second task's schedule is the first task's, 300 steps later. (A callback sees the rate
    # computed after the previous step, so the first step of each learn call is left out.)
    for d in range(2, 300):
        assert trace.eps[300 + d] == trace.eps[d], d
    assert trace.eps[302] > 0.9 and trace.eps[300] == pytest.approx(0.05)
    # no update during the new warm-up, updates again afterwards
    # (a callback sees the updates of the iterations before its step)
    assert trace.updates[401] == trace.updates[301] and trace.updates[402] == trace.updates[301] + 1
    assert model.replay_size() == 300


def test_clear_replay_and_restart_schedules_are_public_and_pickled(make_dqn):
    model = make_dqn([], learning_starts=50)
    model.learn(200)
    model.clear_replay()
    assert model.replay_size() == 0
    model.restart_schedules()
    assert (model.schedule_start, model.learning_starts) == (200, 250)
    model.learn(100, reset_num_timesteps=False)
    model.restart_schedules()  # the warm-up keeps its length: 50 steps after the new start
    assert (model.schedule_start, model.learning_starts) == (300, 350)
    restored = cloudpickle.loads(cloudpickle.dumps(model))
    assert (restored.schedule_start, restored.learning_starts) == (300, 350)


def test_without_a_restart_the_progress_is_sb3s(make_dqn):
    model = make_dqn([])
    assert model.schedule_start == 0
    model._total_timesteps = 1000
    model._update_current_progress_remaining(250, 1000)
    assert model._current_progress_remaining == 0.75
