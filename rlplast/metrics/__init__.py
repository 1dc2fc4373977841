"""Neural-collapse and plasticity metrics: pure, device-resident functions on torch tensors.

Every module in this package is imported here, so a new file with one ``@METRICS.register``
function is all it takes to add a metric (see ``docs/metrics.md``).
"""

from __future__ import annotations

import importlib
import pkgutil

from rlplast.metrics.activations import forward_with_activations, last_linear
from rlplast.metrics.collapse import (
    ClassStats,
    class_stats,
    collapse_metrics,
    nc1,
    nc1_quotient,
    nc2_equiangular,
    nc2_equinorm,
    nc2_etf_error,
    nc2_maxangle,
    nc3,
    nc4_mismatch,
)
from rlplast.metrics.plasticity import (
    dead_units,
    distance_from_init,
    dormant_units,
    effective_rank,
    feature_norm,
    feature_rank,
    singular_values,
    srank,
    weight_magnitudes,
)
from rlplast.metrics.probe import probe_plasticity
from rlplast.metrics.registry import METRICS, MetricContext
from rlplast.metrics.suite import MetricSuite

# Import every other module of the package so its registrations run ("a metric is one file").
for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = [
    "METRICS",
    "ClassStats",
    "MetricContext",
    "MetricSuite",
    "class_stats",
    "collapse_metrics",
    "dead_units",
    "distance_from_init",
    "dormant_units",
    "effective_rank",
    "feature_norm",
    "feature_rank",
    "forward_with_activations",
    "last_linear",
    "nc1",
    "nc1_quotient",
    "nc2_equiangular",
    "nc2_equinorm",
    "nc2_etf_error",
    "nc2_maxangle",
    "nc3",
    "nc4_mismatch",
    "probe_plasticity",
    "singular_values",
    "srank",
    "weight_magnitudes",
]
