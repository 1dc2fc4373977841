"""Probe plasticity (Lyle et al. 2022/2023): how well can the network still fit random targets?

A copy of the network is trained for ``steps`` Adam steps to regress the outputs of a freshly
initialised network on the probe observations; the same is done from a fresh initialisation. The
final losses and their ratio measure lost trainability (ratio > 1: the trained network fits worse
than a fresh one). Cost: ``steps`` Adam steps on ``batch_size`` samples plus full-batch forwards.

The two fits see the same minibatches. For SB3's MLP Q-networks (a parameter-free features
extractor, then linear layers and elementwise activations) they run *together*: the two networks'
weights are stacked and every layer is one batched matrix product, so each step costs about one
network's worth of operations instead of two (≈2× faster; the same values up to float rounding,
tested). Other networks (e.g. the MinAtar CNN) are fitted one after the other.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rlplast.metrics.registry import METRICS, MetricContext
from rlplast.nets import reinitialise

__all__ = ["probe_plasticity"]

_DT = torch.float64


def _trainable_copy(module: nn.Module) -> nn.Module:
    net = copy.deepcopy(module)
    # Hooks registered on the original must not fire on the copy.
    for m in net.modules():
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
        m._backward_hooks.clear()
    # Eval mode: deterministic targets and no BatchNorm statistics drift; gradients still flow.
    net.eval()
    for p in net.parameters():
        p.requires_grad_(True)
    return net


def _adam(params: list[Tensor], lr: float) -> torch.optim.Optimizer:
    """Adam with the fused kernel where torch has one for these tensors (≈2× faster here), else foreach."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, foreach=True)


#: Parameter-free elementwise modules the stacked fit may apply to ``(k, batch, features)`` tensors.
_ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.ELU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Identity)


def _stackable(net: nn.Module) -> bool:
    """An SB3-style Q-network: parameter-free extractor, then Linear layers and elementwise activations."""
    extractor = getattr(net, "features_extractor", None)
    head = getattr(net, "q_net", None)
    return (
        callable(getattr(net, "extract_features", None))
        and isinstance(extractor, nn.Module)
        and not any(True for _ in extractor.parameters())
        and isinstance(head, nn.Sequential)
        and len(head) > 0
        and all(
            (isinstance(m, nn.Linear) and m.bias is not None) or isinstance(m, _ELEMENTWISE) for m in head
        )
    )


def _fit_together(nets: list[nn.Module], obs: Tensor, targets: Tensor, idx: Tensor, lr: float) -> Tensor:
    """:func:`_fit` for several :func:`_stackable` networks of one architecture at once.

    Each network's weights become one slice of a stacked tensor; the summed loss gives every slice
    exactly its own network's gradient, and Adam is elementwise, so each slice follows its own fit.
    Returns the final full-batch losses, one per network (float64).
    """
    heads: list[nn.Sequential] = [net.q_net for net in nets]  # type: ignore[misc]
    layers = list(heads[0])
    weights, biases = [], []
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Linear):
            linears: list[nn.Linear] = [h[i] for h in heads]  # type: ignore[misc]
            w = torch.stack([m.weight.detach() for m in linears]).transpose(1, 2).contiguous()
            b = torch.stack([m.bias.detach() for m in linears])[:, None, :].contiguous()
            weights.append(w.requires_grad_(True))
            biases.append(b.requires_grad_(True))
    opt = _adam(weights + biases, lr)
    net0 = nets[0]
    with torch.no_grad():  # the extractor has no parameters (preprocessing, flattening): run it once
        features = net0.extract_features(obs, net0.features_extractor)  # type: ignore[operator]
    plan = [(isinstance(layer, nn.Linear), layer) for layer in layers]

    def forward(h: Tensor) -> Tensor:
        h = h.expand(len(nets), -1, -1)
        j = 0
        for linear, layer in plan:
            if linear:
                h = torch.baddbmm(biases[j], h, weights[j])
                j += 1
            else:
                h = layer(h)
        return h

    # Σ_k mean_k((pred_k − y)²) in one op: every network's MSE has the same number of terms.
    scale = 1.0 / (idx.shape[1] * targets.shape[1]) if idx.numel() else 0.0
    for step_idx in idx:
        pred = forward(features[step_idx])
        loss = F.mse_loss(pred, targets[step_idx].expand_as(pred), reduction="sum") * scale
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (forward(features).to(_DT) - targets.to(_DT)).square().mean(dim=(1, 2))


