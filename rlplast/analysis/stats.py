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

**rliable's aggregate views** (Agarwal et al. 2021), on ``(runs, tasks)`` score matrices:
:func:`stratified_bootstrap` (each resample draws, independently for every task, as many runs as
there are, with replacement — rliable's ``StratifiedBootstrap``), :func:`performance_profile`
(the fraction of run × task scores above each threshold, rliable's score distribution, with a
stratified-bootstrap band) and :func:`improvement` (the probability of improvement
P(X > Y), with the runs of X and Y resampled independently within each task — rliable's
``StratifiedIndependentBootstrap``). Same resampling scheme, statistics and percentile intervals as
rliable 1.2: given a legacy ``numpy.random.RandomState`` seeded like rliable's global NumPy state
they give rliable's numbers to the last bit (tested when rliable is installed).

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
    "Improvement",
    "Profile",
    "band_label",
    "bootstrap_ci",
    "finite",
    "improvement",
    "interval_kind",
    "iqm",
    "pearson",
    "performance_profile",
    "probability_of_improvement",
    "score_distribution",
    "seed_band",
    "spearman",
    "stratified_bootstrap",
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


# ---------------------------------------------------------------------------------- rliable's views
def _rng(
    seed: int | np.random.Generator | np.random.RandomState,
) -> np.random.Generator | np.random.RandomState:
    if isinstance(seed, (np.random.Generator, np.random.RandomState)):
        return seed
    return np.random.default_rng(seed)


def _draw(rng: np.random.Generator | np.random.RandomState, n: int, shape: tuple[int, ...]) -> np.ndarray:
    """Indices in ``[0, n)``: ``Generator.integers``, or ``RandomState.randint`` (what NumPy's legacy
    ``choice(n, shape)`` with replacement draws, i.e. rliable's resampling)."""
    if isinstance(rng, np.random.RandomState):
        return rng.randint(0, n, size=shape)
    return rng.integers(0, n, size=shape)


def _matrix(scores: np.ndarray, name: str = "scores") -> np.ndarray:
    a = np.asarray(scores, dtype=np.float64)
    if a.ndim != 2 or 0 in a.shape:
        raise ValueError(f"{name} must be a non-empty (runs, tasks) array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite (drop the tasks a run has no score for first)")
    return a


def _resample(a: np.ndarray, rng: np.random.Generator | np.random.RandomState) -> np.ndarray:
    """One stratified resample of a ``(runs, tasks)`` matrix: per task, runs drawn with replacement."""
    runs, tasks = a.shape
    return a[_draw(rng, runs, (runs, tasks)), np.arange(tasks)]


def stratified_bootstrap(
    scores: np.ndarray,
    stat: Callable[[np.ndarray], np.ndarray | float],
    n_boot: int = N_BOOT,
    seed: int | np.random.Generator | np.random.RandomState = 0,
    confidence: float = 0.95,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A statistic of a ``(runs, tasks)`` score matrix with a stratified percentile-bootstrap CI.

    Each of ``n_boot`` resamples draws, for every task independently, ``runs`` runs with
    replacement (rliable's ``StratifiedBootstrap``: ``scores[idx, arange(tasks)]`` with ``idx`` of
    shape ``(runs, tasks)``), so every task keeps its weight and only run-to-run variation is
    resampled.

    Args:
        scores: finite ``(runs, tasks)`` array.
        stat: the statistic of a ``(runs, tasks)`` matrix: a number or a 1-D array.
        n_boot: number of resamples.
        seed: seed of a ``numpy.random.default_rng`` (reproducible), or a generator; a
            ``RandomState`` seeded as NumPy's global state reproduces rliable's resamples.
        confidence: nominal coverage.

    Returns:
        ``(point, low, high)``, each a 1-D array (length 1 for a scalar statistic).
    """
    a = _matrix(scores)
    rng = _rng(seed)
    point = np.atleast_1d(np.asarray(stat(a), dtype=np.float64))
    boot = np.empty((n_boot, point.size))
    for b in range(n_boot):
        boot[b] = np.atleast_1d(np.asarray(stat(_resample(a, rng)), dtype=np.float64))
    alpha = 100 * (1.0 - confidence) / 2.0
    low, high = np.percentile(boot, [alpha, 100 - alpha], axis=0)
    return point, low, high


def score_distribution(scores: np.ndarray, taus: np.ndarray | Sequence[float]) -> np.ndarray:
    """The fraction of the run × task scores above each threshold ``tau`` (strictly greater).

    rliable's (run) score distribution: a performance profile that pools every run of every task.

    Example:
        >>> score_distribution(np.array([[0.0, 1.0], [0.5, 2.0]]), [-1.0, 0.5, 2.0])
        array([1. , 0.5, 0. ])
    """
    a = np.asarray(scores, dtype=np.float64)
    t = np.asarray(taus, dtype=np.float64)
    return (a.reshape(-1)[None, :] > t[:, None]).mean(axis=1)


@dataclass(frozen=True)
class Profile:
    """A performance profile: the fraction of scores above each threshold, with a 95 % band.

    Attributes:
        taus: the thresholds.
        fraction: fraction of run × task scores > tau.
        low: lower bound of the stratified-bootstrap CI at each threshold.
        high: upper bound.
        runs: runs of the score matrix.
        tasks: tasks of the score matrix.
    """

    taus: np.ndarray
    fraction: np.ndarray
    low: np.ndarray
    high: np.ndarray
    runs: int
    tasks: int


def performance_profile(
    scores: np.ndarray,
    taus: np.ndarray | Sequence[float],
    n_boot: int = N_BOOT,
    seed: int | np.random.Generator | np.random.RandomState = 0,
    confidence: float = 0.95,
) -> Profile:
    """rliable's performance profile (score distribution) of one method, with a stratified-bootstrap band.

    Args:
        scores: finite ``(runs, tasks)`` array (e.g. normalised scores).
        taus: thresholds.
        n_boot: bootstrap resamples.
        seed: seed or generator (see :func:`stratified_bootstrap`).
        confidence: nominal coverage of the band.
    """
    t = np.asarray(taus, dtype=np.float64)
    a = _matrix(scores)
    point, low, high = stratified_bootstrap(a, lambda m: score_distribution(m, t), n_boot, seed, confidence)
    return Profile(t, point, low, high, a.shape[0], a.shape[1])


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y): per task, the probability that a run of X scores above a run of Y (ties count ½),
    averaged over tasks (rliable's ``probability_of_improvement``: the Mann–Whitney U statistic
    divided by ``runs_x × runs_y``, per task).

    Args:
        x: finite ``(runs_x, tasks)`` scores of method X.
        y: finite ``(runs_y, tasks)`` scores of method Y (the same tasks).

    Example:
        >>> probability_of_improvement(np.array([[2.0, 0.0]]), np.array([[1.0, 0.0], [3.0, 0.0]]))
        0.5
    """
    a, b = _matrix(x, "x"), _matrix(y, "y")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x and y must have the same tasks, got {a.shape[1]} and {b.shape[1]}")
    return float(_improvement(a[None], b[None])[0])


def _improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) of stacked resamples: ``x`` (B, runs_x, tasks), ``y`` (B, runs_y, tasks) → (B,)."""
    xs, ys = x[:, :, None, :], y[:, None, :, :]
    per_task = (xs > ys).mean(axis=(1, 2)) + 0.5 * (xs == ys).mean(axis=(1, 2))
    return per_task.mean(axis=1)


@dataclass(frozen=True)
class Improvement:
    """The probability of improvement of X over Y with its stratified-bootstrap CI.

    Attributes:
        probability: P(X > Y) (0.5: neither is better).
        low: lower bound of the 95 % CI.
        high: upper bound.
        runs_x: runs of X.
        runs_y: runs of Y.
        tasks: tasks compared.
    """

    probability: float
    low: float
    high: float
    runs_x: int
    runs_y: int
    tasks: int


def improvement(
    x: np.ndarray,
    y: np.ndarray,
    n_boot: int = N_BOOT,
    seed: int | np.random.Generator | np.random.RandomState = 0,
    confidence: float = 0.95,
) -> Improvement:
    """:func:`probability_of_improvement` of X over Y with a stratified percentile-bootstrap CI.

    Each resample draws the runs of X, then those of Y, independently within each task (rliable's
    ``StratifiedIndependentBootstrap``).

    Args:
        x: finite ``(runs_x, tasks)`` scores of X.
        y: finite ``(runs_y, tasks)`` scores of Y.
        n_boot: bootstrap resamples.
        seed: seed or generator (see :func:`stratified_bootstrap`).
        confidence: nominal coverage.
    """
    a, b = _matrix(x, "x"), _matrix(y, "y")
    point = probability_of_improvement(a, b)
    rng = _rng(seed)
    boot = np.empty(n_boot)
    for i in range(n_boot):
        xa = _resample(a, rng)
        ya = _resample(b, rng)
        boot[i] = _improvement(xa[None], ya[None])[0]
    alpha = 100 * (1.0 - confidence) / 2.0
    low, high = np.percentile(boot, [alpha, 100 - alpha])
    return Improvement(point, float(low), float(high), a.shape[0], b.shape[0], a.shape[1])
