"""The NC regularizer: value, gradient, NaN-free skipping, and that it raises NC1."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from rlplast.errors import UserError
from rlplast.interventions import build_intervention
from rlplast.metrics.collapse import nc1, nc1_quotient

FUNCS = {"pinv": nc1, "quotient": nc1_quotient}


def _blobs(n_per_class: int, num_classes: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=g, dtype=torch.float64)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    features = centres[labels] + 0.7 * torch.randn(len(labels), dim, generator=g, dtype=torch.float64)
    return features, labels


@pytest.mark.parametrize("variant", ["pinv", "quotient"])
def test_term_is_minus_coef_times_nc1(variant):
    reg = build_intervention({"name": "nc_regularizer", "variant": variant, "coef": 0.05})
    features, labels = _blobs(5, 3, 4, seed=0)
    expected = -0.05 * FUNCS[variant](features, labels, 3, 2)
    assert torch.allclose(reg.term(features, labels, 3), expected)


@pytest.mark.parametrize("variant", ["pinv", "quotient"])
def test_gradient_matches_finite_differences(variant):
    reg = build_intervention({"name": "nc_regularizer", "variant": variant, "coef": 0.3})
    features, labels = _blobs(4, 3, 5, seed=1)
    features.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda h: reg.term(h, labels, 3), (features,), eps=1e-6, atol=1e-6)


def test_cap_clips_value_and_gradient():
    reg = build_intervention({"name": "nc_regularizer", "cap": 1e-3, "coef": 1.0})
    features, labels = _blobs(5, 3, 4, seed=2)
    features.requires_grad_(True)
    term = reg.term(features, labels, 3)
    assert term.item() == pytest.approx(-1e-3)
    term.backward()
    assert torch.count_nonzero(features.grad) == 0


@pytest.mark.parametrize("labels", [[0] * 8, [0] * 7 + [1]], ids=["one_class", "second_class_below_n_min"])
def test_batch_without_two_classes_contributes_zero_and_is_counted(labels):
    reg = build_intervention({"name": "nc_regularizer", "n_min": 2})
    features = torch.randn(8, 4, requires_grad=True)
    term = reg.term(features, torch.tensor(labels), 2)
    assert term.item() == 0.0
    term.backward()
    assert torch.isfinite(features.grad).all()
    assert torch.count_nonzero(features.grad) == 0
    good_features, good_labels = _blobs(4, 2, 4, seed=3)
    reg.term(good_features.float(), good_labels, 2)
    logged = reg.log_values()
    assert logged["train/nc_reg_skipped"] == 1.0
    assert logged["train/nc1_batch"] == pytest.approx(nc1(good_features, good_labels, 2, 2).item(), rel=1e-5)
    assert logged["train/nc_reg_loss"] == pytest.approx(-0.05 * logged["train/nc1_batch"] / 2, rel=1e-5)
    assert reg.log_values() == {}  # statistics restart after each logging step


def test_all_zero_features_give_zero_term_and_finite_gradient():
    reg = build_intervention({"name": "nc_regularizer"})
    features = torch.zeros(8, 4, requires_grad=True)
    term = reg.term(features, torch.tensor([0, 1] * 4), 2)
    term.backward()
    assert term.item() == 0.0
    assert torch.isfinite(features.grad).all()
    assert math.isnan(reg.log_values()["train/nc1_batch"])


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"coef": -0.1}, "coef must be >= 0"),
        ({"cap": 0.0}, "cap must be > 0"),
        ({"variant": "svd"}, "pinv, quotient"),
        ({"n_min": 0}, "n_min must be >= 1"),
    ],
)
def test_validation(params, match):
    with pytest.raises(UserError, match=match):
        build_intervention({"name": "nc_regularizer", **params})


def _train_classifier(use_reg: bool) -> float:
    torch.manual_seed(0)
    x, y = _blobs(64, 4, 8, seed=4)
    x = x.float()
    body = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU())
    head = nn.Linear(16, 4)
    optimizer = torch.optim.Adam([*body.parameters(), *head.parameters()], lr=1e-2)
    reg = build_intervention({"name": "nc_regularizer", "coef": 0.05})
    g = torch.Generator().manual_seed(5)
    for _ in range(100):
        idx = torch.randint(0, len(y), (64,), generator=g)
        h = body(x[idx])
        loss = F.cross_entropy(head(h), y[idx])
        if use_reg:
            loss = loss + reg.term(h, y[idx], 4)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return nc1(body(x), y, 4).item()


def test_regularizer_raises_nc1_on_a_synthetic_classification_problem():
    plain, regularized = _train_classifier(False), _train_classifier(True)
    assert regularized > 1.5 * plain, (plain, regularized)


def test_logged_means_survive_on_device_folding(monkeypatch):
    reg = build_intervention({"name": "nc_regularizer", "coef": 0.1, "cap": 1.0})
    monkeypatch.setattr(type(reg), "_FOLD", 3)
    batches = [_blobs(4, 2, 3, seed=s) for s in range(7)]
    batches.insert(2, (torch.randn(8, 3, dtype=torch.float64), torch.zeros(8, dtype=torch.long)))
    values = [nc1(f, y, 2, 2).item() for f, y in batches]
    for f, y in batches:
        reg.term(f, y, 2)
    logged = reg.log_values()
    finite = [v for v in values if math.isfinite(v)]
    assert logged["train/nc_reg_skipped"] == 1.0
    assert logged["train/nc1_batch"] == pytest.approx(sum(finite) / len(finite), rel=1e-9)
    expected_loss = sum(-0.1 * min(v, 1.0) for v in finite) / len(values)
    assert logged["train/nc_reg_loss"] == pytest.approx(expected_loss, rel=1e-9)
    assert reg.skipped_total == 1


def _grads_after(reg, head, body, x, actions, targets, via_hook: bool) -> list[torch.Tensor]:
    """Parameter gradients of one DQN-like step: TD loss plus the regularizer, either way."""
    from stable_baselines3.common.type_aliases import ReplayBufferSamples

    for p in [*body.parameters(), *head.parameters()]:
        p.grad = None
    h = body(x)
    q = head(h)
    loss = F.smooth_l1_loss(q.gather(1, actions), targets)
    if via_hook:
        batch = ReplayBufferSamples(x, actions, x, torch.zeros_like(targets), targets)
        assert reg.loss(batch, h, q) is None  # nothing is added to the loss graph
    else:
        loss = loss + reg.term(h, actions, q.shape[1])
    loss.backward()
    return [p.grad.clone() for p in [*body.parameters(), *head.parameters()]]


@pytest.mark.parametrize(
    ("num_actions", "cap", "spread"),
    [(2, 200.0, 1.0), (4, 200.0, 1.0), (2, 1e-3, 1.0), (2, 200.0, 0.0)],
    ids=["two_actions", "four_actions", "above_cap", "undefined_batch"],
)
def test_training_hook_gives_the_same_update_as_adding_the_term(num_actions, cap, spread):
    """loss() adds ∂term/∂features through a hook: the gradients equal those of loss + term()."""
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU())
    head = nn.Linear(8, num_actions)
    g = torch.Generator().manual_seed(1)
    x = spread * torch.randn(64, 6, generator=g)
    actions = torch.randint(0, num_actions, (64, 1), generator=g)
    targets = torch.randn(64, 1, generator=g)
    regs = [build_intervention({"name": "nc_regularizer", "coef": 0.5, "cap": cap}) for _ in range(2)]
    plain = [
        p.clone()
        for p in _grads_after(
            build_intervention({"name": "nc_regularizer", "coef": 0.0}),
            head,
            body,
            x,
            actions,
            targets,
            False,
        )
    ]
    hooked = _grads_after(regs[0], head, body, x, actions, targets, True)
    added = _grads_after(regs[1], head, body, x, actions, targets, False)
    for a, b in zip(hooked, added, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    regularizer_acts = any(not torch.allclose(a, b) for a, b in zip(hooked, plain, strict=True))
    assert regularizer_acts is (cap > 1.0 and spread > 0.0)  # the comparison can fail
    logged_hook, logged_term = regs[0].log_values(), regs[1].log_values()
    assert logged_hook.keys() == logged_term.keys()
    for key, value in logged_hook.items():
        assert value == pytest.approx(logged_term[key], rel=1e-9, nan_ok=True), key
