"""Known answers for rlplast.analysis.stats: IQM, bootstrap CIs and correlations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from rlplast.analysis.stats import (
    MIN_SEEDS_FOR_CI,
    band_label,
    bootstrap_ci,
    interval_kind,
    iqm,
    pearson,
    seed_band,
    spearman,
    t_interval,
)


def test_iqm_known_answers():
    assert iqm(np.arange(1, 9)) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    assert iqm([1, 2, 3, 4, 100]) == pytest.approx(sps.trim_mean([1, 2, 3, 4, 100], 0.25))
    assert iqm([7.0]) == 7.0
    assert iqm([1, 2, np.nan, 3, 4, 5, 6, 7, 8]) == pytest.approx(4.5)  # NaN dropped
    assert math.isnan(iqm([]))
    assert math.isnan(iqm([np.nan]))
    rows = np.vstack([np.arange(1, 9), np.arange(1, 9) * 2.0])
    np.testing.assert_allclose(iqm(rows, axis=1), [4.5, 9.0])


def test_pearson_and_spearman_match_scipy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = 0.5 * x + rng.normal(size=40)
    p = pearson(x, y)
    s = spearman(x, y, n_boot=500)
    assert p.r == pytest.approx(sps.pearsonr(x, y).statistic)
    assert p.p == pytest.approx(sps.pearsonr(x, y).pvalue)
    assert s.r == pytest.approx(sps.spearmanr(x, y).statistic)
    assert p.n == s.n == 40
    # Fisher z by hand
    z, half = math.atanh(p.r), 1.959963984540054 / math.sqrt(37)
    assert (p.low, p.high) == pytest.approx((math.tanh(z - half), math.tanh(z + half)))
    assert s.low < s.r < s.high
    assert p.ok and "[" in p.format()


def test_correlations_are_nan_safe_and_say_why():
    nan = float("nan")
    r = pearson([1, 2, nan, 4, 5], [2, 4, 6, nan, 10])
    assert r.n == 3 and r.r == pytest.approx(1.0) and math.isnan(r.low)  # no CI below 4 pairs
    few = spearman([1, 2], [3, 4])
    assert not few.ok and "need >= 3" in few.reason and few.format().startswith("n/a")
    const = pearson([1, 1, 1, 1], [1, 2, 3, 4])
    assert not const.ok and const.reason == "constant input"
    with pytest.raises(ValueError):
        pearson([1, 2, 3], [1, 2])


def test_bootstrap_ci_is_reproducible_and_handles_little_data():
    v = np.arange(20.0)
    assert bootstrap_ci(v, np.mean, n_boot=300, seed=3) == bootstrap_ci(v, np.mean, n_boot=300, seed=3)
    lo, hi = bootstrap_ci(v, iqm, n_boot=300, seed=3)
    assert lo < iqm(v) < hi
    assert all(math.isnan(b) for b in bootstrap_ci([1.0], np.mean))
    assert all(math.isnan(b) for b in bootstrap_ci([1.0, np.nan], np.mean))


def test_bootstrap_ci_covers_true_mean_at_nominal_rate():
    rng = np.random.default_rng(123)
    hits = 0
    sims = 200
    for i in range(sims):
        sample = rng.normal(loc=3.0, scale=2.0, size=30)
        lo, hi = bootstrap_ci(sample, np.mean, n_boot=1000, seed=i)
        hits += lo <= 3.0 <= hi
    assert 0.88 <= hits / sims <= 0.99


def test_stratified_bootstrap_keeps_strata_sizes():
    # two tasks with very different levels: a stratified resample always holds 3 values of each,
    # so the mean can never stray far from the midpoint, unlike an unstratified resample.
    values = np.array([0.0, 0.1, 0.2, 100.0, 100.1, 100.2])
    strata = [0, 0, 0, 1, 1, 1]
    lo, hi = bootstrap_ci(values, np.mean, n_boot=2000, seed=0, strata=strata)
    assert 49.9 <= lo <= hi <= 50.3
    lo_u, hi_u = bootstrap_ci(values, np.mean, n_boot=2000, seed=0)
    assert hi_u - lo_u > 20


def test_t_interval_band():
    curves = np.array([[1.0, 2.0, np.nan], [3.0, 4.0, 5.0]])
    mean, lo, hi = t_interval(curves, axis=0)
    np.testing.assert_allclose(mean, [2.0, 3.0, 5.0])
    half = sps.t.ppf(0.975, 1) * np.std([1, 3], ddof=1) / math.sqrt(2)
    assert hi[0] - mean[0] == pytest.approx(half)
    assert lo[2] == hi[2] == 5.0  # a single seed: no band


def test_interval_rule_below_three_seeds():
    assert MIN_SEEDS_FOR_CI == 3
    assert [interval_kind(n) for n in range(5)] == ["none", "none", "range", "ci", "ci"]


def test_seed_band_known_answers():
    # columns: 2 seeds -> min–max; 1 seed -> no band; 0 seeds -> NaN
    values = np.array([[1.0, 5.0, np.nan], [3.0, np.nan, np.nan]])
    b = seed_band(values)
    np.testing.assert_array_equal(b.n, [2, 1, 0])
    np.testing.assert_allclose(b.center[:2], [2.0, 5.0])
    np.testing.assert_allclose(b.low[:2], [1.0, 5.0])
    np.testing.assert_allclose(b.high[:2], [3.0, 5.0])
    assert np.isnan(b.center[2]) and np.isnan(b.low[2]) and np.isnan(b.high[2])
    # 5 seeds: the centre is the IQM; the CI is reproducible and inside [min, max]
    five = np.array([[1.0], [2.0], [3.0], [4.0], [100.0]])
    b5 = seed_band(five, seed=1)
    assert b5.center[0] == pytest.approx(3.0)  # trim_mean cuts one value from each end
    assert 1.0 <= b5.low[0] < 3.0 < b5.high[0] <= 100.0
    again = seed_band(five, seed=1)
    assert (again.low[0], again.high[0]) == (b5.low[0], b5.high[0])


def test_bands_never_leave_the_quantity_range():
    # accuracies near 1 and NC1 near 0: a t-interval crosses the bound, the band does not
    acc = np.array([[0.97], [0.99], [1.0], [1.0], [0.93]])
    nc1 = np.array([[0.01], [0.02], [0.5], [0.01], [0.03]])
    for values, lo_bound, hi_bound in ((acc, 0.0, 1.0), (nc1, 0.0, np.inf)):
        b = seed_band(values)
        assert lo_bound <= b.low[0] <= b.center[0] <= b.high[0] <= hi_bound
    _, _, t_hi = t_interval(acc, axis=0)
    _, t_lo, _ = t_interval(nc1, axis=0)
    assert t_hi[0] > 1.0 and t_lo[0] < 0.0  # why the plots no longer use it
    two = seed_band(np.array([[0.99, 0.01], [1.0, 0.02]]))
    assert two.high[0] == 1.0 and two.low[1] == 0.01


def test_band_label_states_what_the_band_is():
    assert band_label([5, 5]) == "band: 95% bootstrap CI of the IQM over 5 seeds"
    assert band_label([3, 5]) == "band: 95% bootstrap CI of the IQM over 3–5 seeds"
    assert band_label([2, 2]) == "band: min–max of 2 seeds"
    assert band_label([1]) == "1 seed: no band"
    assert (
        band_label([2, 4]) == "band: 95% bootstrap CI of the IQM (methods with ≥ 3 seeds), min–max (2 seeds)"
    )
    assert "CI" not in band_label([2]) and "CI" not in band_label([1, 2])


def test_correlation_text_format():
    r = pearson([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2.0, 1.0, 4.0, 3.0, 6.0, 5.0])
    assert r.format() == f"{r.r:.2f} [{r.low:.2f}, {r.high:.2f}]"
    assert pearson([1.0, 2.0, 3.0], [1.0, 2.0, 4.0]).format().endswith("[no CI]")  # 3 pairs: no Fisher CI
