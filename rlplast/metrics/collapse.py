"""Neural-collapse metrics (NC1-NC4) on penultimate features, classes = actions.

All functions are pure, batched and device-resident: they cast inputs to float64, use masking
instead of Python branches on tensor values, never synchronise with the host and return 0-dim
tensors (``counts`` is 1-D). Classes with fewer than ``n_min`` samples are dropped from every
quantity (their samples too); ``C_eff`` is the number of kept classes.

Global mean: every metric, NC1's ``Σ_B`` included, uses the *unweighted* mean of the kept class
means, ``μ_G = (1/C_eff) Σ_c μ_c``. With imbalanced classes (normal in RL) this keeps one frequent
action from dominating the geometry, and it makes the centred means sum to zero, so
``rank(Σ_B) ≤ C_eff − 1`` holds exactly, as the truncated pseudo-inverse assumes.

When ``C_eff < 2`` every NC value is NaN (never an exception). Other deliberate NaNs: a zero
between-class scatter (all kept class means equal, e.g. all-zero features) makes NC1, the NC1
quotient, NC2 of the means and NC3 NaN; an all-zero ``W`` makes the ``W`` parts NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rlplast.metrics.registry import METRICS, MetricContext

__all__ = [
    "ClassStats",
    "class_stats",
    "collapse_metrics",
    "nc1",
    "nc1_quotient",
    "nc2_equiangular",
    "nc2_equinorm",
    "nc2_etf_error",
    "nc2_maxangle",
    "nc3",
    "nc4_mismatch",
]

_DT = torch.float64
# Eigenvalues of Σ_B below this fraction of the largest are treated as zero (spec §2).
_EIG_RTOL = 1e-10
# Σ_B counts as zero when its largest eigenvalue is below this fraction of E‖h‖²: float64 noise in
# the centred means of coinciding classes is ~1e-32 relative, any real separation is far above.
_ZERO_SCATTER_RTOL = 1e-24


@dataclass(frozen=True)
class ClassStats:
    """Per-class statistics shared by the NC metrics (all float64, on the features' device).

    Attributes:
        features: ``(N, D)`` features cast to float64.
        onehot: ``(N, C)`` one-hot labels restricted to kept classes (rows of dropped samples are 0).
        counts: ``(C,)`` int64 samples per class (all classes, before dropping).
        keep: ``(C,)`` bool mask of kept classes (``count >= max(n_min, 1)``).
        keep_f: ``keep`` as float64.
        sample_keep: ``(N,)`` float64 mask of samples whose class is kept.
        c_eff: 0-dim float64 number of kept classes.
        n_eff: 0-dim float64 number of kept samples.
        means: ``(C, D)`` class means (rows of dropped classes are 0 and masked everywhere).
        global_mean: ``(D,)`` unweighted mean of the kept class means.
        centred_means: ``(C, D)`` ``μ_c − μ_G`` for kept classes, 0 rows for dropped ones.
        centred: ``(N, D)`` within-class-centred features ``h_i − μ_{y_i}`` (rows of dropped samples
            are meaningless: mask them with ``sample_keep``).
        within_sq: ``(N,)`` ``‖h_i − μ_{y_i}‖²``, 0 for dropped samples.
        scale: 0-dim mean squared feature norm over kept samples (reference scale for "zero").
    """

    features: Tensor
    onehot: Tensor
    counts: Tensor
    keep: Tensor
    keep_f: Tensor
    sample_keep: Tensor
    c_eff: Tensor
    n_eff: Tensor
    means: Tensor
    global_mean: Tensor
    centred_means: Tensor
    centred: Tensor
    within_sq: Tensor
    scale: Tensor

    @property
    def valid(self) -> Tensor:
        """0-dim bool: at least two kept classes."""
        return self.c_eff >= 2


def class_stats(features: Tensor, labels: Tensor, num_classes: int, n_min: int = 1) -> ClassStats:
    """Compute counts, kept-class mask, class means and centred quantities in one pass.

    Args:
        features: ``(N, D)`` penultimate features (any float dtype, any device).
        labels: ``(N,)`` integer class labels in ``[0, num_classes)``; labels outside that range are
            ignored (their samples count for no class).
        num_classes: number of classes ``C`` (the action count).
        n_min: classes with fewer samples are dropped (with their samples).

    Returns:
        A :class:`ClassStats`.
    """
    h = features.flatten(1).to(_DT)
    labels = labels.reshape(-1).to(device=h.device, dtype=torch.long)
    classes = torch.arange(num_classes, device=h.device)
    # Comparison one-hot instead of bincount/one_hot: no device-side range check, no host sync.
    onehot_all = (labels[:, None] == classes[None, :]).to(_DT)
    counts_f = onehot_all.sum(0)
    keep = counts_f >= max(int(n_min), 1)
    keep_f = keep.to(_DT)
    onehot = onehot_all * keep_f
    sample_keep = onehot.sum(1)
    c_eff = keep_f.sum()
    n_eff = sample_keep.sum()
    sums = onehot.T @ h
    means = sums / counts_f.clamp_min(1.0)[:, None] * keep_f[:, None]
    global_mean = means.sum(0) / c_eff.clamp_min(1.0)
    centred_means = (means - global_mean) * keep_f[:, None]
    own_means = means.index_select(0, labels.clamp(0, max(num_classes - 1, 0))) if num_classes else h
    # Explicit centring (not ‖h‖² − ‖μ‖²) keeps Tr Σ_W accurate for nearly collapsed features.
    centred = h - own_means
    within_sq = torch.linalg.vector_norm(centred, dim=1).square() * sample_keep
    # E‖h‖² = Tr Σ_W + Σ_c n_c ‖μ_c‖² / N, without another pass over the features.
    mean_sq = (counts_f * keep_f * means.square().sum(1)).sum()
    scale = (within_sq.sum() + mean_sq) / n_eff.clamp_min(1.0)
    return ClassStats(
        features=h,
        onehot=onehot,
        counts=counts_f.to(torch.long),
        keep=keep,
        keep_f=keep_f,
        sample_keep=sample_keep,
        c_eff=c_eff,
        n_eff=n_eff,
        means=means,
        global_mean=global_mean,
        centred_means=centred_means,
        centred=centred,
        within_sq=within_sq,
        scale=scale,
    )


def _nan_like(x: Tensor) -> Tensor:
    return torch.full_like(x, float("nan"))


def _where_valid(cond: Tensor, value: Tensor) -> Tensor:
    return torch.where(cond, value, _nan_like(value))


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` where ``den > 0``, NaN elsewhere; the gradient stays finite either way."""
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), _nan_like(num))


