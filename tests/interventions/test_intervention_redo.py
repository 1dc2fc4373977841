"""ReDo recycles exactly the τ-dormant units: incoming re-drawn, outgoing and Adam moments zeroed."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from rlplast.errors import UserError
from rlplast.interventions import build_intervention

DEAD = [1, 3]


def _model_with_dead_units(make_dqn):
    redo = build_intervention({"name": "redo", "every_updates": 10_000, "batch_size": 128, "seed": 3})
    model = make_dqn([redo], policy_kwargs={"net_arch": [8, 8]})
    model.learn(300)
    first = model.policy.q_net.q_net[0]
    alive = [i for i in range(8) if i not in DEAD]
    with torch.no_grad():  # ReLU(0·x − 1) = 0 on every input: units 1 and 3 are dead
        first.weight[DEAD] = 0.0
        first.bias[DEAD] = -1.0
        first.bias[alive] += 5.0  # CartPole observations are small: the others are clearly alive
    return redo, model


def _clone_state(model):
    params = {n: p.detach().clone() for n, p in model.policy.q_net.named_parameters()}
    state = model.policy.optimizer.state
    moments = {
        n: {k: state[p][k].clone() for k in ("exp_avg", "exp_avg_sq")}
        for n, p in model.policy.q_net.named_parameters()
    }
    return params, moments


def test_redo_touches_only_dormant_units(make_dqn):
    redo, model = _model_with_dead_units(make_dqn)
    q = model.policy.q_net.q_net
    params, moments = _clone_state(model)
    target_before = [p.detach().clone() for p in model.policy.q_net_target.parameters()]
    numpy_state = np.random.get_state()
    expected_fresh = copy.deepcopy(q[0])
    torch.manual_seed(7)
    expected_fresh.reset_parameters()  # the first draw ReDo makes after the same seed

    obs = redo.sample_observations()

    def second_layer_pre_activations() -> torch.Tensor:
        with torch.no_grad():
            return q[2](torch.relu(q[0](obs.float())))

    pre_before = second_layer_pre_activations()
    torch.manual_seed(7)
    masks = redo.recycle(obs)

    assert torch.nonzero(masks[0]).flatten().tolist() == DEAD
    assert len(masks) == 2 and masks[1] is not None
    state = model.policy.optimizer.state
    live = model.policy.q_net
    named = dict(live.named_parameters())
    no_mask = torch.zeros(4, dtype=torch.bool)
    layers = (("q_net.0", no_mask, masks[0], "q_net.2"), ("q_net.2", masks[0], masks[1], "q_net.4"))
    for layer, in_mask, mask, nxt in layers:
        w, b, w_next = named[f"{layer}.weight"], named[f"{layer}.bias"], named[f"{nxt}.weight"]
        keep, in_keep = ~mask, ~in_mask
        # Rows of live units: untouched (weights and Adam moments) apart from dormant inputs' columns.
        assert torch.equal(w[keep][:, in_keep], params[f"{layer}.weight"][keep][:, in_keep])
        assert torch.equal(b[keep], params[f"{layer}.bias"][keep])
        for key in ("exp_avg", "exp_avg_sq"):
            old = moments[f"{layer}.weight"][key]
            assert torch.equal(state[w][key][keep][:, in_keep], old[keep][:, in_keep])
            assert torch.count_nonzero(state[w][key][mask]) == 0
            assert torch.count_nonzero(state[b][key][mask]) == 0
            assert torch.count_nonzero(state[w_next][key][:, mask]) == 0
        # outgoing columns: dormant zeroed
        assert torch.count_nonzero(w_next[:, mask]) == 0
    assert torch.equal(named["q_net.0.weight"][DEAD], expected_fresh.weight[DEAD])
    assert torch.equal(named["q_net.0.bias"][DEAD], expected_fresh.bias[DEAD])
    rows_kept = ~masks[1]
    # Dormant first-layer units were dead, so with their outgoing weights zeroed the second layer's
    # pre-activations of live units are unchanged.
    pre_after = second_layer_pre_activations()
    assert torch.allclose(pre_after[:, rows_kept], pre_before[:, rows_kept], atol=1e-6)
    assert torch.equal(named["q_net.4.bias"], params["q_net.4.bias"])
    assert all(
        torch.equal(a, b) for a, b in zip(model.policy.q_net_target.parameters(), target_before, strict=True)
    )
    # Adam's step counts are kept.
    assert all(s["step"].item() > 0 for s in state.values())
    # The global NumPy RNG (replay sampling of training) is untouched.
    after = np.random.get_state()
    assert (
        numpy_state[0] == after[0]
        and np.array_equal(numpy_state[1], after[1])
        and numpy_state[2:] == after[2:]
    )
    logged = redo.log_values()
    n_dormant = len(DEAD) + int(masks[1].sum())
    assert logged["intervention/redo_dormant_fraction"] == pytest.approx(n_dormant / 16)
    assert logged["intervention/redo_units_reset"] == n_dormant
    assert logged["intervention/redo_checks"] == 1.0


def test_observation_sampling_uses_its_own_seeded_generator(make_dqn):
    a = build_intervention({"name": "redo", "seed": 11, "batch_size": 16})
    b = build_intervention({"name": "redo", "seed": 11, "batch_size": 16})
    model = make_dqn([a, b])
    model.learn(150)
    assert torch.equal(a.sample_observations(), b.sample_observations())


def test_redo_fires_every_n_updates(make_dqn):
    redo = build_intervention({"name": "redo", "every_updates": 25})
    model = make_dqn([redo])
    model.learn(500)  # (500 − 100) / 4 = 100 updates
    assert model._n_updates == 100
    assert redo.checks == 4


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"every_updates": 0}, "every_updates must be >= 1"),
        ({"tau": -0.1}, "tau must be >= 0"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
    ],
)
def test_validation(params, match):
    with pytest.raises(UserError, match=match):
        build_intervention({"name": "redo", **params})
