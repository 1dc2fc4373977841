"""Small statistics for comparing methods (NumPy + SciPy only): IQM, bootstrap CIs and correlations.

Everything here takes plain NumPy arrays, ignores NaN entries (a seed or task where a quantity
was not computed) and never raises on too little data: it returns NaN (or a :class:`Correlation`
with a ``reason``) instead.

**Intervals over seeds** (tables and curves alike, :func:`interval_kind`): from
:data:`MIN_SEEDS_FOR_CI` (3) seeds on, a 95 % percentile-bootstrap CI of the IQM; with 2 seeds the
min–max range, labelled as such (a bootstrap or t "CI" of 2 values is just their range, or wider);
with 1 seed no interval. Percentile-bootstrap bounds and the range are values the statistic takes
on resampled data, so they never leave the quantity's domain (an accuracy stays ≤ 1, an NC1 ≥ 0),
unlike a symmetric t-interval.

Example:
    >>> import numpy as np
    >>> iqm(np.arange(1, 9))
    4.5
    >>> lo, hi = bootstrap_ci(np.arange(10.0), np.mean, n_boot=500, seed=0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

from rlplast.analysis.tables import NumberFormat

#: A statistic applied along ``axis`` of a 2-D array of bootstrap resamples, e.g. ``np.mean``.
Statistic = Callable[..., "np.ndarray | float"]

__all__ = [
    "MIN_SEEDS_FOR_CI",
    "N_BOOT",
    "Band",
    "Correlation",
    "band_label",
    "bootstrap_ci",
    "finite",
    "interval_kind",
    "iqm",
    "pearson",
    "seed_band",
    "spearman",
    "t_interval",
]

#: Bootstrap resamples of every CI in the reports (the default of :func:`bootstrap_ci` and :func:`spearman`).
N_BOOT = 2000
#: Fewest seeds for a confidence interval; below, the min–max range (2 seeds) or nothing (1 seed).
MIN_SEEDS_FOR_CI = 3


def interval_kind(n_seeds: int) -> str:
    """The interval shown for a statistic over ``n_seeds`` seeds: ``ci``, ``range`` or ``none``.

    Example:
        >>> [interval_kind(n) for n in (0, 1, 2, 3, 10)]
        ['none', 'none', 'range', 'ci', 'ci']
    """
    if n_seeds >= MIN_SEEDS_FOR_CI:
        return "ci"
    return "range" if n_seeds == 2 else "none"


def finite(x: np.ndarray | list[float]) -> np.ndarray:
    """The finite entries of ``x`` as a 1-D float64 array."""
    a = np.asarray(x, dtype=np.float64).ravel()
    return a[np.isfinite(a)]


def iqm(x: np.ndarray | list[float], axis: int | None = None) -> float | np.ndarray:
    """Interquartile mean: the mean of the middle 50 % of the values (``trim_mean(x, 0.25)``).

    With ``axis=None`` NaN values are dropped first and an empty input gives NaN. With an axis
    (used by the bootstrap on already-finite data) the trimmed mean is taken along that axis.

    Example:
        >>> iqm([1, 2, 3, 4, 5, 6, 7, 8])  # mean of 3, 4, 5, 6
        4.5
    """
    if axis is not None:
        return sps.trim_mean(np.asarray(x, dtype=np.float64), 0.25, axis=axis)
    a = finite(x)
    if a.size == 0:
        return math.nan
    return float(sps.trim_mean(a, 0.25))


def bootstrap_ci(
    values: np.ndarray | list[float],
    stat: Statistic = np.mean,
    n_boot: int = N_BOOT,
    seed: int = 0,
    strata: np.ndarray | Sequence[Any] | None = None,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``stat(values)``.

    With ``strata`` (one label per value, e.g. the task of each (seed, task) score) the bootstrap
    is *stratified*: every resample draws, within each stratum, as many values as that stratum
    holds, with replacement — so each task keeps its weight and only the seed-to-seed spread is
    resampled (the scheme of Agarwal et al. 2021's aggregate IQM).

    Args:
        values: 1-D scores; NaN entries (and their strata) are dropped.
        stat: a statistic taking ``(array, axis=1)`` — ``np.mean``, ``np.median`` or :func:`iqm`.
        n_boot: number of resamples.
        seed: seed of the resampling generator (the CI is reproducible).
        strata: optional stratum label per value.
        confidence: the interval's nominal coverage.

    Returns:
        ``(low, high)``; ``(nan, nan)`` when fewer than 2 finite values remain.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    keep = np.isfinite(v)
    v = v[keep]
    if v.size < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    if strata is None:
        idx = rng.integers(0, v.size, size=(n_boot, v.size))
        samples = v[idx]
    else:
        s = np.asarray(strata, dtype=object).ravel()[keep]
        parts = []
        for label in dict.fromkeys(s.tolist()):
            group = v[s == label]
            parts.append(group[rng.integers(0, group.size, size=(n_boot, group.size))])
        samples = np.concatenate(parts, axis=1)
    boot = np.asarray(stat(samples, axis=1), dtype=np.float64)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(boot, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def t_interval(values: np.ndarray, axis: int = 0, confidence: float = 0.95) -> tuple[np.ndarray, ...]:
    """Mean and Student-t confidence band along ``axis`` (NaN-aware), for plotting curves.

    Returns:
        ``(mean, low, high)``; where fewer than 2 values are finite the band collapses to the mean.
    """
    import warnings

    a = np.asarray(values, dtype=np.float64)
    n = np.sum(np.isfinite(a), axis=axis)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(a, axis=axis)
        sd = np.nanstd(a, axis=axis, ddof=1)
        half = sps.t.ppf(0.5 + confidence / 2.0, np.maximum(n - 1, 1)) * sd / np.sqrt(np.maximum(n, 1))
    half = np.where(n >= 2, half, 0.0)
    return mean, mean - half, mean + half


@dataclass
class Correlation:
    """A correlation coefficient with its 95 % CI, or the reason it could not be computed.

    Attributes:
        n: number of finite (x, y) pairs used.
        r: the coefficient (NaN when not available).
        low: lower CI bound.
        high: upper CI bound.
        p: two-sided p-value from SciPy.
        reason: why the coefficient is not available ("" when it is).
    """

    n: int
    r: float = math.nan
    low: float = math.nan
    high: float = math.nan
    p: float = math.nan
    reason: str = ""

    @property
    def ok(self) -> bool:
        """Whether a coefficient was computed."""
        return not self.reason

    def format(self, digits: int = 2) -> str:
        """``r [low, high]`` (:func:`~rlplast.analysis.tables.format_number`: ``digits`` significant
        digits, at most ``digits`` decimals), ``r [no CI]`` below 4 pairs, or ``n/a (reason)``.
        """
        if not self.ok:
            return f"n/a ({self.reason})"
        fmt = NumberFormat(digits, scientific=False, max_decimals=digits)
        ci = f"[{fmt(self.low)}, {fmt(self.high)}]" if math.isfinite(self.low) else "[no CI]"
        return f"{fmt(self.r)} {ci}"


def _pairs(x: np.ndarray | list[float], y: np.ndarray | list[float]) -> tuple[np.ndarray, np.ndarray, str]:
    xa = np.asarray(x, dtype=np.float64).ravel()
    ya = np.asarray(y, dtype=np.float64).ravel()
    if xa.shape != ya.shape:
        raise ValueError(f"x and y differ in length: {xa.size} vs {ya.size}")
    keep = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[keep], ya[keep]
    if xa.size < 3:
        return xa, ya, f"{xa.size} finite pairs, need >= 3"
    if np.ptp(xa) == 0 or np.ptp(ya) == 0:
        return xa, ya, "constant input"
    return xa, ya, ""


def pearson(
    x: np.ndarray | list[float], y: np.ndarray | list[float], confidence: float = 0.95
) -> Correlation:
    """Pearson's r with a Fisher-z confidence interval (needs >= 4 pairs for the CI).

    CI: ``tanh(atanh(r) ± z_{1-α/2} / sqrt(n - 3))``.
    """
    xa, ya, reason = _pairs(x, y)
    if reason:
        return Correlation(n=int(xa.size), reason=reason)
    res = sps.pearsonr(xa, ya)
    r = float(np.clip(res.statistic, -1.0, 1.0))
    n = int(xa.size)
    lo = hi = math.nan
    if n >= 4:
        z = math.atanh(min(max(r, -1 + 1e-15), 1 - 1e-15))
        half = sps.norm.ppf(0.5 + confidence / 2.0) / math.sqrt(n - 3)
        lo, hi = math.tanh(z - half), math.tanh(z + half)
    return Correlation(n=n, r=r, low=lo, high=hi, p=float(res.pvalue))


def spearman(
    x: np.ndarray | list[float],
    y: np.ndarray | list[float],
    n_boot: int = N_BOOT,
    seed: int = 0,
    confidence: float = 0.95,
) -> Correlation:
    """Spearman's ρ with a percentile bootstrap CI over resampled (x, y) pairs.

    Resamples whose ranks are constant (possible with few points) are dropped from the CI.
    """
    xa, ya, reason = _pairs(x, y)
    if reason:
        return Correlation(n=int(xa.size), reason=reason)
    res = sps.spearmanr(xa, ya)
    n = int(xa.size)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    rx = sps.rankdata(xa[idx], axis=1)
    ry = sps.rankdata(ya[idx], axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
    ok = den > 0
    boot = (rx * ry).sum(axis=1)[ok] / den[ok]
    lo = hi = math.nan
    if boot.size >= 10:
        alpha = (1.0 - confidence) / 2.0
        lo, hi = (float(v) for v in np.quantile(boot, [alpha, 1.0 - alpha]))
    return Correlation(n=n, r=float(res.statistic), low=lo, high=hi, p=float(res.pvalue))


@dataclass(frozen=True)
class Band:
    """A curve over seeds: the IQM at each point with its interval (see :func:`seed_band`).

    Attributes:
        center: IQM over the seeds with a value at each point (NaN where none has).
        low: lower bound (equal to ``center`` where there is no interval).
        high: upper bound.
        n: finite seeds at each point (int array).
    """

    center: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: np.ndarray


def seed_band(values: np.ndarray, n_boot: int = N_BOOT, seed: int = 0, confidence: float = 0.95) -> Band:
    """IQM over seeds at each point of a curve, with the interval :func:`interval_kind` prescribes.

    At a point with ``k`` finite seeds: ``k`` ≥ 3 → percentile-bootstrap CI of the IQM (the seeds
    are resampled jointly along the curve: one resample draws whole seed curves); ``k`` = 2 → the
    two values (min–max); ``k`` = 1 → no interval (``low = high = center``); ``k`` = 0 → NaN.
    Bounds are always within the values' min and max.

    Args:
        values: ``(n_seeds, n_points)`` array, NaN = not measured.
        n_boot: bootstrap resamples.
        seed: seed of the resampling generator (the band is reproducible).
        confidence: nominal coverage of the CI.

    Example:
        >>> b = seed_band(np.array([[1.0, 2.0], [3.0, np.nan]]))
        >>> b.center.tolist(), b.low.tolist(), b.high.tolist(), b.n.tolist()
        ([2.0, 2.0], [1.0, 2.0], [3.0, 2.0], [2, 1])
    """
    a = np.atleast_2d(np.asarray(values, dtype=np.float64))
    ok = np.isfinite(a)
    n = ok.sum(axis=0)
    center = np.full(a.shape[1], np.nan)
    low = np.full(a.shape[1], np.nan)
    high = np.full(a.shape[1], np.nan)
    alpha = (1.0 - confidence) / 2.0
    # Points with the same set of finite seeds are handled together (usually one group).
    patterns: dict[bytes, list[int]] = {}
    for j in range(a.shape[1]):
        if n[j]:
            patterns.setdefault(ok[:, j].tobytes(), []).append(j)
    for cols_list in patterns.values():
        cols = np.asarray(cols_list)
        sub = a[ok[:, cols[0]]][:, cols]  # (k, points): the seeds finite at these points
        k = sub.shape[0]
        center[cols] = sps.trim_mean(sub, 0.25, axis=0)
        if k >= MIN_SEEDS_FOR_CI:
            idx = np.random.default_rng(seed).integers(0, k, size=(n_boot, k))
            boot = sps.trim_mean(sub[idx], 0.25, axis=1)  # (n_boot, points)
            low[cols], high[cols] = np.quantile(boot, [alpha, 1.0 - alpha], axis=0)
        elif k == 2:
            low[cols], high[cols] = sub.min(axis=0), sub.max(axis=0)
        else:
            low[cols] = high[cols] = center[cols]
    return Band(center, low, high, n.astype(int))


def band_label(n_seeds: Sequence[int], confidence: float = 0.95) -> str:
    """What a figure's bands show, for methods with ``n_seeds`` seeds each (one line for the figure).

    Example:
        >>> band_label([5, 5]), band_label([2, 2]), band_label([1]), band_label([3, 5])
        ('band: 95% bootstrap CI of the IQM over 5 seeds', 'band: min–max of 2 seeds', '1 seed: no band', 'band: 95% bootstrap CI of the IQM over 3–5 seeds')
        >>> band_label([2, 4])
        'band: 95% bootstrap CI of the IQM (methods with ≥ 3 seeds), min–max (2 seeds)'
    """
    ns = sorted({int(n) for n in n_seeds if n > 0})
    if not ns:
        return "no data"
    kinds = {interval_kind(n) for n in ns}
    pct = f"{100 * confidence:g}%"
    if kinds == {"ci"}:
        seeds = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
        return f"band: {pct} bootstrap CI of the IQM over {seeds} seeds"
    if kinds == {"range"}:
        return "band: min–max of 2 seeds"
    if kinds == {"none"}:
        return "1 seed: no band"
    parts = []
    if "ci" in kinds:
        parts.append(f"{pct} bootstrap CI of the IQM (methods with ≥ 3 seeds)")
    if "range" in kinds:
        parts.append("min–max (2 seeds)")
    if "none" in kinds:
        parts.append("none (1 seed)")
    return "band: " + ", ".join(parts)
