"""Network options: LayerNorm before each hidden activation, CReLU (widths, fast greedy path, save/load)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from stable_baselines3 import DQN
from torch import nn

from rlplast.agents import PlasticDQN
from rlplast.agents.layers import CReLU, OptionsQNetwork, q_head, width_factor
from rlplast.config import load_config
from rlplast.train import policy_kwargs

KW = dict(
    learning_starts=50,
    train_freq=4,
    gradient_steps=1,
    target_update_interval=50,
    batch_size=16,
    buffer_size=2000,
)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small networks train fastest on one thread (and the machine may be shared)."""
    torch.set_num_threads(1)


def test_crelu_known_values_and_width():
    x = torch.tensor([[1.0, -2.0, 0.0], [-0.5, 3.0, 4.0]])
    out = CReLU()(x)
    expected = torch.tensor([[1.0, 0.0, 0.0, 0.0, 2.0, 0.0], [0.0, 3.0, 4.0, 0.5, 0.0, 0.0]])
    assert torch.equal(out, expected)
    # The last dim by default: a population's (S, N, D) batches keep their leading axes.
    assert CReLU()(torch.randn(3, 5, 4)).shape == (3, 5, 8)
    assert CReLU(dim=1)(torch.randn(2, 3, 4, 4)).shape == (2, 6, 4, 4)
    assert width_factor(CReLU) == 2 and width_factor(nn.ReLU) == 1


def test_q_head_layouts():
    names = [type(m).__name__ for m in q_head(4, 2, [8, 6], nn.ReLU, layer_norm=True)]
    assert names == ["Linear", "LayerNorm", "ReLU", "Linear", "LayerNorm", "ReLU", "Linear"]
    head = q_head(4, 3, [8, 6], CReLU)
    linears = [m for m in head if isinstance(m, nn.Linear)]
    # net_arch counts linear units; each CReLU doubles the next layer's input.
    assert [(m.in_features, m.out_features) for m in linears] == [(4, 8), (16, 6), (12, 3)]


@pytest.mark.parametrize(
    "options",
    [{"layer_norm": True}, {"activation_fn": CReLU}, {"activation_fn": CReLU, "layer_norm": True}],
)
def test_options_build_both_networks_with_a_plain_linear_head(options):
    model = PlasticDQN(
        "MlpPolicy", "CartPole-v1", seed=0, buffer_size=100, policy_kwargs={"net_arch": [16, 8], **options}
    )
    for net in (model.q_net, model.q_net_target):
        assert isinstance(net, OptionsQNetwork)
        assert type(net.q_net[-1]) is nn.Linear
        assert any(isinstance(m, nn.LayerNorm) for m in net.q_net) == bool(options.get("layer_norm"))
    for a, b in zip(model.q_net.parameters(), model.q_net_target.parameters(), strict=True):
        assert torch.equal(a, b)


def test_layer_norm_sits_between_linear_and_activation():
    model = PlasticDQN(
        "MlpPolicy",
        "CartPole-v1",
        seed=0,
        buffer_size=100,
        policy_kwargs={"net_arch": [5], "layer_norm": True},
    )
    lin, ln, act, out = model.q_net.q_net
    x = torch.randn(7, 4)
    z = lin(x)
    ref = (z - z.mean(1, keepdim=True)) / torch.sqrt(z.var(1, unbiased=False, keepdim=True) + ln.eps)
    with torch.no_grad():
        torch.testing.assert_close(model.q_net(x), out(torch.relu(ref)))


def test_without_options_the_networks_are_sb3s():
    """Default options build SB3's modules from the same random draws (bitwise training: test_dqn)."""
    ref = DQN("MlpPolicy", "CartPole-v1", seed=3, buffer_size=100, policy_kwargs={"net_arch": [8]})
    ours = PlasticDQN(
        "MlpPolicy",
        "CartPole-v1",
        seed=3,
        buffer_size=100,
        policy_kwargs={"net_arch": [8], "layer_norm": False},
    )
    assert type(ours.q_net).__name__ == "QNetwork"
    for a, b in zip(ref.q_net.parameters(), ours.q_net.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("options", [{"layer_norm": True}, {"activation_fn": CReLU, "layer_norm": True}])
def test_fast_greedy_path_gives_the_networks_actions(options):
    model = PlasticDQN(
        "MlpPolicy", "CartPole-v1", seed=1, policy_kwargs={"net_arch": [16, 16], **options}, **KW
    )
    model.learn(300)
    layers = model._direct_layers()
    assert layers is not None  # the direct path is taken (LayerNorm and CReLU called as modules)
    obs = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    actions, _ = model.predict(obs, deterministic=True)
    with torch.no_grad():
        expected = model.q_net(torch.as_tensor(obs)).argmax(1).numpy()
    np.testing.assert_array_equal(actions, expected)


def test_save_load_and_pickle_keep_the_options(tmp_path):
    kwargs = {"net_arch": [8], "activation_fn": CReLU, "layer_norm": True}
    model = PlasticDQN("MlpPolicy", "CartPole-v1", seed=2, policy_kwargs=kwargs, **KW).learn(200)
    model.save(tmp_path / "m.zip")
    loaded = PlasticDQN.load(tmp_path / "m.zip")
    copy = pickle.loads(pickle.dumps(model))  # checkpoints pickle the agent
    for other in (loaded, copy):
        assert [type(m) for m in other.q_net.q_net] == [type(m) for m in model.q_net.q_net]
        for a, b in zip(model.q_net.parameters(), other.q_net.parameters(), strict=True):
            assert torch.equal(a, b)


def test_config_options_reach_the_policy():
    cfg = load_config(None, ["agent.layer_norm=true", "agent.activation=crelu"])
    kwargs = policy_kwargs(cfg)
    assert kwargs["layer_norm"] is True and kwargs["activation_fn"] is CReLU
    plain = policy_kwargs(load_config(None, []))
    assert "layer_norm" not in plain and "optimizer_class" not in plain  # defaults: SB3's arguments


def test_last_layer_reset_works_with_layer_norm():
    from rlplast.interventions import build_intervention

    reset = build_intervention({"name": "reset_last_layers", "every_steps": 100, "n_layers": 2})
    model = PlasticDQN(
        "MlpPolicy",
        "CartPole-v1",
        seed=0,
        interventions=[reset],
        policy_kwargs={"net_arch": [8, 8], "layer_norm": True},
        **KW,
    )
    model.learn(400)
    assert reset.log_values()["intervention/resets"] >= 3
    for a, b in zip(
        model.q_net.q_net[-1].parameters(), model.q_net_target.q_net[-1].parameters(), strict=True
    ):
        assert a.shape == b.shape
