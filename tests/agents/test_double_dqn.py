"""Double DQN targets (known answers), replay_sample, and AdamW's decoupled weight decay."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stable_baselines3 import DQN
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from torch import nn

from rlplast.agents import PlasticDQN
from rlplast.config import load_config
from rlplast.train import policy_kwargs

KW = dict(
    learning_starts=100,
    train_freq=4,
    gradient_steps=2,
    target_update_interval=50,
    batch_size=32,
    buffer_size=5000,
)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small networks train fastest on one thread (and the machine may be shared)."""
    torch.set_num_threads(1)


class TableQ(nn.Module):
    """Q-values looked up by state index: the observation's first entry is the row of ``table``."""

    def __init__(self, table: list[list[float]]) -> None:
        super().__init__()
        self.table = torch.tensor(table)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.table[obs[:, 0].long()]


def _batch() -> ReplayBufferSamples:
    next_obs = torch.tensor([[0.0], [1.0], [2.0]])
    return ReplayBufferSamples(
        observations=next_obs,
        actions=torch.zeros(3, 1, dtype=torch.long),
        next_observations=next_obs,
        dones=torch.tensor([[0.0], [0.0], [1.0]]),
        rewards=torch.tensor([[1.0], [0.5], [2.0]]),
    )


def test_double_dqn_target_known_answer():
    online = TableQ([[1.0, 5.0, 2.0], [9.0, 0.0, 1.0], [0.0, 0.0, 7.0]])
    target = TableQ([[3.0, 4.0, 10.0], [2.0, 6.0, 1.0], [5.0, 5.0, 5.0]])
    model = PlasticDQN("MlpPolicy", "CartPole-v1", seed=0, gamma=0.5, buffer_size=100)
    model.q_net, model.q_net_target = online, target
    # DQN: max_a' Q_target(s', a') = 10, 6, (done); Double DQN: the online argmax is 1, 0, 2 ->
    # Q_target(s', a*) = 4, 2, (done).
    model.double_dqn = False
    np.testing.assert_allclose(model.td_target(_batch()).numpy().ravel(), [1 + 0.5 * 10, 0.5 + 0.5 * 6, 2.0])
    model.double_dqn = True
    np.testing.assert_allclose(model.td_target(_batch()).numpy().ravel(), [1 + 0.5 * 4, 0.5 + 0.5 * 2, 2.0])


def test_double_dqn_off_is_sb3_on_differs():
    torch.set_num_threads(1)
    # A target network kept for the whole run and lr 1e-3: the online argmax drifts from the target's.
    kw = {**KW, "train_freq": 1, "gradient_steps": 1, "target_update_interval": 1000, "learning_rate": 1e-3}
    arch = dict(net_arch=[16])
    ref = DQN("MlpPolicy", "CartPole-v1", seed=4, policy_kwargs=arch, **kw).learn(600)
    off = PlasticDQN("MlpPolicy", "CartPole-v1", seed=4, double_dqn=False, policy_kwargs=arch, **kw).learn(
        600
    )
    on = PlasticDQN("MlpPolicy", "CartPole-v1", seed=4, double_dqn=True, policy_kwargs=arch, **kw).learn(600)
    for a, b in zip(ref.q_net.parameters(), off.q_net.parameters(), strict=True):
        assert torch.equal(a, b)
    assert any(
        not torch.equal(a, b) for a, b in zip(ref.q_net.parameters(), on.q_net.parameters(), strict=True)
    )


def test_double_dqn_from_the_config_and_in_checkpoints(tmp_path):
    from rlplast.train import build_model, make_env

    cfg = load_config(None, ["agent.double_dqn=true", "agent.learning_starts=50", "agent.net_arch=[8]"])
    model = build_model(cfg, make_env(cfg), "cpu")
    assert model.double_dqn is True
    model.learn(100)
    model.save(tmp_path / "m.zip")
    assert PlasticDQN.load(tmp_path / "m.zip").double_dqn is True


def test_replay_sample_is_sb3s_draw_and_leaves_the_global_rng_alone():
    model = PlasticDQN("MlpPolicy", "CartPole-v1", seed=0, n_steps=3, **KW).learn(300)
    before = np.random.get_state()[1].copy()
    a = model.replay_sample(16, seed=7)
    assert np.array_equal(before, np.random.get_state()[1])
    np.random.seed(7)
    b = model.replay_buffer.sample(16)
    np.random.set_state(("MT19937", before, 624, 0, 0.0))
    for x, y in zip(a, b, strict=True):
        if x is not None:
            assert torch.equal(x, y)


def test_weight_decay_is_decoupled_adamw():
    cfg = load_config(None, ["agent.weight_decay=0.1", "agent.learning_rate=0.01"])
    kwargs = policy_kwargs(cfg)
    assert kwargs["optimizer_class"] is torch.optim.AdamW
    assert kwargs["optimizer_kwargs"]["weight_decay"] == 0.1
    # Decoupled: with a zero gradient one step is θ ← θ (1 − lr·λ) (Adam's own update is 0).
    w = torch.nn.Parameter(torch.tensor([2.0, -4.0]))
    opt = kwargs["optimizer_class"]([w], lr=0.01, **kwargs["optimizer_kwargs"])
    (w * 0.0).sum().backward()
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([2.0, -4.0]) * (1 - 0.01 * 0.1))
