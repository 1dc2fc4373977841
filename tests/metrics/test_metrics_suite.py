"""Activations, probe plasticity, the registry and MetricSuite (one pass, one transfer, no side effects)."""

from __future__ import annotations

import math
import random
import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.dqn.policies import QNetwork
from torch import nn

import rlplast.metrics as metrics_pkg
from rlplast.errors import UserError
from rlplast.metrics import METRICS, MetricContext, MetricSuite, forward_with_activations, last_linear
from rlplast.metrics.probe import probe_plasticity

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")),
]


def make_qnet(obs_dim: int = 6, n_actions: int = 3, arch=(32, 32), act=nn.ReLU, seed: int = 0) -> QNetwork:
    torch.manual_seed(seed)
    obs_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    extractor = FlattenExtractor(obs_space)
    return QNetwork(
        obs_space,
        gym.spaces.Discrete(n_actions),
        extractor,
        extractor.features_dim,
        net_arch=list(arch),
        activation_fn=act,
    )


class TinyCnnQ(nn.Module):
    """A QNetwork-like module with a CNN extractor (no SB3 preprocessing)."""

    def __init__(self) -> None:
        super().__init__()
        self.features_extractor = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten())
        self.q_net = nn.Sequential(nn.Linear(4 * 4 * 4, 16), nn.Tanh(), nn.Linear(16, 5))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.q_net(self.features_extractor(obs))


def test_forward_with_activations_sb3_mlp():
    q = make_qnet()
    obs = torch.randn(40, 6)
    calls = []
    handle = q.q_net[0].register_forward_hook(lambda *a: calls.append(1))
    acts, feats, qv = forward_with_activations(q, obs)
    handle.remove()
    assert len(calls) == 1  # one forward pass
    assert list(acts) == ["q_net.1", "q_net.3"]
    assert feats.shape == (40, 32) and qv.shape == (40, 3)
    torch.testing.assert_close(qv, q(obs))
    torch.testing.assert_close(feats, acts["q_net.3"])
    assert last_linear(q) is q.q_net[-1]
    # Hooks are removed afterwards.
    assert all(not m._forward_hooks for m in q.modules())


def test_forward_with_activations_cnn_and_generic():
    q = TinyCnnQ()
    obs = torch.randn(7, 2, 6, 6)
    acts, feats, qv = forward_with_activations(q, obs)
    assert set(acts) == {"features_extractor.1", "q_net.1"}
    assert acts["features_extractor.1"].shape == (7, 4, 4, 4)
    assert feats.shape == (7, 16) and qv.shape == (7, 5)

    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(3, 8), nn.GELU(), nn.Linear(8, 2))

        def forward(self, x):
            return self.body(x)

    p = Plain()
    acts, feats, qv = forward_with_activations(p, torch.randn(5, 3))
    assert list(acts) == ["body.1"] and feats.shape == (5, 8) and qv.shape == (5, 2)
    assert last_linear(p) is p.body[2]
    with pytest.raises(TypeError):
        last_linear(nn.ReLU())


def rng_snapshot():
    return torch.get_rng_state().clone(), np.random.get_state()[1].copy(), random.getstate()


def assert_rng_unchanged(before) -> None:
    after = rng_snapshot()
    assert torch.equal(before[0], after[0])
    assert np.array_equal(before[1], after[1])
    assert before[2] == after[2]


def test_probe_plasticity_leaves_network_and_rng_alone():
    q = make_qnet()
    obs = torch.randn(128, 6)
    before = [p.detach().clone() for p in q.parameters()]
    snap = rng_snapshot()
    res = probe_plasticity(q, obs, steps=30, batch_size=32, seed=3)
    assert_rng_unchanged(snap)
    assert all(torch.equal(a, b) for a, b in zip(before, q.parameters(), strict=True))
    assert set(res) == {"probe_loss", "probe_loss_fresh", "probe_ratio"}
    assert all(math.isfinite(float(v)) for v in res.values())
    assert float(res["probe_ratio"]) == pytest.approx(
        float(res["probe_loss"]) / float(res["probe_loss_fresh"])
    )
    res2 = probe_plasticity(q, obs, steps=30, batch_size=32, seed=3)
    assert all(torch.equal(res[k], res2[k]) for k in res)  # deterministic given the seed


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("act", [nn.ReLU, nn.Tanh])
def test_probe_fits_run_together_with_the_same_results_as_one_after_the_other(act, device, monkeypatch):
    from rlplast.metrics import probe as probe_module

    q = make_qnet(arch=(16, 8), act=act, seed=4).to(device)
    obs = torch.randn(256, 6).to(device)
    assert probe_module._stackable(q)
    calls = []
    monkeypatch.setattr(probe_module, "_fit_together", _spy(probe_module._fit_together, calls))
    together = probe_plasticity(q, obs, steps=60, batch_size=32, seed=5)
    apart = probe_plasticity(q, obs, steps=60, batch_size=32, seed=5, together=False)
    assert len(calls) == 1  # the stacked path ran once (and only for together=True)
    for key in together:
        assert float(together[key]) == pytest.approx(float(apart[key]), rel=1e-5), key
    assert float(together["probe_loss"]) != float(together["probe_loss_fresh"])  # two different fits


