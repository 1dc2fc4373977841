"""Plasticity injection: outputs unchanged at an injection, only the new head trains, repeats compose."""

from __future__ import annotations

import io
import types

import cloudpickle
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from rlplast.errors import UserError
from rlplast.interventions import build_intervention, output_layer
from rlplast.interventions.plasticity_injection import InjectedHead


def _obs(model, n: int = 200) -> torch.Tensor:
    return torch.as_tensor(model.replay_buffer.observations[:n, 0])


def _head(model) -> InjectedHead:
    head = model.q_net.q_net[-1]
    assert isinstance(head, InjectedHead)
    return head


def _buffers(head: InjectedHead) -> dict[str, torch.Tensor]:
    return {n: b.clone() for n, b in head.named_buffers()}


def test_q_values_are_bitwise_unchanged_right_after_each_injection(make_dqn):
    inject = build_intervention({"name": "plasticity_injection"})
    model = make_dqn([inject])
    model.learn(300)
    obs = _obs(model)
    for k in range(1, 4):
        with torch.no_grad():
            before = model.q_net(obs)
        inject.fire()
        with torch.no_grad():
            after = model.q_net(obs)
            _, seam = model.q_features(obs)  # the training path (PlasticDQN's seam) agrees
        assert torch.equal(after, before), f"injection {k} changed the Q-values"
        assert torch.equal(seam, after)
        assert _head(model).injections == inject.injections == k
        model.learn(100, reset_num_timesteps=False)


def test_only_the_new_head_trains_and_the_optimizer_holds_it(make_dqn):
    inject = build_intervention({"name": "plasticity_injection"})
    model = make_dqn([inject])
    model.learn(300)
    head_modules = list(model.q_net.q_net)[2:]  # net_arch [32, 32]: the last two linear layers
    params_before = list(model.q_net.parameters())
    optimizer = model.policy.optimizer
    old = [p.detach().clone() for m in head_modules for p in m.parameters()]

    inject.fire()

    head = _head(model)
    live = list(head.live.parameters())
    assert list(head.live) == head_modules  # the same modules, now the trainable head
    assert list(model.q_net.parameters()) == params_before  # the same tensors, the same order
    optimized = [p for group in optimizer.param_groups for p in group["params"]]
    assert all(any(p is q for q in optimized) for p in live)
    assert not any(p in optimizer.state for p in live)  # fresh parameters: fresh Adam state
    assert all(torch.equal(a, b) for a, b in zip(head.frozen("old", 0), old, strict=True))
    assert all(torch.equal(a, b.detach()) for a, b in zip(head.frozen("fresh", 0), live, strict=True))
    assert not any(b.requires_grad for b in head.buffers())
    frozen = _buffers(head)
    body = [p.detach().clone() for p in model.q_net.q_net[0].parameters()]
    fresh = [p.detach().clone() for p in live]

    model.learn(200, reset_num_timesteps=False)

    assert all(torch.equal(b, frozen[n]) for n, b in head.named_buffers())  # frozen stay frozen
    assert all(not torch.equal(p, f) for p, f in zip(live, fresh, strict=True))  # the new head learns
    assert not all(torch.equal(p, b) for p, b in zip(model.q_net.q_net[0].parameters(), body, strict=True))
    assert all(p in optimizer.state for p in live)


def test_repeated_injections_compose_as_a_sum_of_frozen_differences(make_dqn):
    inject = build_intervention({"name": "plasticity_injection", "every_steps": 150})
    model = make_dqn([inject])
    model.learn(600)
    head = _head(model)
    assert head.injections == inject.fires == 4
    assert model.pop_train_stats()["intervention/injections"] == 4.0
    obs = _obs(model)
    with torch.no_grad():
        phi = model.q_net.q_net[:-1](obs)

        def apply(tensors, x):
            w1, b1, w2, b2 = tensors
            return F.linear(torch.relu(F.linear(x, w1, b1)), w2, b2)

        expected = head.live(phi) + sum(
            apply(head.frozen("old", k), phi) - apply(head.frozen("fresh", k), phi) for k in range(4)
        )
        torch.testing.assert_close(model.q_net(obs), expected, rtol=1e-5, atol=1e-5)


