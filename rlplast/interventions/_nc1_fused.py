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

The same code runs on NumPy arrays for CPU tensors (at these sizes torch's per-operation dispatch
costs several times NumPy's; the arrays share the tensors' memory, so nothing is moved) and on torch
tensors on any other device, where it stays on the device without a host synchronisation. The tests
check value and gradient of both backends against autograd through ``nc1`` and against finite
differences.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor

# Same thresholds as rlplast.metrics.collapse (eigenvalue truncation, "zero scatter").
_EIG_RTOL = 1e-10
_ZERO_SCATTER_RTOL = 1e-24


def _core(
    xp: ModuleType, h: Any, labels: Any, num_classes: int, n_min: int, need_grad: bool
) -> tuple[Any, Any]:
    """Value and gradient on float64 ``h`` with array namespace ``xp`` (``numpy`` or ``torch``)."""
    if xp is np:
        f64 = lambda a: a.astype(np.float64)  # noqa: E731
        classes = np.arange(num_classes)
    else:
        f64 = lambda a: a.to(torch.float64)  # noqa: E731
        classes = torch.arange(num_classes, device=h.device)
    y_all = f64(labels.reshape(-1, 1) == classes)
    counts = y_all.sum(0)
    keep_f = f64(counts >= max(int(n_min), 1))
    y = y_all * keep_f
    sample_keep = y.sum(1)[:, None]
    c_eff = keep_f.sum()
    n_eff = sample_keep.sum().clip(min=1.0)
    c = c_eff.clip(min=1.0)
    inv_n = (keep_f / counts.clip(min=1.0))[:, None]
    keep_col = keep_f[:, None]
    means = (y.T @ h) * inv_n
    mt = (means - means.sum(0) / c) * keep_col
    r = (h - y @ means) * sample_keep
    u = r @ mt.T
    scale = (sample_keep * (h * h)).sum() / n_eff

    gram = (mt @ mt.T) / c
    # Non-finite features would make eigh fail: decompose zeros instead and flag the value NaN
    # (x * 0 == 0 is False exactly for NaN and ±inf, so the sum's test covers every entry).
    finite = gram.sum() * 0.0 == 0.0
    evals, evecs = xp.linalg.eigh(xp.where(finite, gram, 0.0))
    lam_max = evals[-1]
    nonzero = lam_max > _ZERO_SCATTER_RTOL * scale
    # Keep the top C_eff − 1 eigenpairs (position >= C − C_eff + 1) that are not round-off.
    keep_eig = (classes + c_eff > num_classes) & (evals >= _EIG_RTOL * lam_max) & nonzero
    inv = xp.where(keep_eig, 1.0 / xp.where(keep_eig, evals, 1.0), 0.0)
    q = (evecs * inv) @ evecs.T
    q2 = q @ q
    p = u.T @ u
    denom = n_eff * c * c
    ok = (c_eff >= 2) & nonzero & finite
    value = xp.where(ok, (p * q2).sum() / denom, float("nan"))
    if not need_grad:
        return value, None

    uq2 = u @ q2
    qpq2 = q @ p @ q2
    e_t = 2.0 * (uq2.T @ r) - (2.0 / c) * ((qpq2 + qpq2.T) @ mt)  # B = Q P Q² + Q² P Q
    v = keep_col * e_t
    v = v - keep_col * (v.sum(0)[None, :] / c)
    grad = xp.where(ok, (2.0 * (uq2 @ mt) + y @ (inv_n * v)) / denom, 0.0)
    return value, grad