def test_probe_fits_networks_that_cannot_be_stacked_one_after_the_other(monkeypatch):
    from rlplast.metrics import probe as probe_module

    cnn = TinyCnnQ()
    assert not probe_module._stackable(cnn)
    q = make_qnet()
    q.q_net.insert(1, nn.LayerNorm(32))  # a layer with parameters between the linears
    assert not probe_module._stackable(q)
    monkeypatch.setattr(probe_module, "_fit_together", _spy(probe_module._fit_together, calls := []))
    res = probe_plasticity(q, torch.randn(64, 6), steps=5, batch_size=16, seed=1)
    assert calls == [] and all(math.isfinite(float(v)) for v in res.values())


def _spy(fn, calls):
    def wrapper(*args, **kwargs):
        calls.append(1)
        return fn(*args, **kwargs)

    return wrapper


def test_probe_training_reduces_loss():
    q = make_qnet(seed=1)
    obs = torch.randn(64, 6)
    short = probe_plasticity(q, obs, steps=1, batch_size=64)
    long = probe_plasticity(q, obs, steps=200, batch_size=64, lr=3e-3)
    assert float(long["probe_loss"]) < float(short["probe_loss"])
    assert float(long["probe_loss_fresh"]) < float(short["probe_loss_fresh"])


def test_suite_validates_names():
    with pytest.raises(UserError, match="valid: .*collapse"):
        MetricSuite(names=["colapse"])
    # "all": every registered metric but the opt-in ones (costly: they run only when named).
    assert MetricSuite().names == [n for n in METRICS.names() if not METRICS.is_opt_in(n)]
    assert {"grama", "curvature"} <= {n for n in METRICS.names() if METRICS.is_opt_in(n)}
    assert MetricSuite(names="rank").names == ["rank"]
    assert {"collapse", "rank", "dormant", "weights", "feature_norm", "probe"} <= set(METRICS.names())


@pytest.mark.parametrize("device", DEVICES)
def test_suite_compute_keys_and_side_effects(device):
    q = make_qnet(n_actions=3).to(device)
    q.train()
    q.q_net[1].eval()  # mixed modes must be restored exactly
    obs = torch.randn(300, 6, device=device)
    actions = torch.randint(0, 3, (300, 1), device=device)
    init = [p.detach().clone() for p in q.parameters()]
    before = [p.detach().clone() for p in q.parameters()]
    modes = [m.training for m in q.modules()]
    snap = rng_snapshot()
    suite = MetricSuite(names=("all",), n_min=5, probe_steps=10, probe_batch_size=32)
    values = suite.compute(q, obs, taken_actions=actions, init_params=init)
    assert_rng_unchanged(snap)
    assert all(torch.equal(a, b) for a, b in zip(before, q.parameters(), strict=True))
    assert [m.training for m in q.modules()] == modes
    assert all(isinstance(v, float) for v in values.values())
    for labeling in ("greedy", "taken"):
        for key in ("nc1", "nc1_quotient", "nc2_etf_error", "nc3", "nc4_mismatch", "nc4_agreement", "c_eff"):
            assert f"collapse/{key}_{labeling}" in values
        assert sum(values[f"collapse/count_{c}_{labeling}"] for c in range(3)) == 300
    assert values["collapse/c_eff_taken"] == 3.0
    assert math.isfinite(values["collapse/nc1_taken"])
    for key in (
        "plasticity/srank",
        "plasticity/effective_rank",
        "plasticity/feature_rank",
        "plasticity/dormant_fraction",
        "plasticity/dormant_fraction/q_net.1",
        "plasticity/dead_units",
        "plasticity/weight_magnitude/q_net.0",
        "plasticity/distance_from_init",
        "plasticity/feature_norm",
        "plasticity/probe_loss",
        "plasticity/probe_loss_fresh",
        "plasticity/probe_ratio",
    ):
        assert key in values, key
    assert values["plasticity/distance_from_init"] == 0.0
    # The suite's numbers equal the pure functions on the same features.
    from rlplast.metrics import collapse_metrics, srank

    with torch.no_grad():
        q.eval()
        _, feats, qv = forward_with_activations(q, obs)
    ref = collapse_metrics(feats, actions.reshape(-1), q.q_net[-1].weight, q.q_net[-1].bias, 3, n_min=5)
    assert values["collapse/nc1_taken"] == pytest.approx(float(ref["nc1"]), rel=1e-9)
    assert values["plasticity/srank"] == float(srank(feats))


