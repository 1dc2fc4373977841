"""Curvature: the largest Hessian eigenvalue of the TD loss, by power iteration.

Sharpness of the loss landscape is one of the signals of lost plasticity (e.g. Lyle et al. 2023,
"Understanding Plasticity in Neural Networks"; Lewandowski et al. 2024 on curvature). With the TD
loss ``L(θ)`` of a replay minibatch (fixed targets, :func:`rlplast.metrics.tdloss.td_loss`) and
``H = ∇²L(θ)`` over all online-network parameters, power iteration on Hessian-vector products::

    v_0 ~ N(0, I) / ‖·‖          (seeded: metrics' probe seed, its own generator)
    v_k+1 = H v_k / ‖H v_k‖      (k = 0 … K−1, K = curvature_iters = 20)
    λ = v_Kᵀ H v_K               (Rayleigh quotient)

converges to the eigenvalue of largest magnitude — in practice the largest, positive one, the
"sharpness". ``H v`` is one double-backward pass (``torch.autograd.grad`` of ``∇L·v``); no ``D×D``
Hessian is formed. The iteration count is fixed (no convergence test: no host synchronisation), so
λ is a lower bound on ``|λ_max|`` that tightens with K: the error shrinks like ``(λ_2/λ_1)^K``.

Cost: one forward + backward with ``create_graph`` plus ``K + 1`` Hessian-vector products on the TD
batch (``metrics.probe_size`` transitions), every ``metrics.every_steps`` — opt-in. See
``docs/metrics.md`` for a measured share of a run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from rlplast.metrics.registry import METRICS, MetricContext
from rlplast.metrics.tdloss import td_loss

__all__ = ["hessian_max_eigenvalue"]

_DT = torch.float64


def hessian_max_eigenvalue(
    loss_fn: Callable[[], Tensor], params: Sequence[Tensor], iters: int = 20, seed: int = 0
) -> Tensor:
    """Power iteration for the largest-magnitude eigenvalue of the Hessian of ``loss_fn()``.

    Args:
        loss_fn: a callable returning the scalar loss (built under grad mode here).
        params: the parameters (``requires_grad``) the Hessian is taken over.
        iters: power iterations ``K``.
        seed: seed of the start vector (a generator of its own; the global RNG is untouched).

    Returns:
        0-dim float64 ``λ`` (0 when the loss has no curvature in these parameters, e.g. linear).
    """
    device = params[0].device
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    v = [torch.randn(p.shape, generator=gen, device=device, dtype=p.dtype) for p in params]
    v = _normalise(v)
    with torch.enable_grad():
        loss = loss_fn()
        grads = torch.autograd.grad(loss, params, create_graph=True)
        if not any(g.requires_grad for g in grads):  # host metadata: a loss linear in params
            return torch.zeros((), dtype=_DT, device=device)
        hv = _hvp(grads, params, v)
        for _ in range(iters):
            v = _normalise(hv)
            hv = _hvp(grads, params, v)
    return sum((a.to(_DT) * b.to(_DT)).sum() for a, b in zip(v, hv, strict=True))  # type: ignore[return-value]


def _hvp(grads: tuple[Tensor, ...], params: Sequence[Tensor], v: list[Tensor]) -> list[Tensor]:
    """``H v`` by double backward (the graph of ``grads`` is kept for the next product)."""
    out = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if h is None else h.detach() for h, p in zip(out, params, strict=True)]


def _normalise(vs: list[Tensor]) -> list[Tensor]:
    norm = torch.sqrt(sum((x.to(_DT) ** 2).sum() for x in vs))  # type: ignore[arg-type]
    scale = torch.where(norm > 0, 1.0 / norm, torch.zeros_like(norm))
    return [x * scale.to(x.dtype) for x in vs]


@METRICS.register("curvature", td_batch=True, opt_in=True)
def curvature(ctx: MetricContext) -> dict[str, Tensor]:
    """``plasticity/hessian_max_eig``: largest Hessian eigenvalue of the TD loss (NaN without a TD batch)."""
    params = [p for p in ctx.q_net.parameters() if p.requires_grad]
    batch = ctx.td_batch
    if batch is None or not params:
        return {
            "plasticity/hessian_max_eig": torch.full((), float("nan"), dtype=_DT, device=ctx.features.device)
        }
    lam = hessian_max_eigenvalue(
        lambda: td_loss(ctx.q_net, batch), params, iters=ctx.curvature_iters, seed=ctx.probe_seed
    )
    return {"plasticity/hessian_max_eig": lam}