def _sigma_b_pinv(s: ClassStats) -> tuple[Tensor, Tensor]:
    """Truncated pseudo-inverse of the ``C×C`` Gram ``G = M̃ M̃ᵀ / C_eff`` and a validity flag.

    ``G`` shares its non-zero eigenvalues with ``Σ_B``. The eigendecomposition is taken on the
    detached ``G``; gradients flow through the first-order term ``−G⁺ dG G⁺`` (linearisation around
    the detached value). That is the exact derivative of the fixed-rank pseudo-inverse whenever the
    kept eigenspace is the structural range of ``G`` (the generic case), and it avoids the
    ``1/(λ_i − λ_j)`` terms of the eigenvector backward, which blow up for the repeated eigenvalues
    of a simplex ETF or of dropped classes.
    """
    m = s.centred_means
    c = m.shape[0]
    gram = (m @ m.T) / s.c_eff.clamp_min(1.0)
    g0 = gram.detach()
    evals, evecs = torch.linalg.eigh(g0)
    lam_max = evals[-1] if c else evals.sum()
    rank_pos = torch.arange(c, device=m.device)
    nonzero_scatter = lam_max > _ZERO_SCATTER_RTOL * s.scale.detach()
    keep_eig = (rank_pos >= c - (s.c_eff - 1)) & (evals >= _EIG_RTOL * lam_max) & nonzero_scatter
    inv = torch.where(keep_eig, 1.0 / torch.where(keep_eig, evals, torch.ones_like(evals)), 0.0)
    pinv0 = (evecs * inv) @ evecs.T
    pinv = pinv0 - pinv0 @ (gram - g0) @ pinv0
    return pinv, s.valid & nonzero_scatter