def test_suite_records_nan_reason_when_one_action_class():
    q = make_qnet(n_actions=4)
    with torch.no_grad():
        q.q_net[-1].bias.copy_(torch.tensor([100.0, 0.0, 0.0, 0.0]))  # greedy action is always 0
    suite = MetricSuite(names=["collapse"], n_min=20)
    values = suite.compute(q, torch.randn(100, 6))
    assert values["collapse/c_eff_greedy"] == 1.0
    assert math.isnan(values["collapse/nc1_greedy"])
    assert any("C_eff=1" in r and "greedy" in r for r in suite.nan_reasons)
    assert not any(k.endswith("_taken") for k in values)  # no taken actions → no taken keys


def test_every_registered_metric_runs_on_cnn_and_mlp():
    for net, obs in ((TinyCnnQ(), torch.randn(50, 2, 6, 6)), (make_qnet(act=nn.Tanh), torch.randn(50, 6))):
        for name in METRICS.names():
            values = MetricSuite(names=[name], n_min=1, probe_steps=3).compute(net, obs)
            assert values, name
            assert all(k.startswith(("collapse/", "plasticity/")) for k in values), name


def test_dormant_counts_channels_when_the_features_are_a_flattened_conv_map():
    """With ``net_arch: []`` the features are the extractor's flattened conv map; its units for
    the dormant/dead counts are channels (as for any conv layer), not channel × position."""
    torch.manual_seed(0)
    q = TinyCnnQ()
    q.q_net = nn.Sequential(nn.Linear(4 * 4 * 4, 5))
    conv = q.features_extractor[0]
    with torch.no_grad():
        conv.weight[1] = 0.0
        conv.bias[1] = -1.0  # channel 1 is dead
    obs = torch.zeros(64, 2, 6, 6)
    obs[:, :, :3, :3] = torch.rand(64, 2, 3, 3)  # only the top-left positions see input
    acts, feats, _ = forward_with_activations(q, obs)
    assert feats.data_ptr() == acts["features_extractor.1"].data_ptr()  # the case under test
    values = MetricSuite(names=["dormant"], n_min=1).compute(q, obs)
    a = acts["features_extractor.1"].detach().double().numpy()
    score = np.abs(a).mean(axis=(0, 2, 3))  # per channel
    ref_dormant = float((score / score.mean() <= 0.025).sum())
    assert values["plasticity/dead_units"] == float((score == 0).sum()) == 1.0
    assert values["plasticity/dormant_units"] == ref_dormant
    assert values["plasticity/dormant_fraction/features_extractor.1"] == ref_dormant / 4


def test_custom_metric_in_one_registration(monkeypatch):
    name = "test_only_mean_q"
    # Register into a copy of the registry so other tests ("all" metrics) never see this one.
    monkeypatch.setattr(METRICS, "_items", dict(METRICS._items))

    @METRICS.register(name)
    def mean_q(ctx: MetricContext) -> dict[str, torch.Tensor]:
        return {"plasticity/mean_q": ctx.q_values.mean()}

    values = MetricSuite(names=[name]).compute(make_qnet(), torch.randn(10, 6))
    assert set(values) == {"plasticity/mean_q"}


def test_no_host_sync_in_metric_sources():
    """Metric code must not synchronise; only the suite's single transfer may call .cpu()/.tolist()."""
    pattern = re.compile(r"\.(item|cpu|tolist|numpy)\(")
    root = Path(metrics_pkg.__file__).parent
    for path in sorted(root.glob("*.py")):
        code = "\n".join(line.split("#")[0] for line in path.read_text().splitlines())
        hits = pattern.findall(code)
        if path.name == "suite.py":
            assert sorted(hits) == ["cpu", "tolist"], hits  # torch.cat(parts).cpu().tolist()
        else:
            assert not hits, (path.name, hits)
