"""Metrics of the TD loss: GraMa (gradient dormancy) and curvature (Hessian power iteration)."""

from __future__ import annotations

import math
import random

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.dqn.policies import QNetwork
from torch.nn import functional as F

from rlplast.metrics import METRICS, MetricSuite, TDBatch, td_loss
from rlplast.metrics.curvature import hessian_max_eigenvalue
from rlplast.metrics.grama import grama_scores

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")),
]


def make_qnet(arch=(8,), n_actions=3, obs_dim=4, seed=0) -> QNetwork:
    torch.manual_seed(seed)
    space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    extractor = FlattenExtractor(space)
    return QNetwork(
        space, gym.spaces.Discrete(n_actions), extractor, extractor.features_dim, net_arch=list(arch)
    )


def make_batch(q, n=40, seed=1, scale=0.1) -> TDBatch:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, q.features_dim, generator=g)
    actions = torch.randint(0, int(q.action_space.n), (n,), generator=g)
    with torch.no_grad():
        targets = q(obs).gather(1, actions[:, None]).squeeze(1) + scale * torch.randn(n, generator=g)
    return TDBatch(obs=obs, actions=actions, targets=targets)


def test_registrations_are_opt_in_and_need_a_td_batch():
    for name in ("grama", "curvature"):
        assert METRICS.is_opt_in(name) and METRICS.needs_td_batch(name)
        assert name not in MetricSuite().names
    assert not METRICS.needs_td_batch("churn") and not METRICS.is_opt_in("churn")


def test_td_loss_is_sb3s_huber_loss():
    q = make_qnet()
    batch = make_batch(q, scale=3.0)
    ref = F.smooth_l1_loss(q(batch.obs).gather(1, batch.actions[:, None]), batch.targets[:, None])
    assert float(td_loss(q, batch).detach()) == pytest.approx(float(ref.detach()))


