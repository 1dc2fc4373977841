"""A population update equals PlasticDQN's update of every member: loss, clipping, Adam, target copy.

The stacked forward pass (``baddbmm``) is bitwise ``F.linear``'s on the CPU, and so are the loss,
the clipping and Adam (see ``test_population_adam.py``); the one place that differs in the last
bits is a weight gradient computed by a batched product where torch uses a plain one (the first
layer's ``x^T g``, 4 x 32 x 32 here, ~1e-9). So parameters and moments are compared to float32
round-off relative to each tensor's scale, and losses and norms to 1e-6 relative.
"""

from __future__ import annotations

import pytest
import torch
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.utils import polyak_update

from rlplast.population import ReplaySamples


def _batch(n_members: int, size: int, seed: int) -> ReplaySamples:
    """A random CartPole-shaped batch per member (obs, actions, next obs, dones, rewards)."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n_members, size, 4, generator=g)
    next_obs = torch.randn(n_members, size, 4, generator=g)
    actions = torch.randint(0, 2, (n_members, size, 1), generator=g)
    dones = (torch.rand(n_members, size, 1, generator=g) < 0.2).float()
    rewards = torch.randn(n_members, size, 1, generator=g)
    return ReplaySamples(obs, actions, next_obs, dones, rewards)


def _member_batch(batch: ReplaySamples, i: int) -> ReplayBufferSamples:
    return ReplayBufferSamples(
        batch.observations[i],
        batch.actions[i],
        batch.next_observations[i],
        batch.dones[i],
        batch.rewards[i],
    )


def _train_on(model, batch: ReplayBufferSamples, monkeypatch) -> None:
    """PlasticDQN.train for one gradient step on exactly ``batch`` (its buffer's sample replaced)."""
    monkeypatch.setattr(model.replay_buffer, "sample", lambda *args, **kwargs: batch)
    model.train(gradient_steps=1, batch_size=batch.observations.shape[0])


def _close(a: torch.Tensor, b: torch.Tensor, what: str, rel: float = 1e-5) -> None:
    """Equal to float32 round-off: the largest difference within ``rel`` of the tensor's scale."""
    a, b = a.detach(), b.detach()
    scale = float(b.abs().max()) if b.numel() else 0.0
    diff = float((a - b).abs().max()) if b.numel() else 0.0
    assert diff <= rel * scale or diff == 0.0, f"{what}: max difference {diff:.3g} at scale {scale:.3g}"


def _assert_members_equal(pop, models) -> None:
    """Parameters, target parameters, Adam moments and steps of every member equal its model's
    (steps exactly, tensors to float32 round-off)."""
    for i, model in enumerate(models):
        view = pop.member(i)
        ours = list(view.q_net.parameters())
        theirs = list(model.q_net.parameters())
        for k, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            _close(a, b, f"member {i} parameter {k}")
        for a, b in zip(view.q_net_target.parameters(), model.q_net_target.parameters(), strict=True):
            _close(a, b, f"member {i} target")
        opt_state = model.policy.optimizer.state
        for k, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            if b not in opt_state:
                assert a not in view.optimizer.state, f"member {i} parameter {k} has state"
                continue
            ref, mine = opt_state[b], view.optimizer.state[a]
            assert float(mine["step"]) == float(ref["step"]), f"member {i} step of parameter {k}"
            _close(mine["exp_avg"], ref["exp_avg"], f"member {i} exp_avg {k}")
            _close(mine["exp_avg_sq"], ref["exp_avg_sq"], f"member {i} exp_avg_sq {k}")


def test_initial_networks_are_plastic_dqns(make_population, make_dqn):
    """Member i starts with the very parameters of PlasticDQN(seed=seeds[i]) (SB3's init per seed)."""
    seeds = [3, 0, 7]
    pop = make_population(seeds)
    models = [make_dqn(s) for s in seeds]
    for i, model in enumerate(models):  # bitwise: the same init per seed
        for a, b in zip(pop.member(i).q_net.parameters(), model.q_net.parameters(), strict=True):
            assert torch.equal(a, b)
        for a, b in zip(
            pop.member(i).q_net_target.parameters(), model.q_net_target.parameters(), strict=True
        ):
            assert torch.equal(a, b)
    # Distinct seeds, distinct networks.
    first = [p.detach()[0] for p in pop.net.params]
    second = [p.detach()[1] for p in pop.net.params]
    assert not all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("max_grad_norm, fused", [(10.0, False), (0.05, False), (10.0, True)])
def test_updates_equal_plastic_dqn(make_population, make_dqn, monkeypatch, max_grad_norm, fused):
    """Several updates from the same parameters and batches: losses, gradient norms, Adam moments
    and steps and parameters equal each member's PlasticDQN (the first update's loss and norm
    bitwise, everything else to float32 round-off; steps exactly). Midway, member 1's whole Adam state and member 2's last-layer state are cleared, so the
    members' step counts differ afterwards (per member and per parameter)."""
    seeds = [0, 1, 2]
    policy_kwargs = {"net_arch": [32, 32], "optimizer_kwargs": {"fused": fused}}  # fused: torch's kernel
    pop = make_population(seeds, max_grad_norm=max_grad_norm, policy_kwargs=policy_kwargs)
    models = [make_dqn(s, max_grad_norm=max_grad_norm, policy_kwargs=policy_kwargs) for s in seeds]
    assert pop.optimizer.impl == ("fused" if fused else "foreach")
    for step in range(6):
        batch = _batch(len(seeds), 32, seed=step)
        losses = pop.update(batch)
        for i, model in enumerate(models):
            _train_on(model, _member_batch(batch, i), monkeypatch)
            stats = model.pop_train_stats()
            loss, norm = float(losses[i]), float(pop.last_grad_norms[i])
            if step == 0:  # same parameters, same batch: the same arithmetic
                assert (loss, norm) == (stats["train/loss"], stats["train/grad_norm"]), f"member {i}"
            assert loss == pytest.approx(stats["train/loss"], rel=1e-6), f"loss {i} at update {step}"
            assert norm == pytest.approx(stats["train/grad_norm"], rel=1e-6), f"norm {i} at update {step}"
        _assert_members_equal(pop, models)
        if step == 2:
            pop.member(1).optimizer.state.clear()
            models[1].policy.optimizer.state.clear()
            last = list(models[2].q_net.q_net[-1].parameters())
            last_view = list(pop.member(2).q_net.q_net[-1].parameters())
            for p, v in zip(last, last_view, strict=True):
                models[2].policy.optimizer.state.pop(p)
                assert pop.member(2).optimizer.state.pop(v, None) is not None
    steps = pop.optimizer.steps
    assert steps[:, 0].tolist() == [6.0] * 6
    assert steps[:, 1].tolist() == [3.0] * 6
    assert steps[:, 2].tolist() == [6.0] * 4 + [3.0] * 2
    if max_grad_norm < 1:  # the small limit really clipped
        assert bool((pop.last_grad_norms > max_grad_norm).all())


@pytest.mark.parametrize("tau", [1.0, 0.3])
def test_target_update_equals_sb3_polyak(make_population, make_dqn, monkeypatch, tau):
    """The target update is SB3's polyak_update per member (tau = 1: a hard copy)."""
    seeds = [4, 5]
    pop = make_population(seeds, tau=tau)
    models = [make_dqn(s, tau=tau) for s in seeds]
    for step in range(2):
        batch = _batch(len(seeds), 32, seed=10 + step)
        pop.update(batch)
        for i, model in enumerate(models):
            _train_on(model, _member_batch(batch, i), monkeypatch)
    pop.net.copy_to_target(tau)
    for model in models:
        polyak_update(model.q_net.parameters(), model.q_net_target.parameters(), tau)
    _assert_members_equal(pop, models)
    for online, target in zip(pop.net.params, pop.net.target_params, strict=True):
        assert torch.equal(online.detach(), target) == (tau == 1.0)


def test_n_step_update_uses_discounts(make_population, monkeypatch, make_dqn):
    """With n-step samples the target uses the batch's discounts, as SB3's DQN.train does."""
    pop = make_population([0], n_steps=3)
    model = make_dqn(0, n_steps=3)
    batch = _batch(1, 32, seed=5)
    discounts = torch.full((1, 32, 1), 0.99**3)
    discounts[0, :5] = 0.99
    batch.discounts = discounts
    pop.update(batch)
    ref = ReplayBufferSamples(
        *[t[0] for t in (batch.observations, batch.actions, batch.next_observations)],
        batch.dones[0],
        batch.rewards[0],
        discounts[0],
    )
    _train_on(model, ref, monkeypatch)
    _assert_members_equal(pop, [model])
