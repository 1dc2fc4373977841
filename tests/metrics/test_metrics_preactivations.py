"""Pre-activations: the inputs of the activation functions, from the suite's single forward pass."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.dqn.policies import QNetwork
from torch import nn

import rlplast.metrics.suite as suite_module
from rlplast.metrics import METRICS, MetricContext, MetricSuite, forward_pass, forward_with_activations
from rlplast.registry import import_plugin


def make_qnet(act: type[nn.Module] = nn.ReLU, seed: int = 0) -> QNetwork:
    torch.manual_seed(seed)
    obs_space = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
    extractor = FlattenExtractor(obs_space)
    return QNetwork(
        obs_space,
        gym.spaces.Discrete(3),
        extractor,
        extractor.features_dim,
        net_arch=[8, 6],
        activation_fn=act,
    )


def hand_forward(q: QNetwork, obs: torch.Tensor, act) -> dict[str, torch.Tensor]:
    """Pre-activations of SB3's MLP written out: ``z1 = x W0ᵀ + b0``, ``z2 = act(z1) W2ᵀ + b2``."""
    w0, b0 = q.q_net[0].weight, q.q_net[0].bias
    w2, b2 = q.q_net[2].weight, q.q_net[2].bias
    z1 = obs @ w0.T + b0
    z2 = act(z1) @ w2.T + b2
    return {"q_net.1": z1, "q_net.3": z2}


@pytest.mark.parametrize(("module", "fn"), [(nn.ReLU, F.relu), (nn.Tanh, torch.tanh)])
def test_preactivations_match_a_hand_computed_forward_pass(module, fn):
    q = make_qnet(module)
    obs = torch.randn(20, 5)
    calls: list[int] = []
    handle = q.q_net[0].register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        fp = forward_pass(q, obs, preactivations=True)
        expected = hand_forward(q, obs, fn)
    handle.remove()
    assert calls == [1]  # still one forward pass
    assert fp.preactivations is not None and list(fp.preactivations) == list(fp.activations)
    for key, z in expected.items():
        torch.testing.assert_close(fp.preactivations[key], z)
        torch.testing.assert_close(fp.activations[key], fn(z))
    assert (fp.preactivations["q_net.1"] < 0).any()  # a real pre-activation, not the ReLU output
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in q.modules())


def test_preactivations_are_off_by_default_and_change_nothing_else():
    q = make_qnet()
    obs = torch.randn(12, 5)
    with torch.no_grad():
        plain = forward_pass(q, obs)
        with_pre = forward_pass(q, obs, preactivations=True)
        acts, feats, qv = forward_with_activations(q, obs)
    assert plain.preactivations is None
    for a, b in (
        (plain.features, with_pre.features),
        (plain.q_values, with_pre.q_values),
        (feats, plain.features),
    ):
        assert torch.equal(a, b)
    assert acts.keys() == plain.activations.keys() == with_pre.activations.keys()
    assert torch.equal(qv, plain.q_values)


def test_inplace_activation_inputs_are_copied_before_they_are_overwritten():
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Linear(4, 6), nn.ReLU(inplace=True), nn.Linear(6, 5), nn.LeakyReLU(0.1, inplace=True)
    )
    net.append(nn.Linear(5, 2))
    x = torch.randn(30, 4)
    with torch.no_grad():
        fp = forward_pass(net, x, preactivations=True)
        z1 = x @ net[0].weight.T + net[0].bias
        z3 = F.relu(z1) @ net[2].weight.T + net[2].bias
    assert fp.preactivations is not None
    torch.testing.assert_close(fp.preactivations["1"], z1)
    torch.testing.assert_close(fp.preactivations["3"], z3)
    torch.testing.assert_close(fp.activations["1"], F.relu(z1))
    torch.testing.assert_close(fp.activations["3"], F.leaky_relu(z3, 0.1))


def test_a_module_applied_twice_keeps_both_inputs():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.out, self.act = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 2), nn.Tanh()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.act(self.b(self.act(self.a(x)))))

    torch.manual_seed(2)
    net = Twice()
    x = torch.randn(9, 3)
    with torch.no_grad():
        fp = forward_pass(net, x, preactivations=True)
        z1 = net.a(x)
        z2 = net.b(torch.tanh(z1))
    assert fp.preactivations is not None
    assert list(fp.preactivations) == list(fp.activations) == ["act", "act#1"]
    torch.testing.assert_close(fp.preactivations["act"], z1)
    torch.testing.assert_close(fp.preactivations["act#1"], z2)
    torch.testing.assert_close(fp.features, torch.tanh(z2))