def nc1_value_and_grad(
    h: Tensor, labels: Tensor, num_classes: int, n_min: int, need_grad: bool = True, backend: str = "auto"
) -> tuple[Tensor, Tensor | None]:
    """NC1 of ``h`` grouped by ``labels`` and its gradient with respect to ``h`` (float64, no graph).

    Args:
        h: ``(N, D)`` features (read as float64; gradients are not tracked).
        labels: ``(N,)`` integer labels in ``[0, num_classes)``.
        num_classes: ``C`` (> 0).
        n_min: classes with fewer samples are dropped.
        need_grad: also return the gradient (else None).
        backend: ``"numpy"`` (CPU tensors only), ``"torch"``, or ``"auto"`` (NumPy on CPU).

    Returns:
        ``(value, grad)``: 0-dim float64 NC1 (NaN when ``C_eff < 2``, the between-class scatter is
        zero or the features are not finite) and the float64 ``(N, D)`` gradient on ``h``'s device
        (zero wherever the value is NaN).
    """
    h = h.detach()
    use_numpy = backend == "numpy" or (backend == "auto" and h.device.type == "cpu")
    if use_numpy:
        h_np = h.numpy().astype(np.float64, copy=False)
        with np.errstate(all="ignore"):  # non-finite features give a NaN value, not warnings
            value, grad = _core(np, h_np, labels.detach().reshape(-1).numpy(), num_classes, n_min, need_grad)
        return torch.tensor(float(value), dtype=torch.float64), (
            None if grad is None else torch.from_numpy(grad)
        )
    labels = labels.reshape(-1).to(device=h.device, dtype=torch.long)
    return _core(torch, h.to(torch.float64), labels, num_classes, n_min, need_grad)


class _NC1Penalty(torch.autograd.Function):
    """``(out, NC1)`` with ``out = NC1`` (``coef=None``) or ``−coef·min(NC1, cap)``; grad via ``out``."""

    @staticmethod
    def forward(
        ctx: Any,
        h: Tensor,
        labels: Tensor,
        num_classes: int,
        n_min: int,
        coef: float | None,
        cap: float,
        backend: str,
    ) -> tuple[Tensor, Tensor]:
        need_grad = ctx.needs_input_grad[0]
        value, grad = nc1_value_and_grad(h, labels, num_classes, n_min, need_grad, backend)
        ok = torch.isfinite(value)
        if coef is None:  # the plain NC1: NaN where undefined, with a zero gradient there
            out, factor = value.clone(), ok.to(value.dtype)
        else:
            out = torch.where(ok, torch.clamp(value, max=cap) * -coef, 0.0).to(h.dtype)
            factor = torch.where(ok & (value <= cap), -coef, 0.0)
        if grad is not None:
            ctx.save_for_backward((grad * factor).to(h.dtype))
        ctx.mark_non_differentiable(value)
        return out, value

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor, _grad_value: Tensor | None) -> tuple[Tensor | None, ...]:
        grad = ctx.saved_tensors[0] * grad_out if ctx.needs_input_grad[0] else None
        return grad, None, None, None, None, None, None


def nc1_fused(
    features: Tensor, labels: Tensor, num_classes: int, n_min: int = 1, backend: str = "auto"
) -> Tensor:
    """:func:`rlplast.metrics.collapse.nc1` with a closed-form backward (value as a 0-dim float64).

    Where NC1 is undefined the value is NaN and the gradient is 0.

    Args:
        features: ``(N, D)`` features (any float dtype; the gradient comes back in that dtype).
        labels: ``(N,)`` integer labels.
        num_classes: ``C``.
        n_min: minimum samples for a class to be kept.
        backend: see :func:`nc1_value_and_grad`.
    """
    return _NC1Penalty.apply(features.flatten(1), labels, num_classes, n_min, None, 0.0, backend)[0]


def nc1_penalty(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    n_min: int,
    coef: float,
    cap: float,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """The NC regularizer's loss term ``−coef·min(NC1, cap)`` (0 where NC1 is undefined) and NC1.

    One autograd node: the term's gradient is ``−coef·∂NC1/∂h`` below the cap and 0 above it or
    where NC1 is undefined.

    Returns:
        ``(term, nc1)``: the term in ``features``' dtype (differentiable) and the 0-dim float64 NC1
        (NaN where undefined; not differentiable).
    """
    return _NC1Penalty.apply(
        features.flatten(1), labels, num_classes, n_min, float(coef), float(cap), backend
    )
