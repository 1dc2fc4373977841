"""Small statistics for comparing methods (NumPy + SciPy only): IQM, bootstrap CIs and correlations.

Everything here takes plain NumPy arrays, ignores NaN entries (a seed or task where a quantity
was not computed) and never raises on too little data: it returns NaN (or a :class:`Correlation`
with a ``reason``) instead.

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

#: A statistic applied along ``axis`` of a 2-D array of bootstrap resamples, e.g. ``np.mean``.
Statistic = Callable[..., "np.ndarray | float"]

__all__ = [
    "N_BOOT",
    "Correlation",
    "bootstrap_ci",
    "finite",
    "iqm",
    "pearson",
    "spearman",
    "t_interval",
]

#: Bootstrap resamples of every CI in the reports (the default of :func:`bootstrap_ci` and :func:`spearman`).
N_BOOT = 2000


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
        """``r [low, high]`` or ``n/a (reason)``."""
        if not self.ok:
            return f"n/a ({self.reason})"
        ci = f"[{self.low:.{digits}f}, {self.high:.{digits}f}]" if math.isfinite(self.low) else "[n/a]"
        return f"{self.r:.{digits}f} {ci}"


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
