"""C-CHAIN: the churn term against the network before the previous update, and its automatic λ."""

from __future__ import annotations

import copy
import types

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from rlplast.errors import UserError
from rlplast.interventions import build_intervention
from rlplast.interventions.cchain import _RunningMean


def _batch(model, size: int = 32):
    np.random.seed(123)
    return model.replay_buffer.sample(size)


def test_the_term_is_coef_times_the_churn_against_the_network_before_the_previous_update(make_dqn):
    cchain = build_intervention({"name": "cchain", "coef": 2.0, "auto": False, "seed": 4})
    model = make_dqn([cchain])
    model.learn(300)
    names = [n for n, _ in model.q_net.named_parameters()]
    previous = [t.clone() for t in cchain._prev]  # the parameters the last update started from
    assert not all(torch.equal(a, b) for a, b in zip(previous, model.q_net.parameters(), strict=True))
    rng = copy.deepcopy(cchain.rng)
    idx = rng.integers(0, model.replay_size(), size=32)
    env_idx = rng.integers(0, model.n_envs, size=32)
    obs = torch.as_tensor(model.replay_buffer.observations[idx, env_idx])
    with torch.no_grad():
        churn = (
            (model.q_net(obs) - functional_call(model.q_net, dict(zip(names, previous, strict=True)), (obs,)))
            ** 2
        ).mean()

    batch = _batch(model)
    features, q_values = model.q_features(batch.observations)
    term = cchain.loss(batch, features, q_values)

    assert term is not None and term.requires_grad
    torch.testing.assert_close(term.detach(), 2.0 * churn, rtol=1e-6, atol=0)
    # The snapshot moved on to the parameters of this update.
    assert all(torch.equal(a, b) for a, b in zip(cchain._prev, model.q_net.parameters(), strict=True))
    assert cchain.log_values()["train/cchain_coef"] == 2.0


def test_the_first_update_has_no_term(make_dqn):
    cchain = build_intervention({"name": "cchain"})
    model = make_dqn([cchain], learning_starts=1000)
    model.learn(200)  # replay contents, no update yet
    batch = _batch(model)
    features, q_values = model.q_features(batch.observations)
    assert cchain.loss(batch, features, q_values) is None
    assert cchain.updates == 1 and cchain._prev is not None
    assert cchain.loss(batch, features, q_values) is not None


def test_the_training_rng_is_untouched(make_dqn):
    """λ = 0: the same parameters as plain DQN, bit for bit (same replay batches, no other draw)."""
    plain = make_dqn([])
    plain.learn(500)
    cchain = build_intervention({"name": "cchain", "coef": 0.0, "auto": False})
    model = make_dqn([cchain])
    model.learn(500)
    assert cchain.updates == model.n_updates == 100
    for a, b in zip(model.q_net.parameters(), plain.q_net.parameters(), strict=True):
        assert torch.equal(a, b)


def test_running_mean_covers_the_last_window_values():
    mean = _RunningMean(4, "cpu")
    for v in range(1, 11):
        mean.record(torch.tensor(float(v)))
        assert float(mean.mean()) == pytest.approx(np.mean(np.arange(1, v + 1)[-4:]))


def test_the_automatic_coefficient_is_the_papers_rule(make_dqn):
    cchain = build_intervention(
        {"name": "cchain", "coef": 7.0, "target_ratio": 0.05, "warmup_updates": 10, "window": 3}
    )
    make_dqn([cchain])
    for v in (1.0, 2.0, 4.0, 8.0):
        cchain._td.record(torch.tensor(v))
    for v in (0.1, 0.3, 0.5):
        cchain._churn.record(torch.tensor(v))
    cchain.updates = 9
    assert cchain.coefficient() == 7.0  # before warmup_updates: the initial λ
    cchain.updates = 10
    expected = 0.05 * np.mean([2.0, 4.0, 8.0]) / (np.mean([0.1, 0.3, 0.5]) + 1e-8)
    assert float(cchain.coefficient()) == pytest.approx(expected, rel=1e-6)


def test_the_recorded_td_loss_is_the_agents_huber_loss(make_dqn):
    cchain = build_intervention({"name": "cchain"})
    model = make_dqn([cchain])
    model.learn(300)
    batch = _batch(model)
    features, q_values = model.q_features(batch.observations)
    count = cchain._td.count
    cchain.loss(batch, features, q_values)
    with torch.no_grad():
        taken = torch.gather(q_values, 1, batch.actions.long())
        expected = F.smooth_l1_loss(taken, model.td_target(batch))
    assert cchain._td.count == count + 1
    assert float(cchain._td.ring[count % cchain.window]) == float(expected)


def test_training_with_the_automatic_coefficient(make_dqn):
    cchain = build_intervention({"name": "cchain", "warmup_updates": 20, "window": 30})
    model = make_dqn([cchain])
    model.learn(400)
    stats = model.pop_train_stats()
    assert stats["train/cchain_coef"] != 50.0 and np.isfinite(stats["train/cchain_coef"])
    assert stats["train/cchain_churn"] > 0.0
    assert cchain._td.count == model.n_updates and cchain._churn.count == model.n_updates - 1


def test_the_automatic_coefficient_needs_td_targets():
    cchain = build_intervention({"name": "cchain"})
    fake = types.SimpleNamespace(q_net=nn.Linear(4, 2))
    with pytest.raises(UserError, match="needs the agent's TD targets .* set auto: false") as err:
        cchain.setup(fake)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"coef": -1.0}, "coef must be >= 0.0, got -1.0"),
        ({"target_ratio": 0.0}, "target_ratio must be > 0.0, got 0.0"),
        ({"window": 0}, "window must be >= 1, got 0"),
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"warmup_updates": -1}, "warmup_updates must be >= 0, got -1"),
        ({"seed": -2}, "seed must be >= 0, got -2"),
    ],
)
def test_bad_parameters_are_user_errors(params, match):
    with pytest.raises(UserError, match=match):
        build_intervention({"name": "cchain", **params})
