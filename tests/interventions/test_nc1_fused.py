"""The NC regularizer's closed-form NC1 gradient against autograd through the metric's ``nc1``."""

from __future__ import annotations

import math

import pytest
import torch

from rlplast.interventions._nc1_fused import nc1_fused, nc1_penalty, nc1_value_and_grad
from rlplast.metrics.collapse import nc1

# (device, backend): NumPy serves CPU tensors by default; the torch code is what runs on a GPU.
BACKENDS = [("cpu", "numpy"), ("cpu", "torch")] + ([("cuda", "torch")] if torch.cuda.is_available() else [])


def _data(n: int, d: int, c: int, seed: int, offset: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = 2.0 * torch.randn(c, d, generator=g, dtype=torch.float64)
    # Imbalanced labels: class k drawn with probability ∝ k + 1.
    labels = torch.multinomial(torch.arange(1.0, c + 1), n, replacement=True, generator=g)
    features = centres[labels] + torch.randn(n, d, generator=g, dtype=torch.float64) + offset
    return features, labels


@pytest.mark.parametrize(("device", "backend"), BACKENDS)
@pytest.mark.parametrize(
    ("n", "d", "c", "n_min"),
    [
        (32, 64, 2, 2),  # CartPole-sized training batch
        (256, 64, 2, 2),
        (40, 5, 6, 2),
        (64, 3, 6, 1),  # D < C - 1: Σ_B rank-deficient beyond the structural null space
        (100, 20, 18, 3),
        (30, 8, 4, 8),  # some classes dropped by n_min
    ],
)
def test_value_and_gradient_match_autograd_through_nc1(device, backend, n, d, c, n_min):
    features, labels = _data(n, d, c, seed=n + d + c)
    features, labels = features.to(device), labels.to(device)
    ref_in = features.clone().requires_grad_(True)
    ref = nc1(ref_in, labels, c, n_min)
    (ref_grad,) = torch.autograd.grad(ref, ref_in)
    fused_in = features.clone().requires_grad_(True)
    value = nc1_fused(fused_in, labels, c, n_min, backend=backend)
    (grad,) = torch.autograd.grad(value, fused_in)
    assert value.device == grad.device == features.device
    tol = 1e-10 if device == "cpu" else 1e-8
    assert value.dtype == torch.float64
    assert value.item() == pytest.approx(ref.item(), rel=tol)
    assert torch.allclose(grad, ref_grad, rtol=1e-8, atol=tol * ref_grad.abs().max().item())


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_gradient_matches_finite_differences(backend):
    features, labels = _data(12, 4, 3, seed=7)
    features.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda h: nc1_fused(h, labels, 3, 2, backend=backend), (features,), eps=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("cap", [1e3, 1e-3], ids=["below_cap", "above_cap"])
def test_penalty_is_minus_coef_times_capped_nc1_with_its_gradient(backend, cap):
    features, labels = _data(24, 6, 3, seed=11)
    ref_in = features.clone().requires_grad_(True)
    ref = -0.3 * torch.clamp(nc1(ref_in, labels, 3, 2), max=cap)
    (ref_grad,) = torch.autograd.grad(ref, ref_in)
    h = features.float().requires_grad_(True)
    term, value = nc1_penalty(h, labels, 3, 2, coef=0.3, cap=cap, backend=backend)
    assert term.dtype == torch.float32 and value.dtype == torch.float64 and not value.requires_grad
    assert term.item() == pytest.approx(ref.item(), rel=1e-6)
    assert value.item() == pytest.approx(nc1(features, labels, 3, 2).item(), rel=1e-6)
    (grad,) = torch.autograd.grad(term, h)
    assert grad.dtype == torch.float32
    assert torch.allclose(
        grad.double(), ref_grad, rtol=1e-4, atol=1e-6 * max(ref_grad.abs().max().item(), 1.0)
    )
    if cap < value.item():
        assert torch.count_nonzero(grad) == 0


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_known_answer_two_points_per_class(backend):
    # Class means ±e1, residuals ±(a, s): Σ_B = e1e1ᵀ, Σ_W = [[a², as], [as, s²]].
    a, s = 0.3, 0.5
    h = torch.tensor([[1 + a, s], [1 - a, -s], [-1 + a, s], [-1 - a, -s]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    value, grad = nc1_value_and_grad(h, labels, 2, 1, backend=backend)
    # Tr(Σ_W Σ_B⁺) = a², NC1 = a² / C_eff.
    assert value.item() == pytest.approx(a * a / 2, rel=1e-12)
    assert grad is not None and grad.shape == h.shape


@pytest.mark.parametrize("labels", [[0] * 8, [0] * 7 + [1]], ids=["one_class", "second_class_below_n_min"])
def test_undefined_batches_give_nan_and_zero_gradient(labels):
    features = torch.randn(8, 4, dtype=torch.float64, requires_grad=True)
    value = nc1_fused(features, torch.tensor(labels), 2, 2)
    assert math.isnan(value.item())
    (grad,) = torch.autograd.grad(torch.nan_to_num(value), features)
    assert torch.count_nonzero(grad) == 0


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_features_give_nan_and_finite_gradient(bad, backend):
    features = torch.randn(8, 4, dtype=torch.float64)
    features[3, 1] = bad
    features.requires_grad_(True)
    value = nc1_fused(features, torch.tensor([0, 1] * 4), 2, 2, backend=backend)
    assert math.isnan(value.item())
    (grad,) = torch.autograd.grad(torch.nan_to_num(value), features)
    assert torch.isfinite(grad).all() and torch.count_nonzero(grad) == 0


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_all_zero_features_give_nan(backend):
    value, grad = nc1_value_and_grad(torch.zeros(8, 4), torch.tensor([0, 1] * 4), 2, 1, backend=backend)
    assert math.isnan(value.item())
    assert grad is not None and torch.count_nonzero(grad) == 0


def test_float32_features_get_a_float32_gradient_without_grad_tracking_inside():
    features, labels = _data(32, 16, 3, seed=3)
    h = features.float().requires_grad_(True)
    value = nc1_fused(h, labels, 3, 2)
    value.backward()
    assert h.grad is not None and h.grad.dtype == torch.float32
    ref_in = features.float().requires_grad_(True)
    nc1(ref_in, labels, 3, 2).backward()
    assert torch.allclose(h.grad, ref_in.grad, rtol=1e-4, atol=1e-6 * ref_in.grad.abs().max().item())


@pytest.mark.parametrize(("device", "backend"), BACKENDS)
@pytest.mark.parametrize(
    "counts",
    [(10, 1, 12, 0), (9, 2, 7, 8, 1), (20, 20)],
    ids=["two_kept_of_four", "three_kept_of_five", "two_of_two"],
)
def test_dropped_classes_match_autograd(device, backend, counts):
    # n_min = 3 drops the classes with fewer samples (and their samples) before anything else.
    labels = torch.cat([torch.full((k,), i) for i, k in enumerate(counts)])
    g = torch.Generator().manual_seed(len(labels))
    centres = torch.randn(len(counts), 5, generator=g, dtype=torch.float64)
    features = (centres[labels] + 0.5 * torch.randn(len(labels), 5, generator=g, dtype=torch.float64)).to(
        device
    )
    labels = labels.to(device)
    ref_in = features.clone().requires_grad_(True)
    ref = nc1(ref_in, labels, len(counts), 3)
    (ref_grad,) = torch.autograd.grad(ref, ref_in)
    fused_in = features.clone().requires_grad_(True)
    value = nc1_fused(fused_in, labels, len(counts), 3, backend=backend)
    (grad,) = torch.autograd.grad(value, fused_in)
    assert value.item() == pytest.approx(ref.item(), rel=1e-10)
    assert torch.allclose(grad, ref_grad, rtol=1e-8, atol=1e-10 * ref_grad.abs().max().item())
    dropped = torch.isin(labels, torch.tensor([i for i, k in enumerate(counts) if k < 3], device=device))
    assert torch.count_nonzero(grad[dropped]) == 0
