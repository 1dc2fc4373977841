"""Continual backprop: the contribution utility, and which units are replaced and how."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlplast.errors import UserError
from rlplast.interventions import build_intervention


def _cbp(make_dqn, **params):
    cbp = build_intervention({"name": "continual_backprop", **params})
    model = make_dqn([cbp])
    return cbp, model


def test_hidden_layers_are_the_mlp_layers(make_dqn):
    cbp, model = _cbp(make_dqn)
    net = model.q_net.q_net  # 4 -> 32 -> 32 -> 2
    assert [(a, b) for a, b in cbp._pairs] == [(net[0], net[2]), (net[2], net[4])]
    assert [u.shape for u in cbp.utility] == [(32,), (32,)]


def test_activations_are_the_training_batch_mean_abs_outputs(make_dqn):
    cbp, model = _cbp(make_dqn)
    model.learn(200)
    obs = torch.as_tensor(model.replay_buffer.observations[:64, 0])
    batch = type("Batch", (), {"observations": obs})()
    cbp.loss(batch, None, None)  # type: ignore[arg-type]
    net = model.q_net.q_net
    with torch.no_grad():
        h0 = torch.relu(net[0](obs))
        h1 = torch.relu(net[2](h0))
    assert torch.equal(cbp.mean_activation[0], h0.abs().mean(0))
    assert torch.equal(cbp.mean_activation[1], h1.abs().mean(0))


def test_utility_is_the_running_contribution(make_dqn):
    cbp, model = _cbp(make_dqn, decay_rate=0.9, maturity_threshold=1000)
    model.learn(200)
    net = model.q_net.q_net
    u0 = [torch.rand(32), torch.rand(32)]
    h = [torch.rand(32), torch.rand(32)]
    cbp.utility = [u.clone() for u in u0]
    cbp.mean_activation = [x.clone() for x in h]
    cbp.after_update(1, 1)
    for i, nxt in enumerate((net[2], net[4])):
        # u ← η·u + (1 − η)·|h| · Σ_k |w_ik|  (w_ik: the unit's outgoing weights, column i)
        expected = 0.9 * u0[i].double() + 0.1 * h[i].double() * nxt.weight.detach().abs().sum(0).double()
        torch.testing.assert_close(cbp.utility[i].double(), expected, rtol=1e-6, atol=0)
    assert cbp.units_replaced == 0  # no unit is mature


def test_the_mature_unit_of_least_utility_is_replaced(make_dqn):
    cbp, model = _cbp(make_dqn, replacement_rate=1 / 64, maturity_threshold=10, decay_rate=0.0)
    model.learn(400)  # Adam state for every parameter
    net = model.q_net.q_net
    layer, nxt = net[0], net[2]
    weight, bias, out = layer.weight.detach(), layer.bias.detach(), nxt.weight.detach()
    state = model.policy.optimizer.state
    before = {n: p.detach().clone() for n, p in model.q_net.named_parameters()}
    moments = {n: state[p]["exp_avg"].clone() for n, p in model.q_net.named_parameters()}
    # Layer 0: every unit mature but unit 5 (too young) and unit 7 of least utility; layer 1: none mature.
    cbp.ages = [np.full(32, 50), np.zeros(32, dtype=np.int64)]
    cbp.ages[0][5] = 3
    cbp.pending = [0.6, 0.0]  # + ρ·31 = 0.484...: one unit this update
    h = torch.ones(32)
    h[5], h[7] = 0.0, 1e-3  # η = 0: the utility is this update's contribution
    cbp.mean_activation = [h, torch.ones(32)]
    replaced = cbp.units_replaced  # (during learn)
    cbp.after_update(1, 1)

    assert cbp.units_replaced == replaced + 1
    assert cbp.ages[0][7] == 0 and cbp.ages[0][5] == 4 and (np.delete(cbp.ages[0], [5, 7]) == 51).all()
    assert float(cbp.utility[0][7]) == 0.0
    assert cbp.pending[0] == pytest.approx(0.6 + 31 / 64 - 1)
    bound = 1 / 4**0.5  # nn.Linear(4, 32)'s initialisation bound
    assert not torch.equal(weight[7], before["q_net.0.weight"][7])
    assert float(weight[7].abs().max()) <= bound
    assert float(bias[7]) == 0.0  # the authors' code zeroes the new unit's bias
    assert (out[:, 7] == 0).all()  # outgoing weights: the function is unchanged
    others = [i for i in range(32) if i != 7]
    assert torch.equal(weight[others], before["q_net.0.weight"][others])
    assert torch.equal(out[:, others], before["q_net.2.weight"][:, others])
    assert (state[layer.weight]["exp_avg"][7] == 0).all() and (
        state[layer.weight]["exp_avg_sq"][7] == 0
    ).all()
    assert float(state[layer.bias]["exp_avg"][7]) == 0.0
    assert (state[nxt.weight]["exp_avg"][:, 7] == 0).all()
    assert torch.equal(state[layer.weight]["exp_avg"][others], moments["q_net.0.weight"][others])
    for name in ("q_net.4.weight", "q_net.4.bias", "q_net.2.bias"):
        assert torch.equal(dict(model.q_net.named_parameters())[name], before[name])


def test_replacements_accumulate_rho_times_the_mature_units(make_dqn):
    # ρ = 1/64 and 32 mature units per layer: half a unit per update and layer.
    cbp, model = _cbp(make_dqn, replacement_rate=1 / 64, maturity_threshold=0)
    model.learn(100 + 4 * 20)  # 20 updates
    assert model.n_updates == 20
    assert cbp.units_replaced == 2 * 10
    assert model.pop_train_stats()["intervention/cbp_units_replaced"] == 20.0


def test_immature_units_are_never_replaced(make_dqn):
    cbp, model = _cbp(make_dqn, replacement_rate=1.0, maturity_threshold=1000)
    model.learn(600)
    assert cbp.units_replaced == 0 and all(p == 0.0 for p in cbp.pending)


def test_a_network_without_hidden_layers_is_refused(make_dqn):
    with pytest.raises(UserError, match="continual_backprop': the Q-network has no hidden linear layer"):
        make_dqn([build_intervention({"name": "continual_backprop"})], policy_kwargs={"net_arch": []})


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"replacement_rate": 1.5}, "replacement_rate must be <= 1.0, got 1.5"),
        ({"replacement_rate": -0.1}, "replacement_rate must be >= 0.0, got -0.1"),
        ({"decay_rate": 1.0}, r"decay_rate must be in \[0, 1\), got 1.0"),
        ({"maturity_threshold": -1}, "maturity_threshold must be >= 0, got -1"),
    ],
)
def test_bad_parameters_are_user_errors(params, match):
    with pytest.raises(UserError, match=match):
        build_intervention({"name": "continual_backprop", **params})
