"""Plasticity metrics: feature ranks, dormant and dead units, weights, feature norm.

Pure, batched, device-resident, float64, no host synchronisation. Edge cases (documented in
``docs/metrics.md``): all-zero features have srank 0, effective rank 0 and feature rank 0; an empty
batch gives NaN feature norm; a layer whose units are all silent counts every unit as dormant.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from rlplast.metrics.registry import METRICS, MetricContext

__all__ = [
    "dead_units",
    "distance_from_init",
    "dormant_units",
    "effective_rank",
    "feature_norm",
    "feature_rank",
    "singular_values",
    "srank",
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
    h = features.flatten(1).to(_DT)
    if method == "svd":
        return torch.linalg.svdvals(h)
    if method != "gram":
        raise ValueError(f"unknown singular-value method '{method}'; valid: gram, svd")
    gram = h.T @ h if h.shape[0] >= h.shape[1] else h @ h.T
    evals = torch.linalg.eigvalsh(gram).flip(0)
    lam_max = evals[:1].clamp_min(0.0)
    evals = torch.where(evals > _GRAM_RTOL * lam_max, evals, torch.zeros_like(evals))
    return evals.sqrt()


def _srank_from_sv(sv: Tensor, delta: float) -> Tensor:
    total = sv.sum()
    cum = sv.cumsum(0) / torch.where(total > 0, total, torch.ones_like(total))
    # min k with cum_k ≥ 1 − δ  =  (#indices with cum < 1 − δ) + 1; tiny slack for round-off at ties.
    k = (cum < (1.0 - delta) - 1e-12).sum().to(_DT) + 1.0
    return torch.where(total > 0, k, torch.zeros_like(k))


def _effective_rank_from_sv(sv: Tensor) -> Tensor:
    total = sv.sum()
    p = sv / torch.where(total > 0, total, torch.ones_like(total))
    plogp = torch.where(p > 0, p * torch.log(torch.where(p > 0, p, torch.ones_like(p))), torch.zeros_like(p))
    erank = torch.exp(-plogp.sum())
    return torch.where(total > 0, erank, torch.zeros_like(erank))


def _feature_rank_from_sv(sv: Tensor, n: int, eps: float) -> Tensor:
    return (sv / max(n, 1) ** 0.5 > eps).sum().to(_DT)


def srank(features: Tensor, delta: float = 0.01, method: str = "gram") -> Tensor:
    """srank (Kumar et al. 2020): min ``k`` with ``Σ_{i≤k} σ_i / Σ σ_i ≥ 1 − δ``; 0 for zero features."""
    return _srank_from_sv(singular_values(features, method), delta)


def effective_rank(features: Tensor, method: str = "gram") -> Tensor:
    """Effective rank ``exp(−Σ p_k log p_k)``, ``p_k = σ_k / Σ σ``; 0 for all-zero features."""
    return _effective_rank_from_sv(singular_values(features, method))


def feature_rank(features: Tensor, eps: float = 0.01, method: str = "gram") -> Tensor:
    """Feature rank (Lyle et al. 2022): ``#{σ(Φ/√N) > ε}``."""
    return _feature_rank_from_sv(singular_values(features, method), features.shape[0], eps)


def unit_scores(activation: Tensor) -> Tensor:
    """Per-unit ``E|h_i|`` (float64). Units are dim 1; conv maps are averaged over space too."""
    a = activation if activation.dim() > 1 else activation[:, None]
    if a.numel() == 0:
        return torch.zeros(a.shape[1], dtype=_DT, device=a.device)
    dims = [0, *range(2, a.dim())]
    # Accumulate in float64 without materialising a float64 copy of the activations.
    return torch.mean(a.abs(), dim=dims, dtype=_DT)


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
    sv = singular_values(ctx.features)
    return {
        "plasticity/srank": _srank_from_sv(sv, ctx.srank_delta),
        "plasticity/effective_rank": _effective_rank_from_sv(sv),
        "plasticity/feature_rank": _feature_rank_from_sv(sv, ctx.features.shape[0], ctx.feature_rank_eps),
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
        scores = unit_scores(act)  # one pass per layer serves both counts
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
