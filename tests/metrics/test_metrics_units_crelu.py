"""Fraction of active units (Plasticine's definition) and the metrics on CReLU / LayerNorm networks."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.dqn.policies import QNetwork
from torch import nn

from rlplast.agents.layers import CReLU, OptionsQNetwork
from rlplast.metrics import MetricSuite, forward_pass, is_activation
from rlplast.metrics.active import active_fraction

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")),
]


def make_qnet(act=nn.ReLU, layer_norm=False, arch=(16, 8), seed=0) -> QNetwork:
    torch.manual_seed(seed)
    space = gym.spaces.Box(-np.inf, np.inf, (6,), np.float32)
    extractor = FlattenExtractor(space)
    return OptionsQNetwork(
        space,
        gym.spaces.Discrete(3),
        extractor,
        extractor.features_dim,
        net_arch=list(arch),
        activation_fn=act,
        layer_norm=layer_norm,
    )


def plasticine_active_units(features: torch.Tensor) -> float:
    """Plasticine's compute_active_units for ReLU/CReLU features: 1 − mean(features == 0)."""
    return float(1.0 - (features == 0).float().mean())


def test_active_fraction_known_answers():
    h = torch.tensor([[0.0, 1.0, 2.0, 0.0], [3.0, 0.0, 0.0, 0.0]])
    assert float(active_fraction(h)) == pytest.approx(3 / 8) == plasticine_active_units(h)
    t = torch.tensor([[0.995, -0.5], [0.1, -0.999]])
    assert float(active_fraction(t, "tanh")) == 0.5  # |h| <= 0.99: not saturated
    s = torch.tensor([[0.005, 0.5, 0.995, 0.2]])
    assert float(active_fraction(s, "sigmoid")) == 0.5
    with pytest.raises(ValueError, match="valid: relu, tanh, sigmoid"):
        active_fraction(h, "gelu")


@pytest.mark.parametrize("device", DEVICES)
def test_active_metric_per_layer_and_on_the_features(device):
    q = make_qnet().to(device)
    obs = torch.randn(200, 6, device=device)
    values = MetricSuite(names=["active"]).compute(q, obs)
    with torch.no_grad():
        fp = forward_pass(q.eval(), obs)
    for key, act in fp.activations.items():
        assert values[f"plasticity/active_fraction/{key}"] == pytest.approx(plasticine_active_units(act))
    assert values["plasticity/active_fraction"] == pytest.approx(plasticine_active_units(fp.features))


def test_active_metric_uses_the_saturation_rule_for_tanh():
    q = make_qnet(act=nn.Tanh)
    with torch.no_grad():
        q.q_net[0].weight.mul_(100.0)  # saturate the first layer
    obs = torch.randn(100, 6)
    values = MetricSuite(names=["active"]).compute(q, obs)
    with torch.no_grad():
        first = torch.tanh(q.q_net[0](obs))
    assert values["plasticity/active_fraction/q_net.1"] == pytest.approx(
        float((first.abs() <= 0.99).double().mean())
    )


def test_crelu_is_recorded_as_an_activation_and_its_units_are_the_concatenated_features():
    assert is_activation(CReLU()) and is_activation(nn.ReLU()) and not is_activation(nn.LayerNorm(3))
    q = make_qnet(act=CReLU, layer_norm=True, arch=(16, 8))
    obs = torch.randn(300, 6)
    fp = forward_pass(q, obs)
    assert list(fp.activations) == ["q_net.2", "q_net.5"]
    assert fp.activations["q_net.2"].shape == (300, 32) and fp.features.shape == (300, 16)
    values = MetricSuite(names=["dormant", "active", "rank", "collapse"], n_min=5).compute(q, obs)
    # 2 x 8 concatenated units in the penultimate layer, each pair has one active entry per sample.
    assert values["plasticity/active_fraction"] == pytest.approx(0.5)
    h = fp.features.detach()
    dead = float(((h == 0).all(0)).sum())
    assert values["plasticity/dead_fraction/q_net.5"] == pytest.approx(dead / 16)
    assert values["plasticity/feature_rank"] <= 16


def test_every_metric_runs_on_crelu_and_layer_norm_networks():
    from rlplast.metrics import METRICS, TDBatch

    q = make_qnet(act=CReLU, layer_norm=True)
    obs = torch.randn(60, 6)
    batch = TDBatch(obs=obs, actions=torch.randint(0, 3, (60,)), targets=torch.randn(60))
    for name in METRICS.names():
        values = MetricSuite(names=[name], n_min=1, probe_steps=3).compute(q, obs, td_batch=batch)
        assert values, name
        if name in ("active", "grama", "curvature", "dormant", "rank", "weights", "feature_norm"):
            assert all(np.isfinite(v) for v in values.values()), name
