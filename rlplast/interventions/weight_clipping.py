"""Weight clipping (Elsayed, Lan, Lyle, Mahmood 2024, "Weight Clipping for Deep Continual and RL")."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from rlplast.errors import UserError
from rlplast.fields import config_field
from rlplast.interventions.base import Intervention, output_layer, register

if TYPE_CHECKING:
    from rlplast.agents.dqn import PlasticDQN

#: Layers whose parameters are clipped: PyTorch's default initialiser of each draws weights and
#: bias from U(−1/√fan_in, 1/√fan_in).
CLIPPED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def init_bound(layer: nn.Module) -> float:
    """``1/√fan_in``: the bound of PyTorch's default initialisation of ``layer``'s weight and bias.

    ``nn.Linear`` and ``nn.ConvNd`` draw their weight with ``kaiming_uniform_(a=√5)``, whose bound is
    ``gain·√(3/fan_in) = √(1/3)·√(3/fan_in) = 1/√fan_in``, and their bias from
    ``U(−1/√fan_in, 1/√fan_in)``; ``fan_in`` is the number of inputs of one output unit
    (``in_features``, or ``in_channels/groups × kernel size``).

    Args:
        layer: an ``nn.Linear`` or ``nn.ConvNd``.
    """
    weight = layer.weight
    assert isinstance(weight, torch.Tensor)
    return 1.0 / math.sqrt(weight[0].numel())


@register("weight_clipping")
@dataclass
class WeightClipping(Intervention):
    """After every optimizer step, clip each weight to ``κ`` times its initialisation bound.

    For every ``nn.Linear`` / ``nn.ConvNd`` layer ``l`` of the online network, each of its
    parameters (weight *and* bias, as the authors' code clips every parameter) becomes
    ``θ ← clamp(θ, −κ·s_l, κ·s_l)`` with ``s_l = 1/√fan_in_l``, the bound of PyTorch's default
    initialisation ``U(−s_l, s_l)`` of that layer (:func:`init_bound`) — the paper's "κ times the
    support of the initial distribution", with the bounds the authors' code uses for any
    initialiser. Parameters of other modules (LayerNorm gains and shifts, bare parameters) are not
    clipped. ``clip_last_layer: false`` leaves the output layer unclipped (an option of the
    authors' RL code). The optimizer state is untouched; the target network takes the clipped
    weights at its next sync.

    Logs ``intervention/weight_clip_fraction``: the fraction of clipped parameters sitting at
    their bound (``|θ| ≥ κ·s_l``) at the logging step.

    Example:
        >>> from rlplast.interventions import build_intervention
        >>> clip = build_intervention({"name": "weight_clipping", "kappa": 2.0})
    """

    kappa: float = config_field(
        3.0,
        "κ, the bound in units of the layer's initialisation bound 1/√fan_in",
        min=0.0,
        exclusive_min=True,
    )
    clip_last_layer: bool = config_field(True, "clip the output layer too")

    def __post_init__(self) -> None:
        if not self.kappa > 0.0:
            raise UserError(f"intervention '{self.name}': kappa must be > 0, got {self.kappa}")
        #: The clipped parameters and their bounds ``κ·s_l``, in module order (set at setup).
        self.clipped: list[tuple[torch.Tensor, float]] = []

    def setup(self, model: PlasticDQN) -> None:
        super().setup(model)
        last = output_layer(self.online_net)
        params: list[torch.Tensor] = []
        bounds: list[float] = []
        for module in self.online_net.modules():
            if not isinstance(module, CLIPPED_LAYERS) or (module is last and not self.clip_last_layer):
                continue
            bound = self.kappa * init_bound(module)
            for param in module.parameters(recurse=False):
                params.append(param)
                bounds.append(bound)
        self.clipped = list(zip(params, bounds, strict=True))

    @torch.no_grad()
    def after_update(self, n_updates: int, num_timesteps: int) -> None:
        for param, bound in self.clipped:
            param.clamp_(-bound, bound)

    @torch.no_grad()
    def log_values(self) -> dict[str, float]:
        if not self.clipped:
            return {}
        at_bound = torch.stack([(p.abs() >= b).sum() for p, b in self.clipped]).sum()
        total = sum(p.numel() for p, _ in self.clipped)
        return {"intervention/weight_clip_fraction": float(at_bound) / total}
