"""Batch NC1 with a closed-form gradient: the NC regularizer's hot path.

:func:`rlplast.metrics.collapse.nc1` builds its value from general class statistics and lets autograd
differentiate through ~50 small operations; at training-batch sizes (N = 32–256) that per-operation
overhead, not arithmetic, is the cost. :func:`nc1_fused` computes the same value and its gradient
with respect to the features in one straight pass and adds a single node to the autograd graph.

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

Two implementations of these formulas: :func:`_core_torch` for tensors on an accelerator (stays on
the device; masks instead of branches, no host synchronisation) and :func:`_core_numpy` for CPU
tensors, where torch's per-operation dispatch (≈ 5–10 µs here) would cost several times the
arithmetic; NumPy reads the tensors' own memory, so nothing moves between devices, and undefined
batches return early. The tests check value and gradient of both against autograd through ``nc1``
and against finite differences.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

# Same thresholds as rlplast.metrics.collapse (eigenvalue truncation, "zero scatter").
_EIG_RTOL = 1e-10
_ZERO_SCATTER_RTOL = 1e-24
_NP_DTYPES = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}


def _core_torch(
    h: Tensor, labels: Tensor, num_classes: int, n_min: int, need_grad: bool
) -> tuple[Tensor, Tensor | None]:
    """Value (0-dim) and gradient of float64 ``h`` on its device; NaN value and 0 gradient when undefined."""
    f64 = torch.float64
    classes = torch.arange(num_classes, device=h.device)
    y_all = (labels.reshape(-1, 1) == classes).to(f64)
    counts = y_all.sum(0)
    keep_f = (counts >= max(int(n_min), 1)).to(f64)
    y = y_all * keep_f
    sample_keep = y.sum(1)[:, None]
    c_eff = keep_f.sum()
    n_eff = sample_keep.sum().clamp_min(1.0)
    c = c_eff.clamp_min(1.0)
    inv_n = (keep_f / counts.clamp_min(1.0))[:, None]
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
    v = v - keep_col * (v.sum(0)[None, :] / c)
    grad = torch.where(ok, (2.0 * (uq2 @ mt) + y @ (inv_n * v)) / denom, 0.0)
    return value, grad


_Factors = tuple[np.ndarray, np.ndarray]


def _core_numpy(
    h: np.ndarray, labels: np.ndarray, num_classes: int, n_min: int, need_grad: bool
) -> tuple[float, _Factors | None]:
    """The same formulas on float64 NumPy arrays, restricted to the kept classes, with early exits.

    The gradient comes back factored, ``(L, R)`` with ``grad = L @ R`` (``L`` is ``N×k``, ``R`` is
    ``k×D``, ``k ≤ 2C``): both of its terms are low-rank, so the caller builds the ``N×D`` matrix in
    one product, in the dtype it needs, after scaling the small ``R``.

    Working in the kept classes' coordinates drops the masks: the centring is a plain mean, the
    structural null direction of ``G`` is its smallest eigenpair, and only samples of dropped classes
    need zeroing.
    """
    if num_classes == 2:  # every two-action env: no one-hot matrix, no class-mean matrix
        w1 = labels.reshape(-1).astype(np.float64)
        n1 = float(w1.sum())
        n0 = float(len(w1)) - n1
        if min(n0, n1) < max(int(n_min), 1):
            return _undefined(h, need_grad)
        return _two_classes(h, 1.0 - w1, w1, n0, n1, None, float(np.vdot(h, h)), need_grad)
    onehot = labels.reshape(-1, 1) == np.arange(num_classes)
    counts = onehot.sum(0)
    kept = np.flatnonzero(counts >= max(int(n_min), 1))
    c = len(kept)
    if c < 2:
        return _undefined(h, need_grad)
    all_kept = c == num_classes
    if not all_kept:
        onehot, counts = onehot[:, kept], counts[kept]
    y = onehot.astype(np.float64)
    n = float(counts.sum())
    if not all_kept:
        sample_keep = y.sum(1)
        sq_norms = float(sample_keep @ (h * h).sum(1))
    else:
        sq_norms = float(np.vdot(h, h))
    if c == 2:
        n0, n1 = float(counts[0]), float(counts[1])
        return _two_classes(h, y[:, 0], y[:, 1], n0, n1, sample_keep, sq_norms, need_grad)
    means = (y.T @ h) / counts[:, None]
    r = h - y @ means
    if not all_kept:
        r *= sample_keep[:, None]
    mt = means - means.sum(0) * (1.0 / c)
    gram = (mt @ mt.T) / c
    if not np.isfinite(gram).all():
        return _undefined(h, need_grad)
    evals, evecs = np.linalg.eigh(gram)
    lam_max = float(evals[-1])
    if not lam_max > _ZERO_SCATTER_RTOL * sq_norms / n:
        return _undefined(h, need_grad)
    # The top c − 1 eigenpairs (the smallest is the centring's null direction) that are not round-off.
    top = evals[1:]
    good = top >= _EIG_RTOL * lam_max
    vecs, inv = evecs[:, 1:][:, good], 1.0 / top[good]
    q = (vecs * inv) @ vecs.T
    q2 = (vecs * (inv * inv)) @ vecs.T
    u = r @ mt.T
    p = u.T @ u
    denom = n * c * c
    value = float(np.vdot(p, q2)) / denom
    if not need_grad:
        return value, None
    uq2 = u @ q2
    qpq2 = q @ p @ q2
    e_t = 2.0 * (uq2.T @ r) - (2.0 / c) * ((qpq2 + qpq2.T) @ mt)  # B = Q P Q² + Q² P Q
    v = (e_t - e_t.sum(0) * (1.0 / c)) / counts[:, None]
    return value, (np.hstack([uq2, y]), np.vstack([2.0 * mt, v]) / denom)


def _undefined(h: np.ndarray, need_grad: bool) -> tuple[float, _Factors | None]:
    zeros = (np.zeros((h.shape[0], 1)), np.zeros((1, h.shape[1])))
    return float("nan"), zeros if need_grad else None


def _expand(factors: _Factors, scale: float, dtype: torch.dtype) -> Tensor:
    """``scale · L @ R`` as a tensor of ``dtype`` (one ``N×D`` product, no ``N×D`` temporaries)."""
    left, right = factors
    np_dtype = _NP_DTYPES.get(dtype, np.float64)
    grad = torch.from_numpy(left.astype(np_dtype) @ (right * scale).astype(np_dtype))
    return grad if grad.dtype == dtype else grad.to(dtype)


def _two_classes(
    h: np.ndarray,
    w0: np.ndarray,
    w1: np.ndarray,
    n0: float,
    n1: float,
    keep: np.ndarray | None,
    sq_norms: float,
    need_grad: bool,
) -> tuple[float, _Factors | None]:
    """Two kept classes (every two-action env): ``Σ_B`` has rank one and everything is closed-form.

    ``w0``/``w1`` are the 0/1 indicators of the two kept classes (``keep = w0 + w1``, None when no
    sample is dropped). With ``d = μ₁ − μ₀``, ``δ = ‖d‖²``, ``s_i = r_iᵀd`` (the projection ``h_iᵀd``
    centred within its class; 0 for dropped samples) and ``S = Σ s_i²``: ``Σ_B = ddᵀ/4``,
    ``Σ_B⁺ = 4ddᵀ/δ²`` and ``NC1 = 2S/(nδ²)``. Its gradient, ``σ_i = 1/n₁`` for class 1, ``−1/n₀``
    for class 0 (``∂d/∂h_i``) and 0 for dropped samples, is

        ∂NC1/∂h_i = 4/(nδ²) · [ s_i d + σ_i (Rᵀs − 2S d/δ) ]

    (the residuals' dependence on the means cancels because ``Σ_{i∈c} s_i = 0``, which also gives
    ``Rᵀs = Hᵀs``). No ``N×D`` array is formed: about twenty NumPy calls on vectors.
    """
    mu0 = (w0 @ h) / n0
    d = (w1 @ h) / n1 - mu0
    delta = float(d @ d)
    n = n0 + n1
    # Zero-scatter rule of the general path: λ_max(Σ_B) = δ/4 against the mean squared norm.
    if not (math.isfinite(delta) and delta / 4.0 > _ZERO_SCATTER_RTOL * sq_norms / n):
        return _undefined(h, need_grad)
    p = h @ d
    m0 = float(w0 @ p) / n0
    s = p - m0 - w1 * (float(w1 @ p) / n1 - m0)
    if keep is not None:
        s *= keep
    big_s = float(s @ s)
    scale = 4.0 / (n * delta * delta)
    value = 0.5 * scale * big_s
    if not need_grad:
        return value, None
    sigma = w1 * (1.0 / n1) - w0 * (1.0 / n0)
    g_d = h.T @ s - (2.0 * big_s / delta) * d
    return value, (np.stack([s, sigma], 1), scale * np.stack([d, g_d]))


def _use_numpy(h: Tensor, backend: str) -> bool:
    if backend not in ("auto", "numpy", "torch"):
        raise ValueError(f"backend must be auto, numpy or torch, got {backend!r}")
    return backend == "numpy" or (backend == "auto" and h.device.type == "cpu")


def _numpy_value_and_factors(
    h: Tensor, labels: Tensor, num_classes: int, n_min: int, need_grad: bool
) -> tuple[float, _Factors | None]:
    """:func:`_core_numpy` on CPU tensors' own memory (features read as float64)."""
    h_np = (h.detach() if h.requires_grad else h).numpy().astype(np.float64, copy=False)
    labels_np = (labels.detach() if labels.requires_grad else labels).numpy().reshape(-1)
    with np.errstate(all="ignore"):  # overflowing features give a non-finite value, not warnings
        return _core_numpy(h_np, labels_np, num_classes, n_min, need_grad)


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
    if _use_numpy(h, backend):
        value, factors = _numpy_value_and_factors(h, labels, num_classes, n_min, need_grad)
        grad = None if factors is None else _expand(factors, 1.0, torch.float64)
        return torch.tensor(value, dtype=torch.float64), grad
    labels = labels.reshape(-1).to(device=h.device, dtype=torch.long)
    return _core_torch(h.detach().to(torch.float64), labels, num_classes, n_min, need_grad)