def test_the_target_network_gets_the_same_structure_and_syncs(make_dqn):
    inject = build_intervention({"name": "plasticity_injection"})
    model = make_dqn([inject], target_update_interval=50)
    model.learn(300)
    inject.fire()
    target = model.q_net_target.q_net[-1]
    assert isinstance(target, InjectedHead) and target is not _head(model)
    obs = _obs(model)
    with torch.no_grad():  # the injection synced the target to the online network
        assert torch.equal(model.q_net_target(obs), model.q_net(obs))
    model.learn(100, reset_num_timesteps=False)  # SB3's own syncs copy the (same) parameter lists
    online, target_params = list(model.q_net.parameters()), list(model.q_net_target.parameters())
    assert len(online) == len(target_params) == 6
    assert all(
        torch.equal(a, b)
        for a, b in zip(_buffers(_head(model)).values(), _buffers(target).values(), strict=True)
    )


def test_acting_uses_the_injected_network(make_dqn):
    inject = build_intervention({"name": "plasticity_injection"})
    model = make_dqn([inject])
    model.learn(300)
    inject.fire()
    model.learn(200, reset_num_timesteps=False)
    obs = _obs(model)
    actions, _ = model.predict(obs.numpy(), deterministic=True)
    with torch.no_grad():
        assert (actions == model.q_net(obs).argmax(1).numpy()).all()
    # The live head's output layer is what the metrics and the helpers call the output layer.
    assert output_layer(model.q_net) is _head(model).live[-1]
    assert inject.last_layer is _head(model).live[-1]


def test_checkpoint_pickle_and_state_dict_restore_the_injected_network(make_dqn):
    inject = build_intervention({"name": "plasticity_injection", "every_steps": 150})
    model = make_dqn([inject])
    model.learn(400)
    obs = _obs(model)
    with torch.no_grad():
        q = model.q_net(obs)
    copy = cloudpickle.loads(cloudpickle.dumps(model.q_net))  # checkpoints pickle the agent
    with torch.no_grad():
        assert torch.equal(copy(obs), q)

    state = inject.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restored = build_intervention({"name": "plasticity_injection", "every_steps": 150})
    fresh = make_dqn([restored], seed=1)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.injections == inject.injections == 2
    with torch.no_grad():
        for p, q_ in zip(fresh.q_net.parameters(), model.q_net.parameters(), strict=True):
            p.copy_(q_)  # the live head comes with the agent's own state
        assert torch.equal(fresh.q_net(obs), q)
    assert all(
        torch.equal(a, b)
        for a, b in zip(_head(fresh).buffers(), fresh.q_net_target.q_net[-1].buffers(), strict=True)
    )


def test_a_linear_head_injection_only_restarts_its_optimizer_state(make_dqn):
    """n_layers=1: old − fresh is linear and folds into the trained weights (documented)."""
    inject = build_intervention({"name": "plasticity_injection", "n_layers": 1})
    model = make_dqn([inject])
    model.learn(300)
    inject.fire()
    head = _head(model)
    obs = _obs(model)
    with torch.no_grad():
        phi = model.q_net.q_net[:-1](obs)
        w_old, b_old = head.frozen("old", 0)
        w_fresh, b_fresh = head.frozen("fresh", 0)
        w, b = head.live[0].weight, head.live[0].bias
        folded = F.linear(phi, w + w_old - w_fresh, b + b_old - b_fresh)
        torch.testing.assert_close(model.q_net(obs), folded, rtol=1e-5, atol=1e-5)


def test_networks_without_a_linear_head_are_refused(make_dqn):
    with pytest.raises(UserError, match="n_layers=4 but the Q-network's head .* has only 3 linear layers"):
        make_dqn([build_intervention({"name": "plasticity_injection", "n_layers": 4})])
    inject = build_intervention({"name": "plasticity_injection"})
    fake = types.SimpleNamespace(q_net=nn.Sequential(nn.Linear(4, 2), nn.ReLU()))
    with pytest.raises(UserError, match="needs a Q-network with a linear head") as err:
        inject.setup(fake)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)


def test_bad_n_layers_is_a_user_error():
    with pytest.raises(UserError, match="n_layers must be >= 1, got 0"):
        build_intervention({"name": "plasticity_injection", "n_layers": 0})
