"""rlplast's stratified bootstrap, performance profiles and probability of improvement give
rliable's numbers to the last bit (run when rliable imports: ``pip install -e '.[rliable]'``).

rliable draws its resamples from NumPy's global legacy generator (``np.random.choice``); a
``RandomState`` seeded the same way makes rlplast draw the same indices.
"""

from __future__ import annotations

import numpy as np
import pytest

from rlplast.analysis.stats import improvement, iqm, performance_profile, stratified_bootstrap

try:  # rliable 1.2 imports arch, which fails on pandas 3 with a TypeError, not an ImportError
    from rliable import library as rly
    from rliable import metrics as rly_metrics
except Exception as exc:  # noqa: BLE001
    pytest.skip(f"rliable not importable ({type(exc).__name__}: {exc})", allow_module_level=True)

SCORES = {
    "a": np.random.default_rng(0).normal(size=(5, 3)),
    "b": np.round(np.random.default_rng(1).normal(size=(4, 3)) + 0.5, 1),  # ties
}


def test_performance_profiles_equal_rliables():
    taus = np.linspace(-2, 3, 11)
    np.random.seed(11)
    expected, bands = rly.create_performance_profile(SCORES, taus, reps=300)
    rng = np.random.RandomState(11)
    for key in SCORES:  # rliable goes through the methods in dict order, drawing from one stream
        got = performance_profile(SCORES[key], taus, n_boot=300, seed=rng)
        assert np.array_equal(got.fraction, expected[key])
        assert np.array_equal(got.low, bands[key][0]) and np.array_equal(got.high, bands[key][1])


def test_probability_of_improvement_equals_rliables():
    np.random.seed(5)
    point, band = rly.get_interval_estimates(
        {"a,b": (SCORES["a"], SCORES["b"])}, rly_metrics.probability_of_improvement, reps=300
    )
    got = improvement(SCORES["a"], SCORES["b"], n_boot=300, seed=np.random.RandomState(5))
    assert got.probability == point["a,b"]
    assert (got.low, got.high) == tuple(band["a,b"].ravel())


def test_stratified_bootstrap_of_the_iqm_equals_rliables():
    np.random.seed(3)
    point, band = rly.get_interval_estimates(
        SCORES, lambda x: np.array([rly_metrics.aggregate_iqm(x)]), reps=300
    )
    rng = np.random.RandomState(3)
    for key in SCORES:
        p, lo, hi = stratified_bootstrap(SCORES[key], lambda m: iqm(m.ravel()), n_boot=300, seed=rng)
        assert p[0] == point[key][0] and (lo[0], hi[0]) == tuple(band[key].ravel())
