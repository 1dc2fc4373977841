"""Batch NC1 with a closed-form gradient: the NC regularizer's hot path.

:func:`rlplast.metrics.collapse.nc1` builds its value from general class statistics and lets autograd
differentiate through ~50 small operations; at training-batch sizes (N = 32–256) that per-operation
overhead, not arithmetic, is the cost. :func:`nc1_fused` computes the same value and its gradient
with respect to the features in one straight pass of about 40 operations and no autograd graph.

Notation (kept classes only; a class is kept when it has ``>= n_min`` samples): ``Y`` the ``N×C``
one-hot labels, ``M`` the class means, ``M̃ = diag(k)(I − 1kᵀ/c)M`` the means centred on their
unweighted mean, ``R = H − YM`` the residuals (0 rows for dropped samples), ``U = RM̃ᵀ``,
``G = M̃M̃ᵀ/c``, ``Q = G⁺`` (truncated as in ``nc1``), ``P = UᵀU``, ``n``/``c`` the kept sample and
class counts. Then

    NC1 = Tr(P Q²) / (n c²)

and, with the pseudo-inverse linearised as ``dQ = −Q dG Q`` (exactly ``nc1``'s convention) and
``Σ_{i∈c} r_i = 0`` (so the residuals' dependence on the means drops out),

    ∂NC1/∂H = [ 2·U Q² M̃  +  Y diag(k/n_c) (I − k1ᵀ/c) diag(k) (2·Q² Uᵀ R − (2/c)·B M̃) ] / (n c²),
    B = Q² P Q + Q P Q².

The tests check value and gradient against autograd through ``nc1`` and against finite differences.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

_DT = torch.float64
# Same thresholds as rlplast.metrics.collapse (eigenvalue truncation, "zero scatter").
_EIG_RTOL = 1e-10
_ZERO_SCATTER_RTOL = 1e-24


def nc1_value_and_grad(
    h: Tensor, labels: Tensor, num_classes: int, n_min: int, need_grad: bool = True
) -> tuple[Tensor, Tensor | None]:
    """NC1 of ``h`` grouped by ``labels`` and its gradient with respect to ``h`` (float64, no graph).

    Args:
        h: ``(N, D)`` features (cast to float64; gradients are not tracked).
        labels: ``(N,)`` integer labels in ``[0, num_classes)``.
        num_classes: ``C`` (> 0).
        n_min: classes with fewer samples are dropped.
        need_grad: also return the gradient (else None).

    Returns:
        ``(value, grad)``: 0-dim NC1 (NaN when ``C_eff < 2``, the between-class scatter is zero or
        the features are not finite) and the ``(N, D)`` gradient (zero or non-finite wherever the
        value is NaN; the autograd wrapper zeroes non-finite entries).
    """
    h = h.detach().to(_DT)
    dev = h.device
    classes = torch.arange(num_classes, device=dev)
    y_all = (labels.reshape(-1, 1).to(device=dev, dtype=torch.long) == classes).to(_DT)
    counts = y_all.sum(0)
    keep_f = (counts >= max(int(n_min), 1)).to(_DT)
    y = y_all * keep_f
    sample_keep = y.sum(1, keepdim=True)
    c_eff = keep_f.sum()
    n_eff = sample_keep.sum().clamp_min(1.0)
    c = c_eff.clamp_min(1.0)
    inv_n = (keep_f / counts.clamp_min(1.0)).unsqueeze(1)
    keep_col = keep_f.unsqueeze(1)
    means = (y.T @ h) * inv_n
    mt = (means - means.sum(0) / c) * keep_col
    r = (h - y @ means) * sample_keep
    u = r @ mt.T
    scale = (sample_keep * h.square()).sum() / n_eff

    gram = (mt @ mt.T) / c
    # Non-finite features would make eigh raise: decompose zeros instead and flag the value NaN
    # (x * 0 == 0 is False exactly for NaN and ±inf, so the sum's test covers every entry).
    finite = gram.sum() * 0.0 == 0.0
    evals, evecs = torch.linalg.eigh(torch.where(finite, gram, 0.0))
    lam_max = evals[-1]
    nonzero = lam_max > _ZERO_SCATTER_RTOL * scale
    # Keep the top C_eff − 1 eigenpairs (position >= C − C_eff + 1) that are not round-off.
    keep_eig = (classes + c_eff > num_classes) & (evals >= _EIG_RTOL * lam_max) & nonzero
    inv = torch.where(keep_eig, 1.0 / torch.where(keep_eig, evals, 1.0), 0.0)
    q = (evecs * inv) @ evecs.T
    q2 = q @ q
    p = u.T @ u
    denom = n_eff * c * c
    ok = (c_eff >= 2) & nonzero & finite
    value = torch.where(ok, (p * q2).sum() / denom, float("nan"))
    if not need_grad:
        return value, None

    uq2 = u @ q2
    qpq2 = q @ p @ q2
    e_t = 2.0 * (uq2.T @ r) - (2.0 / c) * ((qpq2 + qpq2.T) @ mt)  # B = Q P Q² + Q² P Q
    v = keep_col * e_t
    v = v - keep_col * (v.sum(0, keepdim=True) / c)
    grad = (2.0 * (uq2 @ mt) + y @ (inv_n * v)) * (ok / denom)
    return value, grad


class _NC1Fused(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, h: Tensor, labels: Tensor, num_classes: int, n_min: int) -> Tensor:
        value, grad = nc1_value_and_grad(h, labels, num_classes, n_min, need_grad=ctx.needs_input_grad[0])
        if grad is not None:
            ctx.save_for_backward(grad)
        ctx.in_dtype = h.dtype
        return value

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        (grad,) = ctx.saved_tensors
        # grad is already 0 where the value is undefined; a zero grad_out (skipped or capped batch)
        # must give exactly 0, never 0 * inf.
        return torch.nan_to_num(grad_out * grad).to(ctx.in_dtype), None, None, None


def nc1_fused(features: Tensor, labels: Tensor, num_classes: int, n_min: int = 1) -> Tensor:
    """:func:`rlplast.metrics.collapse.nc1` with a closed-form backward (value as a 0-dim float64).

    Args:
        features: ``(N, D)`` features (any float dtype; the gradient comes back in that dtype).
        labels: ``(N,)`` integer labels.
        num_classes: ``C``.
        n_min: minimum samples for a class to be kept.
    """
    return _NC1Fused.apply(features.flatten(1), labels, num_classes, n_min)
