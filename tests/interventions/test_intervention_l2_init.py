"""L2-init pulls the parameters back towards their values at setup."""

from __future__ import annotations

import pytest
import torch

from rlplast.errors import UserError
from rlplast.interventions import build_intervention


def test_term_is_zero_at_init_and_its_gradient_points_back_to_theta0(make_dqn):
    reg = build_intervention({"name": "l2_init", "coef": 0.5})
    model = make_dqn([reg])
    params = list(model.policy.q_net.parameters())
    assert reg.loss(None, None, None).item() == 0.0
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p))
    moved = [p.detach().clone() for p in params]
    for p in params:
        p.grad = None
    term = reg.loss(None, None, None)
    expected = 0.5 * sum(((p - p0) ** 2).sum() for p, p0 in zip(moved, reg.theta0, strict=True))
    assert torch.allclose(term, expected)
    term.backward()
    for p, p0 in zip(params, reg.theta0, strict=True):
        assert torch.allclose(p.grad, 2 * 0.5 * (p.detach() - p0))


def test_gradient_steps_on_the_term_reduce_the_distance(make_dqn):
    reg = build_intervention({"name": "l2_init", "coef": 0.1})
    model = make_dqn([reg])
    params = list(model.policy.q_net.parameters())
    with torch.no_grad():
        for p in params:
            p.add_(1.0)

    def distance() -> float:
        return sum(((p - p0) ** 2).sum() for p, p0 in zip(params, reg.theta0, strict=True)).item()

    start = distance()
    optimizer = torch.optim.SGD(params, lr=1.0)
    for _ in range(3):
        optimizer.zero_grad()
        reg.loss(None, None, None).backward()
        optimizer.step()
    assert distance() == pytest.approx(start * 0.8**6)  # each step multiplies θ − θ₀ by 1 − 2·coef·lr


def test_theta0_is_the_snapshot_at_setup_and_survives_state_dict(make_dqn):
    reg = build_intervention({"name": "l2_init"})
    model = make_dqn([reg])
    initial = [p.detach().clone() for p in model.policy.q_net.parameters()]
    model.learn(300)
    assert all(torch.equal(a, b) for a, b in zip(reg.theta0, initial, strict=True))
    assert any(not torch.equal(p, p0) for p, p0 in zip(model.policy.q_net.parameters(), initial, strict=True))
    logged = model.pop_train_stats()
    assert logged["train/l2_init_loss"] > 0.0 and logged["train/l2_init_distance"] > 0.0
    other = build_intervention({"name": "l2_init"})
    make_dqn([other], seed=1)
    other.load_state_dict(reg.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(other.theta0, initial, strict=True))


def test_negative_coef_is_a_user_error():
    with pytest.raises(UserError, match="coef must be >= 0"):
        build_intervention({"name": "l2_init", "coef": -1e-4})