def test_conv_preactivations_are_the_convolution_output():
    torch.manual_seed(3)

    class TinyCnnQ(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features_extractor = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten())
            self.q_net = nn.Sequential(nn.Linear(64, 5))

    q = TinyCnnQ()
    obs = torch.randn(6, 2, 6, 6)
    conv = q.features_extractor[0]
    with torch.no_grad():
        fp = forward_pass(q, obs, preactivations=True)
        z = F.conv2d(obs, conv.weight, conv.bias)
    assert fp.preactivations is not None
    torch.testing.assert_close(fp.preactivations["features_extractor.1"], z)


@pytest.fixture
def scratch_registry(monkeypatch):
    """Register into copies of the registry's tables so other tests ("all" metrics) never see ours."""
    monkeypatch.setattr(METRICS, "_items", dict(METRICS._items))
    monkeypatch.setattr(METRICS, "_preactivations", set(METRICS._preactivations))
    return METRICS


def test_suite_records_preactivations_only_for_a_metric_that_asks(scratch_registry, monkeypatch):
    seen: dict[str, object] = {}

    @scratch_registry.register("test_only_preact_mean", preactivations=True)
    def preact_mean(ctx: MetricContext) -> dict[str, torch.Tensor]:
        assert ctx.preactivations is not None
        return {"plasticity/test_preact_mean": ctx.preactivations["q_net.1"].to(torch.float64).mean()}

    @scratch_registry.register("test_only_no_preact")
    def no_preact(ctx: MetricContext) -> dict[str, torch.Tensor]:
        seen["preactivations"] = ctx.preactivations
        return {"plasticity/test_no_preact": ctx.q_values.to(torch.float64).mean()}

    requested: list[bool] = []
    real = suite_module.forward_pass

    def spy(q_net, obs, preactivations=False):
        requested.append(preactivations)
        return real(q_net, obs, preactivations=preactivations)

    monkeypatch.setattr(suite_module, "forward_pass", spy)
    assert scratch_registry.needs_preactivations("test_only_preact_mean")
    assert not scratch_registry.needs_preactivations("test_only_no_preact")
    assert not any(scratch_registry.needs_preactivations(n) for n in ("collapse", "rank", "dormant", "probe"))

    q = make_qnet()
    obs = torch.randn(25, 5)
    values = MetricSuite(names=["test_only_preact_mean"]).compute(q, obs)
    with torch.no_grad():
        expected = hand_forward(q, obs, F.relu)["q_net.1"].double().mean()
    assert values["plasticity/test_preact_mean"] == pytest.approx(float(expected), rel=1e-6)

    MetricSuite(names=["test_only_no_preact", "collapse", "rank", "dormant"], n_min=1).compute(q, obs)
    assert seen["preactivations"] is None
    assert requested == [True, False]
    assert MetricSuite(names=["test_only_no_preact", "test_only_preact_mean"]).preactivations


DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def test_the_user_package_example_of_the_docs_runs_as_a_plugin(scratch_registry, monkeypatch, tmp_path):
    """docs/metrics.md's ``mylab/metrics.py``, imported as a plugin, gives hand-computed values."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    (code,) = [b for b in blocks if "preactivations=True)" in b and "@METRICS.register" in b]
    package = tmp_path / "mylab_doc_example"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "metrics.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mylab_doc_example", raising=False)
    monkeypatch.delitem(sys.modules, "mylab_doc_example.metrics", raising=False)
    import_plugin("mylab_doc_example.metrics")
    assert scratch_registry.needs_preactivations("preact_stats")

    q = make_qnet(nn.Tanh)
    obs = torch.randn(40, 5)
    values = MetricSuite(names=["collapse", "preact_stats"], n_min=1).compute(q, obs)
    with torch.no_grad():
        expected = hand_forward(q, obs, torch.tanh)
    for layer, z in expected.items():
        z64 = z.double()
        assert values[f"plasticity/preact_mean/{layer}"] == pytest.approx(
            float(z64.mean()), rel=1e-6, abs=1e-9
        )
        assert values[f"plasticity/preact_std/{layer}"] == pytest.approx(
            float(z64.std(correction=0)), rel=1e-6
        )
