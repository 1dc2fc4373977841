"""Plasticity metrics: feature ranks, dormant and dead units, weights, feature norm.

Pure, batched, device-resident, float64, no host synchronisation. Edge cases (documented in
``docs/metrics.md``): all-zero features have srank 0, effective rank 0 and feature rank 0; an empty
batch gives NaN feature norm; a layer whose units are all silent counts every unit as dormant.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from rlplast.metrics._shared import blocks64, feature_pass, same_tensor, suite_pass
from rlplast.metrics.registry import METRICS, MetricContext

__all__ = [
    "dead_units",
    "distance_from_init",
    "dormant_units",
    "effective_rank",
    "effective_rank_from_sv",
    "feature_norm",
    "feature_rank",
    "feature_rank_from_sv",
    "singular_values",
    "srank",
    "srank_from_sv",
    "unit_scores",
    "weight_magnitudes",
]

_DT = torch.float64
# Gram route: eigenvalues below this fraction of the largest are round-off (σ < 1e-6·σ_max → 0).
_GRAM_RTOL = 1e-12


def singular_values(features: Tensor, method: str = "gram") -> Tensor:
    """Singular values of the ``(N, D)`` feature matrix in float64, descending.

    Args:
        features: ``(N, D)`` (extra dims are flattened).
        method: ``"gram"`` (default): eigenvalues of the float64 Gram matrix of the smaller side
            (``D×D`` or ``N×N``), one matmul plus a small symmetric eigensolve, 5-50× faster than an
            SVD of a tall matrix; singular values below ``1e-6·σ_max`` are set to exactly 0 because
            the Gram's round-off makes them unreliable (this only drops directions that carry
            less than a millionth of the largest one). ``"svd"``: ``torch.linalg.svdvals``, exact
            but slower.

    Returns:
        ``(min(N, D),)`` float64 singular values.
    """
    h = features.flatten(1)
    if method == "svd":
        h64 = h.to(_DT)
        finite = torch.isfinite(h64).all()
        sv = torch.linalg.svdvals(torch.where(finite, h64, torch.zeros_like(h64)))
        return torch.where(finite, sv, torch.full_like(sv, float("nan")))
    if method != "gram":
        raise ValueError(f"unknown singular-value method '{method}'; valid: gram, svd")
    if h.shape[0] >= h.shape[1]:
        gram = feature_pass(h, None, gram=True).gram
        assert gram is not None
    else:
        h64 = h.to(_DT)
        gram = h64 @ h64.T
    return _sv_from_gram(gram)


def _sv_from_gram(gram: Tensor) -> Tensor:
    """Singular values (descending) from the float64 Gram of the smaller side, round-off zeroed."""
    # Non-finite features (a diverged network) would make eigvalsh raise: NaN singular values instead.
    finite = torch.isfinite(torch.tril(gram)).all()
    gram = torch.where(finite, gram, torch.zeros_like(gram))
    evals = torch.linalg.eigvalsh(gram, UPLO="L").flip(0)  # the Gram may hold its lower triangle only
    lam_max = evals[:1].clamp_min(0.0)
    evals = torch.where(evals > _GRAM_RTOL * lam_max, evals, torch.zeros_like(evals))
    return torch.where(finite, evals.sqrt(), torch.full_like(evals, float("nan")))


def srank_from_sv(sv: Tensor, delta: float = 0.01) -> Tensor:
    """srank from singular values: min ``k`` with ``Σ_{i≤k} σ_i / Σ σ_i ≥ 1 − δ``.

    The ``*_from_sv`` functions let several ranks share one :func:`singular_values` call (as the
    ``rank`` metric and the supervised track do).

    Args:
        sv: ``(K,)`` float64 singular values in descending order (from :func:`singular_values`).
        delta: δ.

    Returns:
        0-dim float64: 0 when every singular value is 0, NaN when any is NaN.
    """
    total = sv.sum()
    cum = sv.cumsum(0) / torch.where(total > 0, total, torch.ones_like(total))
    # min k with cum_k ≥ 1 − δ  =  (#indices with cum < 1 − δ) + 1; tiny slack for round-off at ties.
    k = (cum < (1.0 - delta) - 1e-12).sum().to(_DT) + 1.0
    return _nan_if_undefined(sv, torch.where(total > 0, k, torch.zeros_like(k)))


def _nan_if_undefined(sv: Tensor, value: Tensor) -> Tensor:
    """NaN where the singular values are NaN (non-finite features), ``value`` otherwise."""
    return torch.where(torch.isnan(sv).any(), torch.full_like(value, float("nan")), value)


def effective_rank_from_sv(sv: Tensor) -> Tensor:
    """Effective rank from singular values: ``exp(−Σ p_k log p_k)``, ``p_k = σ_k / Σ σ``.

    Args:
        sv: ``(K,)`` float64 singular values (from :func:`singular_values`).

    Returns:
        0-dim float64: 0 when every singular value is 0, NaN when any is NaN.
    """
    total = sv.sum()
    p = sv / torch.where(total > 0, total, torch.ones_like(total))
    plogp = torch.where(p > 0, p * torch.log(torch.where(p > 0, p, torch.ones_like(p))), torch.zeros_like(p))
    erank = torch.exp(-plogp.sum())
    return _nan_if_undefined(sv, torch.where(total > 0, erank, torch.zeros_like(erank)))


def feature_rank_from_sv(sv: Tensor, n: int, eps: float = 0.01) -> Tensor:
    """Feature rank from singular values: ``#{σ / √n > ε}``.

    Args:
        sv: ``(K,)`` float64 singular values of the ``(n, D)`` features (from :func:`singular_values`).
        n: the number of samples (rows of the features); 0 is treated as 1.
        eps: ε.

    Returns:
        0-dim float64 count, NaN when any singular value is NaN.
    """
    return _nan_if_undefined(sv, (sv / max(n, 1) ** 0.5 > eps).sum().to(_DT))


def srank(features: Tensor, delta: float = 0.01, method: str = "gram") -> Tensor:
    """srank (Kumar et al. 2020): min ``k`` with ``Σ_{i≤k} σ_i / Σ σ_i ≥ 1 − δ``; 0 for zero features."""
    return srank_from_sv(singular_values(features, method), delta)


def effective_rank(features: Tensor, method: str = "gram") -> Tensor:
    """Effective rank ``exp(−Σ p_k log p_k)``, ``p_k = σ_k / Σ σ``; 0 for all-zero features."""
    return effective_rank_from_sv(singular_values(features, method))


def feature_rank(features: Tensor, eps: float = 0.01, method: str = "gram") -> Tensor:
    """Feature rank (Lyle et al. 2022): ``#{σ(Φ/√N) > ε}``."""
    return feature_rank_from_sv(singular_values(features, method), features.shape[0], eps)