def _nc1(s: ClassStats) -> Tensor:
    pinv, ok = _sigma_b_pinv(s)
    # P = M̃ H̃ᵀ H̃ M̃ᵀ (C×C) from the N×C projection: O(N·D·C), no D×D matrix.
    proj = (s.centred @ s.centred_means.T) * s.sample_keep[:, None]
    p = proj.T @ proj
    c_eff = s.c_eff.clamp_min(1.0)
    value = (p * (pinv @ pinv)).sum() / (s.n_eff.clamp_min(1.0) * c_eff * c_eff)
    return _where_valid(ok, value)


def _traces(s: ClassStats) -> tuple[Tensor, Tensor]:
    tr_w = s.within_sq.sum() / s.n_eff.clamp_min(1.0)
    tr_b = s.centred_means.square().sum() / s.c_eff.clamp_min(1.0)
    return tr_w, tr_b


def _nc1_quotient(s: ClassStats) -> Tensor:
    tr_w, tr_b = _traces(s)
    return _where_valid(s.valid, _safe_div(tr_w, tr_b))


def _masked_cv(values: Tensor, mask: Tensor) -> Tensor:
    """Population std / mean of ``values`` over ``mask`` (float64 0/1)."""
    n = mask.sum().clamp_min(1.0)
    mean = (values * mask).sum() / n
    var = ((values - mean).square() * mask).sum() / n
    return _safe_div(var.clamp_min(0.0).sqrt(), mean)


def _cosines(s: ClassStats) -> tuple[Tensor, Tensor]:
    """Cosine matrix of centred means and the float mask of kept off-diagonal pairs."""
    m = s.centred_means
    norms = m.norm(dim=1)
    unit = m / torch.where(norms > 0, norms, torch.ones_like(norms))[:, None]
    cos = unit @ unit.T
    # A zero centred mean has no direction: its cosines are NaN (deliberately).
    cos = torch.where((norms > 0)[:, None] & (norms > 0)[None, :], cos, _nan_like(cos))
    pair = s.keep_f[:, None] * s.keep_f[None, :]
    pair = pair * (1.0 - torch.eye(m.shape[0], dtype=_DT, device=m.device))
    return cos, pair


def _kept_rows(weight: Tensor, s: ClassStats) -> Tensor:
    return weight.to(device=s.features.device, dtype=_DT) * s.keep_f[:, None]


def _nc2_equinorm(s: ClassStats, weight: Tensor) -> tuple[Tensor, Tensor]:
    means_cv = _masked_cv(s.centred_means.norm(dim=1), s.keep_f)
    weights_cv = _masked_cv(_kept_rows(weight, s).norm(dim=1), s.keep_f)
    return _where_valid(s.valid, means_cv), _where_valid(s.valid, weights_cv)


def _nc2_equiangular(s: ClassStats) -> Tensor:
    cos, pair = _cosines(s)
    n = pair.sum().clamp_min(1.0)
    cos0 = torch.where(pair > 0, cos, torch.zeros_like(cos))
    mean = cos0.sum() / n
    var = (((cos0 - mean) * pair).square()).sum() / n
    # NaN cosines on kept pairs propagate through this sum on purpose.
    nan_pairs = (torch.isnan(cos) & (pair > 0)).any()
    value = torch.where(nan_pairs, _nan_like(var), var.clamp_min(0.0).sqrt())
    return _where_valid(s.valid, value)


def _nc2_maxangle(s: ClassStats) -> Tensor:
    cos, pair = _cosines(s)
    target = -1.0 / (s.c_eff - 1).clamp_min(1.0)
    dev = torch.where(pair > 0, (cos - target).abs(), torch.zeros_like(cos))
    return _where_valid(s.valid, dev.sum() / pair.sum().clamp_min(1.0))


