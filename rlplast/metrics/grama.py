"""GraMa: gradient-magnitude dormancy (Liu, Wu, Obando-Ceron, Castro, Courville, Pan, NeurIPS 2025).

"Measure gradients not activations! Enhancing neuronal activity in deep reinforcement learning"
(arXiv 2505.24061) scores a unit by how much the loss moves its parameters instead of by how large
its activation is. For unit ``i`` of a hidden layer with weight ``W`` (rows = units; for a
convolution, output channels) and the TD loss ``L`` of a replay minibatch:

    G_i = mean_j |∂L/∂W_ij|            (over the unit's incoming weights, and kernel positions)
    s_i = G_i / ((1/H) Σ_k G_k)         (normalised by the layer's mean, H units)
    unit i is GraMa-dormant  ⇔  s_i ≤ τ

the score of Sokar et al.'s τ-dormant test with ``E|h_i|`` replaced by the gradient magnitude.
``∂L/∂W`` is the batch-mean gradient of one backward pass, as an optimizer sees it. This is the
score of the public JAX reimplementation of ReGraMa (``get_score``: mean absolute kernel gradient
per output unit over the other axes, over the layer mean); the paper's text could not be checked
here, so compare with its code before comparing numbers. ``τ`` is the dormant metric's
(``metrics``' ``dormant_tau``, 0.025; that reimplementation's reset threshold defaults to 0.01).
A layer whose gradient is 0 everywhere counts every unit as dormant (as ``dormant`` does for
silent layers).

Layers: every ``nn.Linear`` / ``nn.Conv*d`` of the online network except the output layer (its
"units" are actions), named by module path (``q_net.0``: the *linear* layer, whereas ``dormant``
names the activation after it, ``q_net.1``). With CReLU a linear unit feeds two concatenated
features; GraMa scores the linear unit. Opt-in: one forward and one backward pass on the TD batch.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from rlplast.metrics.registry import METRICS, MetricContext
from rlplast.metrics.tdloss import td_loss
from rlplast.nets import last_linear

__all__ = ["grama_scores", "hidden_weight_layers"]

_DT = torch.float64
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def hidden_weight_layers(q_net: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(path, layer)`` of the linear and convolution layers, output layer excluded, in module order."""
    head = last_linear(q_net)
    return [
        (name, m)
        for name, m in q_net.named_modules()
        if isinstance(m, _LAYERS) and m is not head and m.weight.requires_grad
    ]


def grama_scores(weight_grad: Tensor) -> Tensor:
    """Normalised GraMa scores ``s_i = G_i / mean_k G_k`` of one layer (float64, one per unit).

    Args:
        weight_grad: ``∂L/∂W``, units along dim 0 (``(out, in)`` or ``(out, in, *kernel)``).

    Returns:
        ``(units,)`` scores; all 0 when the gradient is 0 everywhere.
    """
    g = weight_grad.detach().to(_DT).abs().flatten(1).mean(dim=1)
    mean = g.mean()
    return g / torch.where(mean > 0, mean, torch.ones_like(mean))


@METRICS.register("grama", td_batch=True, opt_in=True)
def grama(ctx: MetricContext) -> dict[str, Tensor]:
    """GraMa-dormant units per hidden weight layer and overall (units pooled over layers).

    Keys: ``plasticity/grama_fraction/<layer>``, ``plasticity/grama_fraction`` (GraMa-dormant units
    / all units), ``plasticity/grama_units``. NaN without a TD batch.
    """
    layers = hidden_weight_layers(ctx.q_net)
    device = ctx.features.device
    if ctx.td_batch is None or not layers:
        nan = torch.full((), float("nan"), dtype=_DT, device=device)
        out = {f"plasticity/grama_fraction/{name}": nan for name, _ in layers}
        return {**out, "plasticity/grama_fraction": nan, "plasticity/grama_units": nan}
    weights = [cast(Tensor, layer.weight) for _, layer in layers]
    with torch.enable_grad():
        loss = td_loss(ctx.q_net, ctx.td_batch)
        grads = torch.autograd.grad(loss, weights, allow_unused=True)
    out = {}
    n_dormant = torch.zeros((), dtype=_DT, device=device)
    units = 0
    for (name, _), w, g in zip(layers, weights, grads, strict=True):
        scores = grama_scores(torch.zeros_like(w) if g is None else g)
        count = (scores <= ctx.dormant_tau).sum().to(_DT)
        out[f"plasticity/grama_fraction/{name}"] = count / max(scores.shape[0], 1)
        n_dormant, units = n_dormant + count, units + scores.shape[0]
    out["plasticity/grama_fraction"] = n_dormant / max(units, 1)
    out["plasticity/grama_units"] = n_dormant
    return out
