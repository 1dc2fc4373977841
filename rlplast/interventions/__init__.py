"""Interventions against plasticity loss, composable from config.

Each intervention is one file in this package: a dataclass registered with ``@register("name")``.
Importing the package imports every module below, so they are all in :data:`INTERVENTIONS`; an
intervention of your own registers the same way from your module, listed under ``plugins:`` in a
config (``docs/interventions.md``).

Example:
    >>> from rlplast.interventions import INTERVENTIONS, build_intervention
    >>> "redo" in INTERVENTIONS
    True
    >>> reg = build_intervention({"name": "nc_regularizer", "coef": 0.05})
"""

from rlplast.interventions import (  # noqa: F401  (imported to register)
    cchain,
    continual_backprop,
    from_scratch,
    full_reset,
    hare_tortoise,
    l2_init,
    nc_regularizer,
    plasticity_injection,
    redo,
    reset_last_layers,
    shrink_perturb,
    weight_clipping,
)
from rlplast.interventions.base import (
    INTERVENTIONS,
    Intervention,
    build_intervention,
    output_layer,
    parameter_reference,
    register,
    sync_parameter_tables,
)

__all__ = [
    "INTERVENTIONS",
    "Intervention",
    "build_intervention",
    "output_layer",
    "parameter_reference",
    "register",
    "sync_parameter_tables",
]