def unit_scores(activation: Tensor) -> Tensor:
    """Per-unit ``E|h_i|`` (float64). Units are dim 1; conv maps are averaged over space too."""
    a = activation if activation.dim() > 1 else activation[:, None]
    if a.numel() == 0:
        return torch.zeros(a.shape[1], dtype=_DT, device=a.device)
    dims = [0, *range(2, a.dim())]
    # Float64 accumulation block by block (no full-size float64 temporary, see _shared).
    total = torch.zeros(a.shape[1], dtype=_DT, device=a.device)
    for blk, scratch in blocks64(a):
        total += (blk.abs_() if scratch else blk.abs()).sum(dim=dims)
    return total / (a.numel() // a.shape[1])


def _dormant_from_scores(scores: Tensor, tau: float) -> Tensor:
    mean = scores.mean()
    s = scores / torch.where(mean > 0, mean, torch.ones_like(mean))
    return (s <= tau).sum().to(_DT)


def dormant_units(activation: Tensor, tau: float = 0.025) -> tuple[Tensor, int]:
    """τ-dormant units (Sokar et al. 2023) of one layer.

    Score ``s_i = E|h_i| / mean_k E|h_k|``; a unit is dormant when ``s_i ≤ τ``. A layer with every
    unit silent (mean score 0) counts all its units as dormant.

    Returns:
        ``(count, units)``: 0-dim float64 number of dormant units and the layer's unit count.
    """
    scores = unit_scores(activation)
    return _dormant_from_scores(scores, tau), scores.shape[0]


def dead_units(activation: Tensor) -> tuple[Tensor, int]:
    """Units exactly 0 on every sample (meaningful after ReLU-like activations).

    Returns:
        ``(count, units)``: 0-dim float64 number of dead units and the layer's unit count.
    """
    scores = unit_scores(activation)
    return (scores == 0).sum().to(_DT), scores.shape[0]


def weight_magnitudes(module: nn.Module) -> dict[str, Tensor]:
    """Mean ``|w|`` of every weight matrix/kernel (parameters named ``*weight`` with ``dim ≥ 2``).

    Returns:
        Module path (e.g. ``"q_net.0"``) → 0-dim float64.
    """
    out: dict[str, Tensor] = {}
    for name, p in module.named_parameters():
        if name.rsplit(".", 1)[-1] == "weight" and p.dim() >= 2:
            out[name.rsplit(".", 1)[0] if "." in name else name] = p.detach().to(_DT).abs().mean()
    return out


def distance_from_init(params: Iterable[Tensor], init_params: Iterable[Tensor]) -> Tensor:
    """``‖θ − θ₀‖₂`` over all parameters (float64).

    Raises:
        ValueError: if the two lists differ in length or shapes.
    """
    ps, p0s = list(params), list(init_params)
    if len(ps) != len(p0s):
        raise ValueError(f"distance_from_init: {len(ps)} parameters but {len(p0s)} initial ones")
    total: Tensor | None = None
    for p, p0 in zip(ps, p0s, strict=True):
        if p.shape != p0.shape:
            raise ValueError(f"distance_from_init: shape {tuple(p.shape)} vs {tuple(p0.shape)}")
        sq = (p.detach().to(_DT) - p0.detach().to(device=p.device, dtype=_DT)).square().sum()
        total = sq if total is None else total + sq
    if total is None:
        return torch.zeros((), dtype=_DT)
    return total.sqrt()


def feature_norm(features: Tensor) -> Tensor:
    """Mean per-sample L2 norm ``E‖h‖`` (float64); NaN for an empty batch."""
    h = features.flatten(1).to(_DT)
    return h.norm(dim=1).mean()


@METRICS.register("rank")
def rank(ctx: MetricContext) -> dict[str, Tensor]:
    """srank, effective rank and feature rank of the penultimate features (one eigensolve)."""
    h = ctx.features.flatten(1)
    gram = suite_pass(ctx).features.gram if h.shape[0] >= h.shape[1] else None
    sv = singular_values(h) if gram is None else _sv_from_gram(gram)
    return {
        "plasticity/srank": srank_from_sv(sv, ctx.srank_delta),
        "plasticity/effective_rank": effective_rank_from_sv(sv),
        "plasticity/feature_rank": feature_rank_from_sv(sv, ctx.features.shape[0], ctx.feature_rank_eps),
    }


@METRICS.register("dormant")
def dormant(ctx: MetricContext) -> dict[str, Tensor]:
    """τ-dormant and dead units per activation layer and overall.

    Keys: ``plasticity/dormant_fraction/<layer>``, ``plasticity/dormant_fraction`` (dormant units /
    all units over layers), ``plasticity/dormant_units``, ``plasticity/dead_fraction/<layer>``,
    ``plasticity/dead_fraction``, ``plasticity/dead_units``.
    """
    out: dict[str, Tensor] = {}
    n_dormant = n_dead = torch.zeros((), dtype=_DT, device=ctx.features.device)
    units = 0
    for name, act in ctx.activations.items():
        abs_sum = None
        # Only a 2-D activation has the features' units; a conv map flattened into the features
        # is scored per channel (unit_scores), not per channel × position.
        if act.dim() == 2 and same_tensor(act, ctx.features.flatten(1)):
            abs_sum = suite_pass(ctx).features.abs_sum
        # One pass per layer serves both counts; the features' pass is shared with the others.
        scores = unit_scores(act) if abs_sum is None else abs_sum / max(act.shape[0], 1)
        dormant_count = _dormant_from_scores(scores, ctx.dormant_tau)
        dead_count = (scores == 0).sum().to(_DT)
        n = max(scores.shape[0], 1)
        out[f"plasticity/dormant_fraction/{name}"] = dormant_count / n
        out[f"plasticity/dead_fraction/{name}"] = dead_count / n
        n_dormant, n_dead, units = n_dormant + dormant_count, n_dead + dead_count, units + scores.shape[0]
    out["plasticity/dormant_fraction"] = n_dormant / max(units, 1)
    out["plasticity/dormant_units"] = n_dormant
    out["plasticity/dead_fraction"] = n_dead / max(units, 1)
    out["plasticity/dead_units"] = n_dead
    return out


@METRICS.register("weights")
def weights(ctx: MetricContext) -> dict[str, Tensor]:
    """Mean ``|w|`` per layer and overall, and ``‖θ − θ₀‖`` when initial parameters are given.

    Keys: ``plasticity/weight_magnitude/<layer>``, ``plasticity/weight_magnitude`` (mean |w| over
    all weight entries), ``plasticity/distance_from_init`` (absent without ``init_params``).
    """
    out: dict[str, Tensor] = {}
    total_abs: Tensor | None = None
    count = 0
    for name, p in ctx.q_net.named_parameters():
        if name.rsplit(".", 1)[-1] == "weight" and p.dim() >= 2:
            s = p.detach().to(_DT).abs().sum()
            layer = name.rsplit(".", 1)[0] if "." in name else name
            out[f"plasticity/weight_magnitude/{layer}"] = s / max(p.numel(), 1)
            total_abs = s if total_abs is None else total_abs + s
            count += p.numel()
    if total_abs is not None:
        out["plasticity/weight_magnitude"] = total_abs / max(count, 1)
    if ctx.init_params is not None:
        out["plasticity/distance_from_init"] = distance_from_init(ctx.params, ctx.init_params)
    return out


@METRICS.register("feature_norm")
def feature_norm_metric(ctx: MetricContext) -> dict[str, Tensor]:
    """Mean L2 norm of the penultimate features: ``plasticity/feature_norm``."""
    return {"plasticity/feature_norm": feature_norm(ctx.features)}
