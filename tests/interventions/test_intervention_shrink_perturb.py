"""Shrink-and-perturb implements θ ← λθ + σθ_fresh with a fresh draw of the network's initialisers."""

from __future__ import annotations

import copy

import pytest
import torch

from rlplast.errors import UserError
from rlplast.interventions import build_intervention


def _fresh_draw(net: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The draw the intervention makes after ``torch.manual_seed(seed)``: initialisers in module order."""
    scratch = copy.deepcopy(net)
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in scratch.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return {n: p.detach().clone() for n, p in scratch.named_parameters()}


@pytest.mark.parametrize("target_mode", ["same", "copy"])
def test_formula_with_the_same_fresh_draw(make_dqn, target_mode):
    sp = build_intervention({"name": "shrink_perturb", "shrink": 0.6, "perturb": 0.3, "target": target_mode})
    model = make_dqn([sp])
    model.learn(200)
    policy = model.policy
    # Make the target differ from the online network so "same" and "copy" are distinguishable.
    with torch.no_grad():
        for p in policy.q_net_target.parameters():
            p.add_(1.0)
    theta = {n: p.detach().clone() for n, p in policy.q_net.named_parameters()}
    theta_target = {n: p.detach().clone() for n, p in policy.q_net_target.named_parameters()}
    fresh = _fresh_draw(policy.q_net, seed=123)
    opt_state = {id(p): s["exp_avg"].clone() for p, s in policy.optimizer.state.items()}

    torch.manual_seed(123)
    sp.fire()

    target = dict(policy.q_net_target.named_parameters())
    for name, param in policy.q_net.named_parameters():
        expected = 0.6 * theta[name] + 0.3 * fresh[name]
        assert torch.allclose(param, expected, atol=1e-7, rtol=0), name
        if target_mode == "same":
            expected_target = 0.6 * theta_target[name] + 0.3 * fresh[name]
            assert torch.allclose(target[name], expected_target, atol=1e-7, rtol=0), name
        else:
            assert torch.equal(target[name], param), name
        assert torch.equal(policy.optimizer.state[param]["exp_avg"], opt_state[id(param)])  # kept


def test_fresh_draw_differs_between_events(make_dqn):
    sp = build_intervention({"name": "shrink_perturb", "shrink": 1.0, "perturb": 1.0})
    model = make_dqn([sp])
    first = sp._fresh.draw()["q_net.0.weight"].clone()
    second = sp._fresh.draw()["q_net.0.weight"].clone()
    assert not torch.equal(first, second)
    # The scratch copy is not part of the network or the optimizer.
    assert len(list(model.policy.q_net.parameters())) == 6


def test_every_update_fires_after_each_optimizer_step(make_dqn):
    sp = build_intervention({"name": "shrink_perturb", "when": "every_update", "shrink": 0.999})
    model = make_dqn([sp])
    model.learn(300)
    assert sp.fires == model._n_updates > 0
    assert all(torch.isfinite(p).all() for p in model.policy.parameters())


@pytest.mark.parametrize(
    ("params", "match"),
    [
        # The range comes from the field's metadata (checked when the spec is built) or, built
        # directly, from __post_init__; either names the bound that was broken.
        ({"shrink": 0.0}, r"shrink must be (in \(0, 1\]|> 0)"),
        ({"shrink": 1.5}, r"shrink must be (in \(0, 1\]|<= 1)"),
        ({"perturb": -0.1}, "perturb must be >= 0"),
        ({"target": "none"}, "same, copy"),
        ({"when": "never"}, "interval, task_switch, both, every_update"),
        ({"when": "every_update", "every_steps": 5}, "every_steps is only used"),
    ],
)
def test_validation(params, match):
    with pytest.raises(UserError, match=match):
        build_intervention({"name": "shrink_perturb", **params})
