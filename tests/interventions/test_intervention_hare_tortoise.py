"""Hare & Tortoise: the slow network is an EMA of the online one, which is reset to it at events."""

from __future__ import annotations

import pytest
import torch

from rlplast.errors import UserError
from rlplast.interventions import build_intervention


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_slow_network_is_the_ema_of_the_online_network(make_dqn):
    ht = build_intervention({"name": "hare_tortoise", "alpha": 0.25, "every_steps": 10_000})
    model = make_dqn([ht])
    # At setup the tortoise is the initial online network.
    assert all(torch.equal(s, p) for s, p in zip(ht.slow, model.q_net.parameters(), strict=True))
    model.learn(300)
    slow_before = [s.clone() for s in ht.slow]
    with torch.no_grad():
        for p in model.q_net.parameters():
            p.add_(1.0)
    fast = _params(model.q_net)
    ht.after_update(model.n_updates + 1, 301)  # no boundary: only the EMA step
    assert ht.fires == 0
    for s, s0, f in zip(ht.slow, slow_before, fast, strict=True):
        expected = (1 - 0.25) * s0.double() + 0.25 * f.double()  # θ_slow ← (1 − α)θ_slow + αθ_fast
        torch.testing.assert_close(s.double(), expected, rtol=0, atol=1e-6)
    # The hare is not touched between events.
    assert all(torch.equal(p, f) for p, f in zip(model.q_net.parameters(), fast, strict=True))


def test_training_updates_the_slow_network_after_every_update(make_dqn):
    ht = build_intervention({"name": "hare_tortoise", "alpha": 0.5, "every_steps": 10_000})
    model = make_dqn([ht])
    expected = [s.double() for s in ht.slow]

    def track(n_updates: int, num_timesteps: int) -> None:
        for i, p in enumerate(model.q_net.parameters()):
            expected[i] = 0.5 * expected[i] + 0.5 * p.detach().double()

    original = ht.after_update

    def after_update(n_updates: int, num_timesteps: int) -> None:
        track(n_updates, num_timesteps)
        original(n_updates, num_timesteps)

    ht.after_update = after_update  # type: ignore[method-assign]
    model.learn(300)
    assert model.n_updates == 50
    for s, e in zip(ht.slow, expected, strict=True):
        torch.testing.assert_close(s.double(), e, rtol=0, atol=1e-6)


@pytest.mark.parametrize("target", ["copy", "keep"])
def test_reset_copies_the_slow_network_into_the_online_one(make_dqn, target):
    ht = build_intervention({"name": "hare_tortoise", "alpha": 0.1, "target": target})
    model = make_dqn([ht])
    model.learn(300)
    optimizer = model.policy.optimizer
    assert len(optimizer.state) == 6
    target_before = _params(model.q_net_target)
    slow = [s.clone() for s in ht.slow]
    assert not all(torch.equal(p, s) for p, s in zip(model.q_net.parameters(), slow, strict=True))

    model.notify_task_switch(1)  # default when: task_switch

    assert ht.fires == 1
    online = _params(model.q_net)
    assert all(torch.equal(p, s) for p, s in zip(online, slow, strict=True))
    assert len(optimizer.state) == 0  # reset_optimizer: the online network's Adam state is cleared
    expected_target = online if target == "copy" else target_before
    assert all(torch.equal(a, b) for a, b in zip(_params(model.q_net_target), expected_target, strict=True))
    assert model.pop_train_stats()["intervention/hare_resets"] == 1.0
    model.learn(100, reset_num_timesteps=False)  # training goes on from the tortoise
    assert len(optimizer.state) == 6


def test_reset_can_keep_the_optimizer_state(make_dqn):
    ht = build_intervention({"name": "hare_tortoise", "reset_optimizer": False})
    model = make_dqn([ht])
    model.learn(300)
    steps = {id(p): s["step"].clone() for p, s in model.policy.optimizer.state.items()}
    model.notify_task_switch(1)
    assert {id(p): s["step"] for p, s in model.policy.optimizer.state.items()} == steps


def test_interval_resets_follow_the_shared_schedule(make_dqn):
    ht = build_intervention({"name": "hare_tortoise", "every_steps": 200})
    model = make_dqn([ht])
    model.learn(600)
    assert ht.fires == 3


@pytest.mark.parametrize("alpha", [0.0, 1.0, 1.5, -0.1])
def test_alpha_outside_zero_one_is_a_user_error(alpha):
    with pytest.raises(UserError, match=r"intervention 'hare_tortoise': alpha must be") as err:
        build_intervention({"name": "hare_tortoise", "alpha": alpha})
    assert "\n" not in str(err.value)


def test_bad_target_is_a_user_error():
    with pytest.raises(UserError, match="target must be one of copy, keep, got 'swap'"):
        build_intervention({"name": "hare_tortoise", "target": "swap"})