def _fit(net: nn.Module, obs: Tensor, targets: Tensor, idx: Tensor, lr: float) -> Tensor:
    opt = _adam(list(net.parameters()), lr)
    for step_idx in idx:
        pred = net(obs[step_idx])
        loss = (pred - targets[step_idx]).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (net(obs).to(_DT) - targets.to(_DT)).square().mean()


def probe_plasticity(
    q_net: nn.Module,
    obs: Tensor,
    steps: int = 500,
    lr: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
    together: bool = True,
) -> dict[str, Tensor]:
    """Train copies of ``q_net`` and of a fresh network on random targets and compare final losses.

    Leaves ``q_net`` and the global RNG streams (torch CPU and the obs device, numpy, ``random``)
    untouched: everything runs on deep copies inside ``torch.random.fork_rng``, with minibatch
    indices drawn from a dedicated ``torch.Generator``.

    Args:
        q_net: the network (any module mapping ``obs`` to outputs, e.g. an SB3 ``QNetwork``).
        obs: ``(N, ...)`` probe observations on the network's device.
        steps: Adam steps for each of the two fits.
        lr: Adam learning rate.
        batch_size: minibatch size (capped at ``N``).
        seed: seeds the random targets, the fresh network and the minibatch order.
        together: fit both networks in one stacked pass when the architecture allows it (False:
            always one after the other; the results agree up to float rounding).

    Returns:
        ``probe_loss`` (final full-batch MSE of the trained copy), ``probe_loss_fresh`` (same for a
        fresh network) and ``probe_ratio = probe_loss / probe_loss_fresh`` (NaN if the latter is 0),
        all 0-dim float64.
    """
    device = obs.device
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if device.type == "cuda"
        else []
    )
    n = obs.shape[0]
    with torch.random.fork_rng(devices=devices), torch.enable_grad():
        torch.manual_seed(seed)
        target_net = reinitialise(_trainable_copy(q_net))
        with torch.no_grad():
            targets = target_net(obs).detach()
        del target_net
        fresh = reinitialise(_trainable_copy(q_net))
        trained = _trainable_copy(q_net)
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
        idx = torch.randint(0, max(n, 1), (steps, min(batch_size, max(n, 1))), generator=gen, device=device)
        if together and _stackable(trained) and targets.dim() == 2:
            loss, loss_fresh = _fit_together([trained, fresh], obs, targets, idx, lr)
        else:
            loss = _fit(trained, obs, targets, idx, lr)
            loss_fresh = _fit(fresh, obs, targets, idx, lr)
    ok = loss_fresh > 0
    ratio = torch.where(
        ok, loss / torch.where(ok, loss_fresh, torch.ones_like(loss_fresh)), loss * float("nan")
    )
    return {"probe_loss": loss, "probe_loss_fresh": loss_fresh, "probe_ratio": ratio}


@METRICS.register("probe")
def probe(ctx: MetricContext) -> dict[str, Tensor]:
    """Probe plasticity.

    Keys: ``plasticity/probe_loss``, ``plasticity/probe_loss_fresh``, ``plasticity/probe_ratio``.
    """
    res = probe_plasticity(
        ctx.q_net,
        ctx.obs,
        steps=ctx.probe_steps,
        lr=ctx.probe_lr,
        batch_size=ctx.probe_batch_size,
        seed=ctx.probe_seed,
    )
    return {f"plasticity/{k}": v for k, v in res.items()}
