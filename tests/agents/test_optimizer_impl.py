"""agent.optimizer_impl: foreach keeps SB3's exact updates, fused is a faster opt-in."""

from __future__ import annotations

import pytest
import torch
from stable_baselines3 import DQN

from rlplast.config import config_from_dict
from rlplast.errors import UserError
from rlplast.train import build_model, make_env

AGENT = {
    "learning_starts": 100,
    "train_freq": 4,
    "batch_size": 32,
    "target_update_interval": 50,
    "net_arch": [16, 16],
    "learning_rate": 1e-3,
}


def _model(impl: str):
    cfg = config_from_dict(
        {"env": {"id": "CartPole-v1"}, "agent": {**AGENT, "optimizer_impl": impl}, "train": {"seed": 3}}
    )
    return build_model(cfg, make_env(cfg), "cpu")


def _params(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.q_net.parameters()]


def test_foreach_default_matches_sb3_and_fused_differs_only_in_the_last_bits():
    torch.set_num_threads(1)
    ours = _model("foreach").learn(600)
    assert ours.policy.optimizer.param_groups[0]["foreach"] is True
    kw = {k: v for k, v in AGENT.items() if k != "net_arch"}
    ref = DQN("MlpPolicy", "CartPole-v1", seed=3, policy_kwargs=dict(net_arch=[16, 16]), **kw).learn(600)
    for a, b in zip(_params(ref), _params(ours), strict=True):
        assert torch.equal(a, b)

    fused = _model("fused")
    assert fused.policy.optimizer.param_groups[0]["fused"] is True
    # Over a few updates the fused kernel's rounding stays tiny (later, RL amplifies any difference).
    fused.learn(140)
    early = _model("foreach").learn(140)
    assert fused.n_updates == early.n_updates > 0
    diffs = [(a - b).abs().max().item() for a, b in zip(_params(fused), _params(early), strict=True)]
    assert max(diffs) < 1e-5


def test_fused_unavailable_is_a_user_error(monkeypatch):
    import rlplast.train as train

    def no_fused(*args, **kwargs):
        raise RuntimeError(
            "`fused=True` requires all the params to be floating point Tensors of supported devices"
        )

    monkeypatch.setattr(train, "_plastic_dqn", no_fused)
    with pytest.raises(UserError, match="optimizer_impl: fused Adam is not available"):
        _model("fused")