def test_grama_scores_known_answer():
    g = torch.tensor([[1.0, -1.0], [0.0, 0.0], [2.0, 4.0]])  # per-unit mean |grad|: 1, 0, 3 -> mean 4/3
    np.testing.assert_allclose(grama_scores(g).numpy(), [0.75, 0.0, 2.25])
    assert torch.equal(grama_scores(torch.zeros(3, 2)), torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("device", DEVICES)
def test_grama_finds_a_dead_unit_and_matches_autograd(device):
    q = make_qnet(arch=(6, 5)).to(device)
    with torch.no_grad():
        q.q_net[0].weight[2] = 0.0
        q.q_net[0].bias[2] = -1.0  # unit 2 of the first layer is dead: its incoming gradient is 0
    batch = make_batch(q.cpu(), scale=0.5)
    q.to(device)
    suite = MetricSuite(names=["grama"])
    values = suite.compute(q, batch.obs.to(device), td_batch=batch)
    loss = td_loss(q, TDBatch(batch.obs.to(device), batch.actions.to(device), batch.targets.to(device)))
    g0, g2 = torch.autograd.grad(loss, [q.q_net[0].weight, q.q_net[2].weight])
    d0 = float((grama_scores(g0) <= 0.025).sum())
    d2 = float((grama_scores(g2) <= 0.025).sum())
    assert d0 >= 1
    assert values["plasticity/grama_fraction/q_net.0"] == pytest.approx(d0 / 6)
    assert values["plasticity/grama_fraction/q_net.2"] == pytest.approx(d2 / 5)
    assert values["plasticity/grama_units"] == d0 + d2
    assert "plasticity/grama_fraction/q_net.4" not in values  # the output layer is not scored
    assert all(p.grad is None for p in q.parameters())  # nothing accumulated into .grad


def test_curvature_known_answer_on_a_linear_q_function():
    """Q = W s + b (net_arch []), residuals below 1 (Huber's quadratic part): the Hessian is block
    diagonal per action, H_a = (1/N) Σ_{i: a_i = a} [s_i; 1][s_i; 1]ᵀ, so λ_max = max_a λ_max(H_a)."""
    q = make_qnet(arch=(), n_actions=3, obs_dim=4)
    batch = make_batch(q, n=60, scale=0.05)
    x = torch.cat([batch.obs, torch.ones(60, 1)], 1).double()
    blocks = [x[batch.actions == a].T @ x[batch.actions == a] / 60 for a in range(3)]
    exact = max(float(torch.linalg.eigvalsh(b).max()) for b in blocks)
    values = MetricSuite(names=["curvature"], curvature_iters=200).compute(q, batch.obs, td_batch=batch)
    assert values["plasticity/hessian_max_eig"] == pytest.approx(exact, rel=1e-4)


def test_power_iteration_on_a_quadratic():
    a = torch.tensor([[3.0, 1.0], [1.0, 2.0]])
    w = torch.zeros(2, requires_grad=True)
    lam = hessian_max_eigenvalue(lambda: 0.5 * w @ a @ w, [w], iters=50, seed=0)
    assert float(lam) == pytest.approx(float(torch.linalg.eigvalsh(a).max()), rel=1e-6)
    b = torch.zeros(3, requires_grad=True)
    assert float(hessian_max_eigenvalue(lambda: (2.0 * b).sum(), [b], iters=5)) == 0.0  # linear: no curvature


@pytest.mark.parametrize("device", DEVICES)
def test_gradient_metrics_leave_network_rng_and_grads_alone(device):
    q = make_qnet(arch=(16, 16)).to(device)
    batch = make_batch(q.cpu())
    q.to(device)
    before = [p.detach().clone() for p in q.parameters()]
    snap = torch.get_rng_state().clone(), np.random.get_state()[1].copy(), random.getstate()
    values = MetricSuite(names=["grama", "curvature"], curvature_iters=5).compute(
        q, batch.obs.to(device), td_batch=batch
    )
    assert torch.equal(snap[0], torch.get_rng_state()) and random.getstate() == snap[2]
    assert np.array_equal(snap[1], np.random.get_state()[1])
    assert all(torch.equal(a, b) for a, b in zip(before, q.parameters(), strict=True))
    assert all(p.grad is None for p in q.parameters())
    assert all(math.isfinite(v) for v in values.values())


def test_without_a_td_batch_the_values_are_nan_with_a_reason():
    suite = MetricSuite(names=["grama", "curvature", "rank"])
    assert suite.needs_td_batch
    values = suite.compute(make_qnet(), torch.randn(30, 4))
    assert math.isnan(values["plasticity/hessian_max_eig"]) and math.isnan(
        values["plasticity/grama_fraction"]
    )
    assert any("no TD batch" in r and "grama" in r and "curvature" in r for r in suite.nan_reasons)
    assert not MetricSuite(names=["rank"]).needs_td_batch


def test_training_passes_a_td_batch_and_keeps_churn_state_in_checkpoints(tmp_path):
    """MetricsProbe on a real agent: TD-batch metrics get finite values; its state survives a pickle."""
    import pickle

    from rlplast.agents import PlasticDQN
    from rlplast.callbacks.metrics import Metrics, MetricsProbe
    from rlplast.config import MetricsConfig

    torch.set_num_threads(1)
    model = PlasticDQN(
        "MlpPolicy",
        "CartPole-v1",
        seed=0,
        learning_starts=50,
        buffer_size=1000,
        policy_kwargs={"net_arch": [16]},
    )
    model.learn(300)
    cfg = MetricsConfig(names=["churn", "grama", "curvature"], probe_size=64)
    probe = MetricsProbe(cfg, seed=0, echo=False)
    callback = Metrics(probe, every_steps=100)
    np_before = np.random.get_state()[1].copy()
    first = probe.compute(model, with_probe=False)
    assert np.array_equal(np_before, np.random.get_state()[1])  # training's draws untouched
    assert math.isfinite(first["plasticity/hessian_max_eig"]) and math.isfinite(
        first["plasticity/grama_fraction"]
    )
    saved = pickle.loads(pickle.dumps(callback.state_dict()))
    model.learn(200, reset_num_timesteps=False)
    later = probe.compute(model, with_probe=False)
    other = MetricsProbe(cfg, seed=0, echo=False)
    Metrics(other, every_steps=100).load_state_dict(saved)
    again = other.compute(model, with_probe=False)
    assert later == again  # same probe draws, same churn reference and previous Q-values
    assert later["plasticity/churn_q_abs"] > 0.0


def test_an_agent_without_td_batch_accessors_gets_nan_and_a_note():
    """A model without replay_sample / td_target: NaN and a note, no crash."""
    from rlplast.agents import PlasticDQN
    from rlplast.callbacks.metrics import MetricsProbe
    from rlplast.config import MetricsConfig

    torch.set_num_threads(1)
    agent = PlasticDQN("MlpPolicy", "CartPole-v1", seed=0, learning_starts=50, buffer_size=500).learn(120)

    class Member:  # the accessors MetricsProbe needs for the other metrics only
        q_net = agent.q_net
        replay_size = agent.replay_size
        replay_states = agent.replay_states

    probe = MetricsProbe(MetricsConfig(names=["grama", "active"], probe_size=32), seed=0, echo=False)
    values = probe.compute(Member(), with_probe=False)  # type: ignore[arg-type]
    assert math.isnan(values["plasticity/grama_fraction"]) and math.isfinite(
        values["plasticity/active_fraction"]
    )
    assert any("no TD batch" in note for note in probe.notes())