def _penalty_parts(
    h: Tensor,
    labels: Tensor,
    num_classes: int,
    n_min: int,
    coef: float | None,
    cap: float,
    backend: str,
    need_grad: bool,
) -> tuple[float | Tensor, float | Tensor, Tensor | None]:
    """``(out, NC1, ∂out/∂h)`` with ``out = NC1`` (``coef=None``) or ``−coef·min(NC1, cap)``.

    Where NC1 is not finite ``out`` is NaN (plain NC1) or 0 (the penalty) and the gradient is 0;
    above the cap the penalty's gradient is 0. The NumPy path returns Python floats and ``None``
    for a zero gradient (no torch arithmetic at all); the torch path returns 0-dim tensors and a
    gradient tensor (zeros where it is 0: no branch on device values). The gradient has ``h``'s dtype.
    """
    if _use_numpy(h, backend):
        value, factors = _numpy_value_and_factors(h, labels, num_classes, n_min, need_grad)
        ok = math.isfinite(value)
        if coef is None:
            out, factor = value, float(ok)
        else:
            out = -coef * min(value, cap) if ok else 0.0
            factor = -coef if ok and value <= cap else 0.0
        if factors is None or factor == 0.0:
            return out, value, None
        return out, value, _expand(factors, factor, h.dtype)
    value_t, grad = nc1_value_and_grad(h, labels, num_classes, n_min, need_grad, backend)
    ok_t = torch.isfinite(value_t)
    if coef is None:
        out_t, factor_t = value_t.clone(), ok_t.to(torch.float64)
    else:
        out_t = torch.where(ok_t, torch.clamp(value_t, max=cap) * -coef, 0.0).to(h.dtype)
        factor_t = torch.where(ok_t & (value_t <= cap), -coef, 0.0)
    return out_t, value_t, None if grad is None else (grad * factor_t).to(h.dtype)


