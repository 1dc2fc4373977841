"""Neural-collapse and plasticity metrics: pure, device-resident functions on torch tensors.

Every module in this package is imported here, so a new file with one ``@METRICS.register``
function is all it takes to add a metric (the helper functions of such files, e.g.
``rlplast.metrics.churn.churn_values``, are imported from their modules); a module of your own
package registers the same way once imported, e.g. listed under ``plugins:`` in a config (see
``docs/metrics.md``).
"""

from __future__ import annotations

import importlib
import pkgutil

from rlplast.metrics.activations import ForwardPass, forward_pass, forward_with_activations, is_activation
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
    nc3_etf_error,
    nc4_mismatch,
)
from rlplast.metrics.plasticity import (
    dead_units,
    distance_from_init,
    dormant_units,
    effective_rank,
    effective_rank_from_sv,
    feature_norm,
    feature_rank,
    feature_rank_from_sv,
    singular_values,
    srank,
    srank_from_sv,
    unit_scores,
    weight_magnitudes,
)
from rlplast.metrics.probe import probe_plasticity
from rlplast.metrics.registry import METRICS, MetricContext, MetricRegistry, TDBatch
from rlplast.metrics.suite import MetricSuite
from rlplast.metrics.tdloss import td_loss
from rlplast.nets import last_linear

# Import every other module of the package so its registrations run ("a metric is one file").
for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = [
    "METRICS",
    "ClassStats",
    "ForwardPass",
    "MetricContext",
    "MetricRegistry",
    "MetricSuite",
    "TDBatch",
    "class_stats",
    "collapse_metrics",
    "dead_units",
    "distance_from_init",
    "dormant_units",
    "effective_rank",
    "effective_rank_from_sv",
    "feature_norm",
    "feature_rank",
    "feature_rank_from_sv",
    "forward_pass",
    "forward_with_activations",
    "is_activation",
    "last_linear",
    "nc1",
    "nc1_quotient",
    "nc2_equiangular",
    "nc2_equinorm",
    "nc2_etf_error",
    "nc2_maxangle",
    "nc3",
    "nc3_etf_error",
    "nc4_mismatch",
    "probe_plasticity",
    "singular_values",
    "srank",
    "srank_from_sv",
    "td_loss",
    "unit_scores",
    "weight_magnitudes",
]
