"""Fraction of active units (Plasticine's "active units", after Juliani & Ash's deep-rl-plasticity code).

A unit is *active on a sample* when its post-activation output is > 0; the fraction of active units
of a layer is the fraction of its ``(sample, unit)`` entries that are active (conv maps: ``(sample,
channel, position)`` entries). This is Plasticine's ``compute_active_units`` for ReLU-family and
CReLU networks, ``1 − mean(h == 0)``, which equals ``mean(h > 0)`` when ``h ≥ 0``. For saturating
activations Plasticine counts an entry active when it is *not saturated*, and so does rlplast:
``nn.Tanh`` — ``|h| ≤ 0.99``; ``nn.Sigmoid`` — ``0.01 ≤ h ≤ 0.99``. Every other activation uses
``h > 0`` (for ELU and leaky ReLU: a positive pre-activation).

Unlike ``dead_fraction`` (units zero on *every* sample), this counts entries: a unit active on
half the samples contributes 0.5. For CReLU the concatenated ``[relu(z), relu(−z)]`` always has one
of each pair active (unless ``z = 0``), so its active fraction is 0.5 by construction.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rlplast.metrics._shared import same_tensor
from rlplast.metrics.registry import METRICS, MetricContext

__all__ = ["active_fraction"]

_DT = torch.float64


def active_fraction(activation: Tensor, kind: str = "relu") -> Tensor:
    """Fraction of active ``(sample, unit)`` entries of one layer's output (float64 0-dim).

    Args:
        activation: ``(N, units)`` or ``(N, channels, ...)`` post-activation outputs.
        kind: ``"relu"`` (active: ``h > 0``), ``"tanh"`` (``|h| ≤ 0.99``) or ``"sigmoid"``
            (``0.01 ≤ h ≤ 0.99``).

    Returns:
        The fraction; NaN for an empty tensor.
    """
    if kind == "tanh":
        active = activation.abs() <= 0.99
    elif kind == "sigmoid":
        active = (activation >= 0.01) & (activation <= 0.99)
    elif kind == "relu":
        active = activation > 0
    else:
        raise ValueError(f"unknown activation kind '{kind}'; valid: relu, tanh, sigmoid")
    return active.to(_DT).mean()


def _kind(q_net: nn.Module, key: str) -> str:
    """The rule for the activation module recorded under ``key`` (``"<path>"`` or ``"<path>#k"``)."""
    try:
        module = q_net.get_submodule(key.split("#", 1)[0])
    except AttributeError:
        return "relu"
    if isinstance(module, nn.Tanh):
        return "tanh"
    if isinstance(module, nn.Sigmoid):
        return "sigmoid"
    return "relu"


@METRICS.register("active")
def active(ctx: MetricContext) -> dict[str, Tensor]:
    """Fraction of active units per activation layer and of the penultimate features.

    Keys: ``plasticity/active_fraction/<layer>`` for every recorded activation, and
    ``plasticity/active_fraction`` for the penultimate features (the input of the last linear
    layer: Plasticine's ``active_units``, computed on the same representation), with the rule of
    the activation that produced them (``h > 0`` when they are not an activation's output).
    """
    out: dict[str, Tensor] = {}
    features = ctx.features.flatten(1)
    features_kind = "relu"
    for key, act in ctx.activations.items():
        kind = _kind(ctx.q_net, key)
        out[f"plasticity/active_fraction/{key}"] = active_fraction(act, kind)
        if act.dim() == 2 and same_tensor(act, features):
            features_kind = kind
    out["plasticity/active_fraction"] = active_fraction(features, features_kind)
    return out