def _nc2_etf_error(s: ClassStats, weight: Tensor) -> Tensor:
    w = _kept_rows(weight, s)
    wwt = w @ w.T
    wwt_unit = _safe_div(wwt, wwt.norm())
    c_eff = s.c_eff
    target = (torch.diag(s.keep_f) - s.keep_f[:, None] * s.keep_f[None, :] / c_eff.clamp_min(1.0)) / (
        (c_eff - 1).clamp_min(1.0).sqrt()
    )
    return _where_valid(s.valid, (wwt_unit - target).norm())


def _nc3(s: ClassStats, weight: Tensor) -> Tensor:
    w = _kept_rows(weight, s)
    m = s.centred_means
    diff = _safe_div(w, w.norm()) - _safe_div(m, m.norm())
    return _where_valid(s.valid, diff.square().sum())


def _nc4(s: ClassStats, weight: Tensor, bias: Tensor | None) -> Tensor:
    w = _kept_rows(weight, s)
    h = s.features
    c = w.shape[0]
    # One N×2C matmul serves both rules; argmin_c ‖h − μ_c‖² = argmax_c (2 hᵀμ_c − ‖μ_c‖²).
    both = h @ torch.cat([w, s.means]).T
    logits = both[:, :c]
    if bias is not None:
        logits = logits + bias.to(device=h.device, dtype=_DT)
    neg_inf = torch.tensor(float("-inf"), dtype=_DT, device=h.device)
    logits = torch.where(s.keep[None, :], logits, neg_inf)
    ncc = 2.0 * both[:, c:] - s.means.square().sum(1)[None, :]
    ncc = torch.where(s.keep[None, :], ncc, neg_inf)
    differ = (logits.argmax(1) != ncc.argmax(1)).to(_DT) * s.sample_keep
    return _where_valid(s.valid, differ.sum() / s.n_eff.clamp_min(1.0))


def nc1(features: Tensor, labels: Tensor, num_classes: int, n_min: int = 1) -> Tensor:
    """NC1 = ``Tr(Σ_W Σ_B^†) / C_eff`` with a truncated pseudo-inverse (differentiable).

    ``Σ_B^†`` keeps the top ``C_eff − 1`` eigenpairs with eigenvalue ``≥ 1e-10·λ_max``; it is
    computed from the ``C×C`` Gram of the centred means, so no ``D×D`` matrix is formed
    (cost ``O(N·D·C + C³)``). Gradients w.r.t. ``features`` flow through the pseudo-inverse and stay
    finite for repeated eigenvalues.

    Args:
        features: ``(N, D)`` penultimate features.
        labels: ``(N,)`` integer labels (actions).
        num_classes: number of classes ``C``.
        n_min: minimum samples for a class to be kept.

    Returns:
        0-dim float64 tensor; NaN when ``C_eff < 2`` or the between-class scatter is zero.
    """
    return _nc1(class_stats(features, labels, num_classes, n_min))


def nc1_quotient(features: Tensor, labels: Tensor, num_classes: int, n_min: int = 1) -> Tensor:
    """``Tr Σ_W / Tr Σ_B`` (differentiable); NaN when ``C_eff < 2`` or ``Tr Σ_B = 0``."""
    return _nc1_quotient(class_stats(features, labels, num_classes, n_min))


def nc2_equinorm(
    features: Tensor, labels: Tensor, weight: Tensor, num_classes: int, n_min: int = 1
) -> tuple[Tensor, Tensor]:
    """Equinorm: population ``std/mean`` of ``‖μ_c − μ_G‖`` and of ``‖w_c‖`` over kept classes.

    Returns:
        ``(means_cv, weights_cv)``, each 0-dim float64.
    """
    return _nc2_equinorm(class_stats(features, labels, num_classes, n_min), weight)


def nc2_equiangular(features: Tensor, labels: Tensor, num_classes: int, n_min: int = 1) -> Tensor:
    """Population std over kept pairs ``c ≠ c'`` of ``cos(μ̃_c, μ̃_c')``."""
    return _nc2_equiangular(class_stats(features, labels, num_classes, n_min))


def nc2_maxangle(features: Tensor, labels: Tensor, num_classes: int, n_min: int = 1) -> Tensor:
    """Mean over kept pairs ``c ≠ c'`` of ``|cos(μ̃_c, μ̃_c') + 1/(C_eff − 1)|``."""
    return _nc2_maxangle(class_stats(features, labels, num_classes, n_min))


