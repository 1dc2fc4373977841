"""Neural-collapse metrics (NC1-NC4) on penultimate features, classes = actions.

All functions are pure, batched and device-resident: they cast inputs to float64, use masking
instead of Python branches on tensor values, never synchronise with the host and return 0-dim
tensors (``counts`` is 1-D). Classes with fewer than ``n_min`` samples are dropped from every
quantity (their samples too); ``C_eff`` is the number of kept classes.

Global mean (``global_mean=``, config ``metrics.nc_global_mean``): by default (``"classes"``)
every metric, NC1's ``Σ_B`` included, uses the *unweighted* mean of the kept class means,
``μ_G = (1/C_eff) Σ_c μ_c``; with imbalanced classes (normal in RL) this keeps one frequent action
from dominating the geometry. ``"samples"`` uses the mean of the kept samples,
``μ_G = Σ_c n_c μ_c / N`` (Papyan et al. and the paper's code), for every metric alike. Either way
``rank(Σ_B) ≤ C_eff − 1``: the centred means satisfy ``Σ_c a_c (μ_c − μ_G) = 0`` with all
``a_c > 0`` (``a_c = 1`` or ``a_c = n_c``), so they are linearly dependent, as the truncated
pseudo-inverse assumes.

When ``C_eff < 2`` every NC value is NaN (never an exception). Other deliberate NaNs: a zero
between-class scatter (all kept class means equal, e.g. all-zero features) makes NC1, the NC1
quotient, NC2 of the means and NC3 NaN; an all-zero ``W`` makes the ``W`` parts NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from rlplast.errors import UserError
from rlplast.metrics._shared import FeaturePass, feature_pass, project, row_blocks, suite_pass
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
    "nc3_etf_error",
    "nc4_mismatch",
]

_DT = torch.float64
# Eigenvalues of Σ_B below this fraction of the largest are treated as zero (spec §2).
_EIG_RTOL = 1e-10
# Σ_B counts as zero when its largest eigenvalue is below this fraction of E‖h‖²: float64 noise in
# the centred means of coinciding classes is ~1e-32 relative, any real separation is far above.
_ZERO_SCATTER_RTOL = 1e-24
#: Valid ``global_mean`` choices: the unweighted mean of the kept class means (default) or the
#: mean of the kept samples.
GLOBAL_MEANS = ("classes", "samples")


def check_global_mean(global_mean: str) -> str:
    """Return ``global_mean`` if it is one of :data:`GLOBAL_MEANS`; raise UserError otherwise."""
    if global_mean not in GLOBAL_MEANS:
        raise UserError(f"nc_global_mean: {global_mean!r} is not allowed; valid: {', '.join(GLOBAL_MEANS)}")
    return global_mean


@dataclass(frozen=True)
class ClassStats:
    """Per-class statistics shared by the NC metrics (all float64, on the features' device).

    Nothing here is ``N×D``: the features are read in two passes (class sums and squared norms,
    then the projections on the class means and on ``W``) and only ``O(N·C)`` results are kept.

    Attributes:
        onehot: ``(N, C)`` one-hot labels restricted to kept classes (rows of dropped samples are 0).
        counts: ``(C,)`` int64 samples per class (all classes, before dropping).
        keep: ``(C,)`` bool mask of kept classes (``count >= max(n_min, 1)``).
        keep_f: ``keep`` as float64.
        sample_keep: ``(N,)`` float64 mask of samples whose class is kept.
        c_eff: 0-dim float64 number of kept classes.
        n_eff: 0-dim float64 number of kept samples.
        means: ``(C, D)`` class means (rows of dropped classes are 0 and masked everywhere).
        global_mean: ``(D,)`` ``μ_G``: the unweighted mean of the kept class means
            (``global_mean="classes"``) or the mean of the kept samples (``"samples"``).
        centred_means: ``(C, D)`` ``μ_c − μ_G`` for kept classes, 0 rows for dropped ones.
        centred_proj: ``(N, C)`` ``h_iᵀ(μ_c − μ_G)`` (columns of dropped classes are 0), or None
            when the statistics were built without the second pass (``projections=False``).
        logits: ``(N, C)`` ``h_iᵀw_c`` without bias, or None when no ``weight`` was given.
        within: ``(C,)`` within-class scatter ``Σ_{y_i=c} ‖h_i − μ_c‖²`` of kept classes, computed as
            ``Σ‖h_i‖² − n_c‖μ_c‖²`` and clamped at 0 (0 for dropped classes).
        scale: 0-dim mean squared feature norm over kept samples (reference scale for "zero").
    """

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
    centred_proj: Tensor | None
    logits: Tensor | None
    within: Tensor
    scale: Tensor

    @property
    def valid(self) -> Tensor:
        """0-dim bool: at least two kept classes."""
        return self.c_eff >= 2

    @cached_property
    def separated(self) -> Tensor:
        """``(C,)`` bool: kept classes whose centred mean is not zero to float64 round-off.

        ``‖μ_c − μ_G‖² ≤ 1e-24 · E‖h‖²`` counts as zero: coinciding class means (duplicated rows,
        all-zero features) leave round-off of ``~1e-32 · E‖h‖²`` there, never an exact 0.
        """
        sq = self.centred_means.detach().square().sum(1)
        return self.keep & (sq > _ZERO_SCATTER_RTOL * self.scale.detach())

    @cached_property
    def scattered(self) -> Tensor:
        """0-dim bool: at least two kept classes and a between-class scatter above round-off."""
        return self.valid & self.separated.any()


def _onehot(labels: Tensor, num_classes: int, device: torch.device) -> Tensor:
    labels = labels.reshape(-1).to(device=device, dtype=torch.long)
    classes = torch.arange(num_classes, device=device)
    # Comparison one-hot instead of bincount/one_hot: no device-side range check, no host sync.
    return (labels[:, None] == classes[None, :]).to(_DT)


def _first_stats(
    onehot_all: Tensor, sums: Tensor, class_sq: Tensor, n_min: int, global_mean: str = "classes"
) -> dict[str, Tensor]:
    """Per-labeling statistics from the first pass's class sums (no pass over the features)."""
    counts_f = onehot_all.sum(0)
    keep = counts_f >= max(int(n_min), 1)
    keep_f = keep.to(_DT)
    onehot = onehot_all * keep_f
    sample_keep = onehot.sum(1)
    c_eff = keep_f.sum()
    n_eff = sample_keep.sum()
    inv_n = keep_f / counts_f.clamp_min(1.0)
    means = sums * inv_n[:, None]
    if check_global_mean(global_mean) == "samples":
        mu_g = (sums * keep_f[:, None]).sum(0) / n_eff.clamp_min(1.0)  # Σ_c n_c μ_c / N
    else:
        mu_g = means.sum(0) / c_eff.clamp_min(1.0)
    centred_means = (means - mu_g) * keep_f[:, None]
    # Σ_{y_i=c} ‖h_i − μ_c‖² = Σ‖h_i‖² − ‖Σh_i‖²/n_c: no N×D centred temporary. The cancellation
    # costs ≈ ε·E‖h‖²/Tr Σ_W relative accuracy (1e-9 at Tr Σ_W = 1e-7·E‖h‖²); exact collapse
    # gives round-off of either sign, hence the clamp at 0.
    within = ((class_sq - sums.square().sum(1) * inv_n) * keep_f).clamp_min(0.0)
    scale = (class_sq * keep_f).sum() / n_eff.clamp_min(1.0)
    return {
        "onehot": onehot,
        "counts": counts_f.to(torch.long),
        "keep": keep,
        "keep_f": keep_f,
        "sample_keep": sample_keep,
        "c_eff": c_eff,
        "n_eff": n_eff,
        "means": means,
        "global_mean": mu_g,
        "centred_means": centred_means,
        "within": within,
        "scale": scale,
    }


def class_stats_multi(
    features: Tensor,
    onehots: list[Tensor],
    num_classes: int,
    n_min: int = 1,
    weight: Tensor | None = None,
    fpass: FeaturePass | None = None,
    projections: bool = True,
    global_mean: str = "classes",
) -> list[ClassStats]:
    """:class:`ClassStats` of ``L`` labelings from two passes over the features shared by all of them.

    Pass 1 (:func:`feature_pass`): class sums ``Yᵀh`` and ``Yᵀ‖h‖²``. Pass 2: projections of ``h``
    on every labeling's centred means ``μ_c − μ_G`` (and on ``W``), ``O(N·D·C)`` each. Projecting on
    the centred means rather than on ``μ_c`` keeps a large common offset of the features out of the
    round-off.

    Args:
        features: ``(N, D)`` features (any float dtype).
        onehots: ``L`` float64 ``(N, C)`` one-hot labelings (all classes).
        num_classes: ``C`` (> 0).
        n_min: minimum samples for a class to be kept.
        weight: ``(C, D)`` last-layer weight (for the logits of NC4), or None.
        fpass: a :class:`FeaturePass` of ``features`` over ``torch.cat(onehots, 1)``, or None.
        projections: run the second pass (needed by NC1 and NC4; the other metrics only need the
            first pass's sums).
        global_mean: ``"classes"`` (unweighted mean of the kept class means) or ``"samples"``
            (mean of the kept samples).
    """
    h = features.flatten(1)
    if len(row_blocks(h)) == 1:
        h = h.to(_DT)  # one block: cast once for both passes
    if fpass is None or fpass.sums is None or fpass.class_sq is None:
        fpass = feature_pass(h, onehots[0] if len(onehots) == 1 else torch.cat(onehots, 1))
    sums, class_sq = fpass.sums, fpass.class_sq
    assert sums is not None and class_sq is not None
    c = num_classes
    firsts = [
        _first_stats(y, sums[k * c : (k + 1) * c], class_sq[k * c : (k + 1) * c], n_min, global_mean)
        for k, y in enumerate(onehots)
    ]
    if not projections:
        return [ClassStats(**f, centred_proj=None, logits=None) for f in firsts]
    mats = [f["centred_means"] for f in firsts]
    if weight is not None:
        mats.append(weight.to(device=h.device, dtype=_DT))
    # Several labelings (the suite): one wider product per block is cheaper. One labeling: separate
    # products, so nc1() & co. (no W) equal collapse_metrics() bit for bit.
    proj = project(h, mats, fuse=len(firsts) > 1)
    logits = proj[-1] if weight is not None else None
    return [ClassStats(**f, centred_proj=p, logits=logits) for f, p in zip(firsts, proj, strict=False)]


def class_stats(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    n_min: int = 1,
    weight: Tensor | None = None,
    projections: bool = True,
    global_mean: str = "classes",
) -> ClassStats:
    """Compute counts, kept-class mask, class means and the ``O(N·C)`` projections.

    Args:
        features: ``(N, D)`` penultimate features (any float dtype, any device).
        labels: ``(N,)`` integer class labels in ``[0, num_classes)``; labels outside that range are
            ignored (their samples count for no class).
        num_classes: number of classes ``C`` (the action count).
        n_min: classes with fewer samples are dropped (with their samples).
        weight: ``(C, D)`` last-layer weight; its logits ``hᵀw_c`` are computed in the same pass
            (needed by NC4), or None.
        projections: compute ``centred_proj`` (and the logits) in a second pass over the features;
            only NC1 and NC4 need it.
        global_mean: ``μ_G``: ``"classes"`` (unweighted mean of the kept class means, default) or
            ``"samples"`` (mean of the kept samples, as in Papyan et al. and the paper's code).

    Returns:
        A :class:`ClassStats`.
    """
    h = features.flatten(1)
    onehot_all = _onehot(labels, num_classes, h.device)
    if num_classes == 0:
        z = torch.zeros(0, h.shape[1], dtype=_DT, device=h.device)
        empty = torch.zeros(h.shape[0], 0, dtype=_DT, device=h.device)
        first = _first_stats(onehot_all, z, z.sum(1), n_min, global_mean)
        proj = empty if projections else None
        return ClassStats(
            **first, centred_proj=proj, logits=None if weight is None or not projections else empty
        )
    return class_stats_multi(
        h, [onehot_all], num_classes, n_min, weight, projections=projections, global_mean=global_mean
    )[0]


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
    # Non-finite features (a diverged network) would make eigh raise: decompose zeros, flag NaN.
    finite = torch.isfinite(g0).all()
    g0 = torch.where(finite, g0, torch.zeros_like(g0))
    evals, evecs = torch.linalg.eigh(g0)
    lam_max = evals[-1] if c else evals.sum()
    rank_pos = torch.arange(c, device=m.device)
    nonzero_scatter = lam_max > _ZERO_SCATTER_RTOL * s.scale.detach()
    keep_eig = (rank_pos >= c - (s.c_eff - 1)) & (evals >= _EIG_RTOL * lam_max) & nonzero_scatter
    inv = torch.where(keep_eig, 1.0 / torch.where(keep_eig, evals, torch.ones_like(evals)), 0.0)
    pinv0 = (evecs * inv) @ evecs.T
    pinv = pinv0 - pinv0 @ (gram - g0) @ pinv0
    return pinv, s.valid & nonzero_scatter & finite


def _nc1(s: ClassStats) -> Tensor:
    pinv, ok = _sigma_b_pinv(s)
    # P = M̃ H̃ᵀ H̃ M̃ᵀ (C×C) from the N×C projections (h_i − μ_{y_i})ᵀ(μ_k − μ_G) =
    # h_iᵀM̃_k − μ_{y_i}ᵀM̃_k: O(N·C²) here, O(N·D·C) in the pass; no D×D or N×D matrix.
    assert s.centred_proj is not None, "NC1 needs class_stats(..., projections=True)"
    own = s.onehot @ (s.means @ s.centred_means.T)
    proj = (s.centred_proj - own) * s.sample_keep[:, None]
    p = proj.T @ proj
    c_eff = s.c_eff.clamp_min(1.0)
    value = (p * (pinv @ pinv)).sum() / (s.n_eff.clamp_min(1.0) * c_eff * c_eff)
    return _where_valid(ok, value)


def _traces(s: ClassStats) -> tuple[Tensor, Tensor]:
    tr_w = s.within.sum() / s.n_eff.clamp_min(1.0)
    tr_b = s.centred_means.square().sum() / s.c_eff.clamp_min(1.0)
    return tr_w, tr_b


def _nc1_quotient(s: ClassStats) -> Tensor:
    tr_w, tr_b = _traces(s)
    return _where_valid(s.scattered, _safe_div(tr_w, tr_b))


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
    sep = s.separated
    unit = m / torch.where(sep, norms, torch.ones_like(norms))[:, None]
    cos = unit @ unit.T
    # A zero centred mean (to round-off) has no direction: its cosines are NaN (deliberately).
    cos = torch.where(sep[:, None] & sep[None, :], cos, _nan_like(cos))
    pair = s.keep_f[:, None] * s.keep_f[None, :]
    pair = pair * (1.0 - torch.eye(m.shape[0], dtype=_DT, device=m.device))
    return cos, pair


def _kept_rows(weight: Tensor, s: ClassStats) -> Tensor:
    return weight.to(device=s.means.device, dtype=_DT) * s.keep_f[:, None]


def _nc2_equinorm(s: ClassStats, weight: Tensor) -> tuple[Tensor, Tensor]:
    means_cv = _masked_cv(s.centred_means.norm(dim=1), s.keep_f)
    weights_cv = _masked_cv(_kept_rows(weight, s).norm(dim=1), s.keep_f)
    return _where_valid(s.scattered, means_cv), _where_valid(s.valid, weights_cv)


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


def _etf_target(s: ClassStats) -> Tensor:
    """``(I − 11ᵀ/C_eff)/√(C_eff − 1)`` on the kept classes (0 rows/columns for dropped ones)."""
    c_eff = s.c_eff
    return (torch.diag(s.keep_f) - s.keep_f[:, None] * s.keep_f[None, :] / c_eff.clamp_min(1.0)) / (
        (c_eff - 1).clamp_min(1.0).sqrt()
    )


def _nc2_etf_error(s: ClassStats, weight: Tensor) -> Tensor:
    w = _kept_rows(weight, s)
    wwt = w @ w.T
    wwt_unit = _safe_div(wwt, wwt.norm())
    return _where_valid(s.valid, (wwt_unit - _etf_target(s)).norm())


def _nc3(s: ClassStats, weight: Tensor) -> Tensor:
    w = _kept_rows(weight, s)
    m = s.centred_means
    diff = _safe_div(w, w.norm()) - _safe_div(m, m.norm())
    return _where_valid(s.scattered, diff.square().sum())


def _nc3_etf_error(s: ClassStats, weight: Tensor) -> Tensor:
    # The paper's NC3 (gianhess/dl_project, util/neural_collapse.py): W M̃ (C×C, M̃ = D×C centred
    # means) normalised to unit Frobenius norm, distance to the unit-norm simplex ETF Gram.
    wm = _kept_rows(weight, s) @ s.centred_means.T
    wm_unit = _safe_div(wm, wm.norm())
    return _where_valid(s.scattered, (wm_unit - _etf_target(s)).norm())


def _nc4(s: ClassStats, weight: Tensor, bias: Tensor | None) -> Tensor:
    logits = s.logits
    if logits is None:
        raise ValueError("NC4 needs class_stats(..., weight=W, projections=True)")
    # Dropped classes never win: an additive (C,) mask of 0 / −inf (cheaper than an N×C where).
    mask = torch.where(s.keep, 0.0, float("-inf")).to(_DT)
    offset = mask if bias is None else mask + bias.to(device=mask.device, dtype=_DT)
    logits = logits + offset
    # argmin_c ‖h − μ_c‖² = argmax_c (2 hᵀM̃_c − 2 μ_GᵀM̃_c − ‖M̃_c‖²) with M̃_c = μ_c − μ_G.
    m = s.centred_means
    assert s.centred_proj is not None
    ncc = 2.0 * s.centred_proj - (2.0 * (m @ s.global_mean) + m.square().sum(1) - mask)[None, :]
    differ = (logits.argmax(1) != ncc.argmax(1)).to(_DT) * s.sample_keep
    # Coinciding class means leave the nearest centre undefined (a tie broken by round-off): NaN.
    return _where_valid(s.scattered, differ.sum() / s.n_eff.clamp_min(1.0))


def nc1(
    features: Tensor, labels: Tensor, num_classes: int, n_min: int = 1, global_mean: str = "classes"
) -> Tensor:
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
        global_mean: ``μ_G`` of ``Σ_B``: ``"classes"`` (unweighted mean of the kept class means) or
            ``"samples"`` (mean of the kept samples: the paper's code and Papyan et al.).

    Returns:
        0-dim float64 tensor; NaN when ``C_eff < 2`` or the between-class scatter is zero.
    """
    return _nc1(class_stats(features, labels, num_classes, n_min, global_mean=global_mean))


def nc1_quotient(
    features: Tensor, labels: Tensor, num_classes: int, n_min: int = 1, global_mean: str = "classes"
) -> Tensor:
    """``Tr Σ_W / Tr Σ_B`` (differentiable); NaN when ``C_eff < 2`` or ``Tr Σ_B = 0``."""
    s = class_stats(features, labels, num_classes, n_min, projections=False, global_mean=global_mean)
    return _nc1_quotient(s)


def nc2_equinorm(
    features: Tensor,
    labels: Tensor,
    weight: Tensor,
    num_classes: int,
    n_min: int = 1,
    global_mean: str = "classes",
) -> tuple[Tensor, Tensor]:
    """Equinorm: population ``std/mean`` of ``‖μ_c − μ_G‖`` and of ``‖w_c‖`` over kept classes.

    Returns:
        ``(means_cv, weights_cv)``, each 0-dim float64.
    """
    s = class_stats(features, labels, num_classes, n_min, projections=False, global_mean=global_mean)
    return _nc2_equinorm(s, weight)


def nc2_equiangular(
    features: Tensor, labels: Tensor, num_classes: int, n_min: int = 1, global_mean: str = "classes"
) -> Tensor:
    """Population std over kept pairs ``c ≠ c'`` of ``cos(μ̃_c, μ̃_c')``."""
    s = class_stats(features, labels, num_classes, n_min, projections=False, global_mean=global_mean)
    return _nc2_equiangular(s)


def nc2_maxangle(
    features: Tensor, labels: Tensor, num_classes: int, n_min: int = 1, global_mean: str = "classes"
) -> Tensor:
    """Mean over kept pairs ``c ≠ c'`` of ``|cos(μ̃_c, μ̃_c') + 1/(C_eff − 1)|``."""
    s = class_stats(features, labels, num_classes, n_min, projections=False, global_mean=global_mean)
    return _nc2_maxangle(s)


def nc2_etf_error(
    features: Tensor, labels: Tensor, weight: Tensor, num_classes: int, n_min: int = 1
) -> Tensor:
    """``‖WWᵀ/‖WWᵀ‖_F − (I − 11ᵀ/C_eff)/√(C_eff − 1)‖_F`` on the rows of kept classes."""
    return _nc2_etf_error(class_stats(features, labels, num_classes, n_min, projections=False), weight)


def nc3(
    features: Tensor,
    labels: Tensor,
    weight: Tensor,
    num_classes: int,
    n_min: int = 1,
    global_mean: str = "classes",
) -> Tensor:
    """Self-duality ``‖Wᵀ/‖W‖_F − M̃/‖M̃‖_F‖_F²`` on kept classes (Papyan et al.'s NC3, squared)."""
    s = class_stats(features, labels, num_classes, n_min, projections=False, global_mean=global_mean)
    return _nc3(s, weight)


def nc3_etf_error(
    features: Tensor,
    labels: Tensor,
    weight: Tensor,
    num_classes: int,
    n_min: int = 1,
    global_mean: str = "classes",
) -> Tensor:
    """The paper's NC3: ``‖WM̃/‖WM̃‖_F − (I − 11ᵀ/C_eff)/√(C_eff − 1)‖_F`` on kept classes.

    ``W`` is ``C×D`` and ``M̃ = [μ_c − μ_G]`` is ``D×C``, so ``WM̃`` is ``C×C``: the distance of the
    classifier-times-means product to a simplex ETF Gram, normalised like :func:`nc2_etf_error`
    (not squared). It is 0 when the centred means form a simplex ETF and ``W ∝ M̃ᵀ``; there is no
    conversion to or from :func:`nc3` (self-duality alone can hold with a non-ETF geometry).
    Reproducing the paper's code needs ``global_mean="samples"`` and every class present.
    """
    s = class_stats(features, labels, num_classes, n_min, projections=False, global_mean=global_mean)
    return _nc3_etf_error(s, weight)


def nc4_mismatch(
    features: Tensor,
    labels: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    num_classes: int,
    n_min: int = 1,
) -> Tensor:
    """Fraction of kept samples where ``argmax_c (w_cᵀh + b_c) ≠ argmin_c ‖h − μ_c‖`` (kept classes).

    Independent of the choice of ``μ_G`` (the nearest class mean does not depend on it).
    """
    return _nc4(class_stats(features, labels, num_classes, n_min, weight), weight, bias)


def collapse_metrics(
    features: Tensor,
    labels: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    num_classes: int,
    n_min: int = 20,
    global_mean: str = "classes",
) -> dict[str, Tensor]:
    """All NC metrics from one set of class statistics.

    Args:
        features: ``(N, D)`` penultimate features (the input of the last linear layer).
        labels: ``(N,)`` integer labels (greedy or taken actions).
        weight: ``(C, D)`` last-layer weight ``W``.
        bias: ``(C,)`` last-layer bias or None.
        num_classes: number of classes ``C``.
        n_min: minimum samples for a class to be kept (RL default 20).
        global_mean: ``μ_G`` of every metric: ``"classes"`` (unweighted mean of the kept class
            means, default) or ``"samples"`` (mean of the kept samples).

    Returns:
        Keys ``nc1, nc1_quotient, nc2_equinorm_means, nc2_equinorm_weights, nc2_equiangular,
        nc2_maxangle, nc2_etf_error, nc3, nc3_etf_error, nc4_mismatch, nc4_agreement, c_eff``
        (0-dim float64) and ``counts`` (``(C,)`` int64, before dropping). Every NC value is NaN
        when ``C_eff < 2``.
    """
    s = class_stats(features, labels, num_classes, n_min, weight, global_mean=global_mean)
    return _bundle(s, weight, bias)


def _bundle(s: ClassStats, weight: Tensor, bias: Tensor | None) -> dict[str, Tensor]:
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
        "nc3_etf_error": _nc3_etf_error(s, weight),
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
    the context has no taken actions. ``μ_G`` follows ``ctx.nc_global_mean``.
    """
    shared = suite_pass(ctx)  # one pass serves both labelings (and the rank/dormant metrics)
    stats = class_stats_multi(
        ctx.features,
        shared.onehots,
        ctx.num_classes,
        ctx.n_min,
        ctx.weight,
        shared.features,
        global_mean=ctx.nc_global_mean,
    )
    out: dict[str, Tensor] = {}
    for labeling, s in zip(shared.labels, stats, strict=True):
        res = _bundle(s, ctx.weight, ctx.bias)
        counts = res.pop("counts")
        for key, value in res.items():
            out[f"collapse/{key}_{labeling}"] = value
        for c, count in enumerate(counts.unbind(0)):
            out[f"collapse/count_{c}_{labeling}"] = count
    return out