class _NC1Penalty(torch.autograd.Function):
    """``(out, NC1)`` of :func:`_penalty_parts` as one autograd node (the gradient flows via ``out``)."""

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
        out, value, grad = _penalty_parts(h, labels, num_classes, n_min, coef, cap, backend, need_grad)
        out_dtype = torch.float64 if coef is None else h.dtype
        out_t = torch.as_tensor(out, dtype=out_dtype)
        value_t = torch.as_tensor(value, dtype=torch.float64)
        if need_grad:
            ctx.save_for_backward(torch.zeros_like(h) if grad is None else grad)
        ctx.mark_non_differentiable(value_t)
        return out_t, value_t

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


def nc1_penalty_grad(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    n_min: int,
    coef: float,
    cap: float,
    backend: str = "auto",
) -> tuple[float | Tensor, Tensor | None]:
    """NC1 and the gradient of :func:`nc1_penalty`'s term, without building any autograd graph.

    For callers that add the gradient to ``features``' own gradient (a tensor hook) instead of adding
    the term to a loss: the same update at a fraction of the per-step cost, since nothing is
    recorded for autograd and no extra backward node runs.

    Returns:
        ``(nc1, grad)``: NC1 as a Python float (CPU tensors, NumPy backend) or a 0-dim float64 tensor
        on the features' device (NaN where undefined), and ``∂term/∂features`` in ``features``'
        dtype and shape, or None where it is exactly zero (NumPy backend only; the torch backend
        returns zeros rather than branch on device values).
    """
    h = features.detach()
    if h.dim() != 2:
        h = h.flatten(1)
    _, value, grad = _penalty_parts(h, labels, num_classes, n_min, float(coef), float(cap), backend, True)
    return value, None if grad is None else grad.view_as(features)