def nc2_etf_error(
    features: Tensor, labels: Tensor, weight: Tensor, num_classes: int, n_min: int = 1
) -> Tensor:
    """``‖WWᵀ/‖WWᵀ‖_F − (I − 11ᵀ/C_eff)/√(C_eff − 1)‖_F`` on the rows of kept classes."""
    return _nc2_etf_error(class_stats(features, labels, num_classes, n_min), weight)


def nc3(features: Tensor, labels: Tensor, weight: Tensor, num_classes: int, n_min: int = 1) -> Tensor:
    """Self-duality ``‖Wᵀ/‖W‖_F − M̃/‖M̃‖_F‖_F²`` on kept classes."""
    return _nc3(class_stats(features, labels, num_classes, n_min), weight)


def nc4_mismatch(
    features: Tensor,
    labels: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    num_classes: int,
    n_min: int = 1,
) -> Tensor:
    """Fraction of kept samples where ``argmax_c (w_cᵀh + b_c) ≠ argmin_c ‖h − μ_c‖`` (kept classes)."""
    return _nc4(class_stats(features, labels, num_classes, n_min), weight, bias)


def collapse_metrics(
    features: Tensor,
    labels: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    num_classes: int,
    n_min: int = 20,
) -> dict[str, Tensor]:
    """All NC metrics from one set of class statistics.

    Args:
        features: ``(N, D)`` penultimate features (the input of the last linear layer).
        labels: ``(N,)`` integer labels (greedy or taken actions).
        weight: ``(C, D)`` last-layer weight ``W``.
        bias: ``(C,)`` last-layer bias or None.
        num_classes: number of classes ``C``.
        n_min: minimum samples for a class to be kept (RL default 20).

    Returns:
        Keys ``nc1, nc1_quotient, nc2_equinorm_means, nc2_equinorm_weights, nc2_equiangular,
        nc2_maxangle, nc2_etf_error, nc3, nc4_mismatch, nc4_agreement, c_eff`` (0-dim float64) and
        ``counts`` (``(C,)`` int64, before dropping). Every NC value is NaN when ``C_eff < 2``.
    """
    s = class_stats(features, labels, num_classes, n_min)
    eq_means, eq_weights = _nc2_equinorm(s, weight)
    mismatch = _nc4(s, weight, bias)
    return {
        "nc1": _nc1(s),
        "nc1_quotient": _nc1_quotient(s),
        "nc2_equinorm_means": eq_means,
        "nc2_equinorm_weights": eq_weights,
        "nc2_equiangular": _nc2_equiangular(s),
        "nc2_maxangle": _nc2_maxangle(s),
        "nc2_etf_error": _nc2_etf_error(s, weight),
        "nc3": _nc3(s, weight),
        "nc4_mismatch": mismatch,
        "nc4_agreement": 1.0 - mismatch,
        "c_eff": s.c_eff,
        "counts": s.counts,
    }


@METRICS.register("collapse")
def collapse(ctx: MetricContext) -> dict[str, Tensor]:
    """NC metrics under both labelings: ``greedy`` (argmax Q) and ``taken`` (replay actions).

    Keys: ``collapse/<name>_<labeling>`` for every key of :func:`collapse_metrics` except
    ``counts``, which becomes ``collapse/count_<c>_<labeling>``. The ``taken`` keys are absent when
    the context has no taken actions.
    """
    labelings = {"greedy": ctx.q_values.argmax(1)}
    if ctx.taken_actions is not None:
        labelings["taken"] = ctx.taken_actions
    out: dict[str, Tensor] = {}
    features = ctx.features.flatten(1).to(_DT)  # cast once for both labelings
    for labeling, labels in labelings.items():
        res = collapse_metrics(features, labels, ctx.weight, ctx.bias, ctx.num_classes, ctx.n_min)
        counts = res.pop("counts")
        for key, value in res.items():
            out[f"collapse/{key}_{labeling}"] = value
        for c, count in enumerate(counts.unbind(0)):
            out[f"collapse/count_{c}_{labeling}"] = count
    return out
