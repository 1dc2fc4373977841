"""Last-layer reset and full reset: exactly the chosen parameters and optimizer state change."""

from __future__ import annotations

import pytest
import torch

from rlplast.errors import UserError
from rlplast.interventions import build_intervention


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def _opt_snapshot(optimizer: torch.optim.Optimizer) -> dict[int, dict[str, torch.Tensor]]:
    return {id(p): {k: v.clone() for k, v in s.items()} for p, s in optimizer.state.items()}


@pytest.mark.parametrize("n_layers", [1, 2])
def test_reset_last_layers_touches_exactly_the_chosen_layers(make_dqn, n_layers):
    reset = build_intervention({"name": "reset_last_layers", "n_layers": n_layers})
    model = make_dqn([reset])
    model.learn(300)
    policy = model.policy
    assert len(policy.optimizer.state) == 6  # Adam state exists for every parameter
    online_before = _snapshot(policy.q_net)
    target_before = _snapshot(policy.q_net_target)
    opt_before = _opt_snapshot(policy.optimizer)
    buffer_pos, buffer_obs = model.replay_buffer.pos, model.replay_buffer.observations.copy()

    reset.fire()

    linear_names = ["q_net.0", "q_net.2", "q_net.4"]
    chosen = linear_names[-n_layers:]
    assert reset.layer_names == chosen
    params = dict(policy.q_net.named_parameters())
    target = dict(policy.q_net_target.named_parameters())
    for name, param in params.items():
        is_chosen = name.rsplit(".", 1)[0] in chosen
        if is_chosen:
            assert not torch.equal(param, online_before[name]), name
            assert torch.equal(target[name], param), name
            assert param not in policy.optimizer.state, name
        else:
            assert torch.equal(param, online_before[name]), name
            assert torch.equal(target[name], target_before[name]), name
            state = policy.optimizer.state[param]
            assert state.keys() == opt_before[id(param)].keys()
            for key, value in state.items():
                assert torch.equal(value, opt_before[id(param)][key]), (name, key)
    assert model.replay_buffer.pos == buffer_pos
    assert (model.replay_buffer.observations == buffer_obs).all()
    # Training goes on: Adam recreates the state of the reset parameters.
    model.learn(100, reset_num_timesteps=False)
    assert len(policy.optimizer.state) == 6


def test_reset_last_layers_uses_the_layer_initialiser_bounds(make_dqn):
    reset = build_intervention({"name": "reset_last_layers"})
    model = make_dqn([reset])
    last = model.policy.q_net.q_net[-1]
    with torch.no_grad():
        last.weight.fill_(10.0)
    reset.fire()
    bound = 1.0 / last.in_features**0.5  # nn.Linear's default (Kaiming-uniform, a=√5) bound
    assert last.weight.abs().max() <= bound


def test_interval_fires_at_first_update_at_or_after_each_boundary(make_dqn):
    reset = build_intervention({"name": "reset_last_layers", "every_steps": 100})
    make_dqn([reset])
    reset.after_update(1, 99)
    assert reset.fires == 0
    reset.after_update(2, 103)
    assert (reset.fires, reset.last_fired_step) == (1, 103)
    reset.after_update(3, 150)
    assert reset.fires == 1
    reset.after_update(4, 450)  # several boundaries passed: fires once
    assert reset.fires == 2
    reset.on_task_switch(1, 460)  # when=interval ignores task switches
    assert reset.fires == 2


def test_interval_reset_during_training(make_dqn):
    reset = build_intervention({"name": "reset_last_layers", "every_steps": 200})
    model = make_dqn([reset])
    model.learn(600)
    assert reset.fires == 3
    assert model.pop_train_stats()["intervention/resets"] == 3.0


def test_task_switch_reset_fires_once_per_switch(make_dqn):
    reset = build_intervention({"name": "reset_last_layers"})
    assert reset.when == "task_switch"
    model = make_dqn([reset])
    model.learn(200)
    assert reset.fires == 0  # no interval firing by default
    model.notify_task_switch(1)
    model.notify_task_switch(1)  # the same switch reported twice
    assert reset.fires == 1
    model.notify_task_switch(2)
    assert reset.fires == 2
    assert reset.last_fired_step == model.num_timesteps


def test_n_layers_larger_than_the_network_is_a_user_error(make_dqn):
    reset = build_intervention({"name": "reset_last_layers", "n_layers": 4})
    with pytest.raises(UserError, match="only 3 linear layers"):
        make_dqn([reset])


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"n_layers": 0}, "n_layers must be >= 1"),
        ({"every_steps": 0}, "every_steps must be > 0"),
        ({"when": "sometimes"}, "interval, task_switch, both"),
        ({"when": "interval"}, "needs every_steps"),
        ({"when": "task_switch", "every_steps": 10}, "every_steps is only used"),
    ],
)
def test_schedule_validation(params, match):
    for name in ("reset_last_layers", "full_reset"):
        if name == "full_reset" and "n_layers" in params:
            continue
        with pytest.raises(UserError, match=match):
            build_intervention({"name": name, **params})


def test_full_reset_reinitialises_everything_and_clears_the_optimizer(make_dqn):
    reset = build_intervention({"name": "full_reset", "every_steps": 10_000, "when": "both"})
    model = make_dqn([reset])
    model.learn(300)
    policy = model.policy
    before = _snapshot(policy.q_net)
    buffer_pos, buffer_obs = model.replay_buffer.pos, model.replay_buffer.observations.copy()
    assert policy.optimizer.state
    model.notify_task_switch(1)
    assert reset.fires == 1
    for name, param in policy.q_net.named_parameters():
        assert not torch.equal(param, before[name]), name
    for p_online, p_target in zip(policy.q_net.parameters(), policy.q_net_target.parameters(), strict=True):
        assert torch.equal(p_online, p_target)
    assert len(policy.optimizer.state) == 0
    # The optimizer still holds the very same parameter tensors (in-place reset).
    opt_params = {id(p) for group in policy.optimizer.param_groups for p in group["params"]}
    assert opt_params == {id(p) for p in policy.q_net.parameters()}
    assert model.replay_buffer.pos == buffer_pos
    assert (model.replay_buffer.observations == buffer_obs).all()


def test_when_both_fires_once_per_event_where_interval_and_switch_meet():
    """every_steps == steps_per_task: the interval fires at the update on the boundary step and the
    switch arrives one step later with nothing learned in between: one firing, not two."""
    from dataclasses import dataclass

    from rlplast.interventions._schedule import ScheduledIntervention

    @dataclass
    class Counter(ScheduledIntervention):
        def fire(self) -> None:
            pass

    both = Counter(every_steps=200, when="both")
    both.on_task_switch(0, 0)  # the first notification (task 0) fires, as for task_switch
    assert both.fires == 1
    for step in range(4, 801, 4):  # an update every 4 env steps
        both.after_update(step // 4, step)
        if step % 200 == 0:
            both.on_task_switch(step // 200, step + 1)
    assert both.fires == 1 + 4  # steps 200, 400, 600, 800: once each
    # A switch in the middle of an interval still fires, and counts for that boundary.
    mid = Counter(every_steps=200, when="both")
    mid.on_task_switch(0, 0)
    for step in range(4, 401, 4):
        mid.after_update(step // 4, step)
        if step == 300:
            mid.on_task_switch(1, step + 1)
    assert mid.fires == 1 + 3  # interval at 200, switch at 301, interval at 400
