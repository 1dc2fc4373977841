"""StackedTRAC: TRAC's scale tuner for every member of a population, around the stacked Adam.

TRAC (Muppidi, Zhang, Yang, NeurIPS 2024; :mod:`rlplast.agents.trac`) runs the base optimizer
(Adam / AdamW) on its own iterate ``θ_base`` and sets the parameters to
``θ = θ_ref + S (θ_base − θ_ref)``, with ``S`` learned from ``h = ⟨g, θ_base − θ_ref⟩`` by the erfi
tuner over the discount factors ``β_j``. Every quantity is per member here: ``θ_ref`` and
``θ_base`` are stacked like the parameters ``(S, *shape)``; the tuner's ``v``, ``σ``, ``s`` are
``(S, J)`` and the applied scale ``(S,)`` (float64, as TRAC keeps them); ``h`` is computed over
each member's slice of every parameter.

The step is :meth:`rlplast.agents.trac.TRACMixin.step`'s, operation by operation, on the stacks:
parameters changed in place since the last step keep their change (it moves ``θ_ref`` and
``θ_base`` alike), a member's parameter whose optimizer state was cleared (its Adam step count is
0 at the step) restarts with ``θ_ref = θ_base =`` its current value, and clearing a member's whole
state (``optimizer.state.clear()`` on its view) resets its tuner too. Each member's parameters
equal TRAC's on that member to float32 round-off: everything is elementwise (bitwise) except
``h``, a float64 sum whose order differs from ``torch.dot``'s (products of float32 values are
exact in float64, so only the summation order differs, ~1e-16 relative), and ``erfi``'s series,
summed per element (:func:`erfi_rows`) so that a member's values never depend on the number of
members (``rlplast.agents.trac.erfi`` sums it with a matrix-vector product). No host
synchronisation.

Example:
    >>> import torch
    >>> from rlplast.population.adam import StackedAdam
    >>> w = torch.ones(2, 3, requires_grad=True)      # two members' parameter
    >>> adam = StackedAdam([w], lr=1e-2, trac=StackedTRAC([w]))
    >>> for _ in range(3):
    ...     adam.zero_grad(); (w ** 2).sum().backward(); adam.step()
    >>> adam.trac.scale.shape
    torch.Size([2])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from rlplast.agents.trac import BETAS, ERFI_INV_SQRT2, ERFI_MAX_ARG, check_trac_settings

__all__ = ["StackedTRAC", "erfi_rows"]

#: Terms of the erfi series (as many as ``rlplast.agents.trac.erfi`` sums; tested to agree).
ERFI_TERMS = 192
_SERIES: dict[torch.device, tuple[Tensor, Tensor, Tensor]] = {}


def erfi_rows(x: Tensor) -> Tensor:
    """``erfi`` elementwise, float64: the series of :func:`rlplast.agents.trac.erfi` (same terms, same
    clip at ``±ERFI_MAX_ARG``), summed per element with an elementwise product and a last-dimension
    sum rather than a matrix-vector product.

    A BLAS matrix-vector product may round a row differently depending on how many rows it is
    given, so with ``erfi`` a member's tuner would depend on the population's size; here each
    value depends on its own argument only. It agrees with ``erfi`` to float64 round-off.
    """
    x64 = x.to(torch.float64).clamp(-ERFI_MAX_ARG, ERFI_MAX_ARG)
    cached = _SERIES.get(x.device)
    if cached is None:
        n = torch.arange(ERFI_TERMS, dtype=torch.float64)
        first = torch.zeros(ERFI_TERMS, dtype=torch.float64)
        first[0] = 1.0
        inv_n = torch.where(n > 0, 1.0 / n.clamp_min(1.0), torch.zeros_like(n))
        weights = (2.0 / math.sqrt(math.pi)) / (2.0 * n + 1.0)
        cached = _SERIES[x.device] = (first.to(x.device), inv_n.to(x.device), weights.to(x.device))
    first, inv_n, weights = cached
    ratios = torch.addcmul(first, (x64 * x64).unsqueeze(-1), inv_n)  # [1, x²/1, x²/2, …]
    return x64 * (torch.cumprod(ratios, dim=-1) * weights).sum(dim=-1)


def _member_shape(t: Tensor) -> tuple[int, ...]:
    """``(S, 1, ..., 1)``: broadcasts a per-member value over a stacked tensor."""
    return (t.shape[0],) + (1,) * (t.dim() - 1)


class StackedTRAC:
    """TRAC's state and step for member-stacked parameters (see the module docstring).

    Args:
        params: the stacked parameters ``(S, *shape)`` (those of the :class:`StackedAdam` it
            serves).
        betas: TRAC's discount factors ``β_j``.
        s_init: ``s_init``.
        eps: TRAC's ``ε``.

    Attributes:
        refs: ``θ_ref`` per parameter, stacked like it.
        bases: ``θ_base`` per parameter.
        v: ``(S, J)`` float64.
        sigma: ``(S, J)`` float64.
        s: ``(S, J)`` float64.
        scale: ``(S,)`` float64, the ``S`` each member's parameters were last composed with (0
            before its first step).
    """

    def __init__(
        self,
        params: Sequence[Tensor],
        betas: Iterable[float] = BETAS,
        s_init: float = 1e-8,
        eps: float = 1e-8,
    ) -> None:
        self.trac_betas = check_trac_settings(betas, s_init, eps)
        self.s_init = float(s_init)
        self.eps = float(eps)
        params = list(params)
        device = params[0].device
        n = params[0].shape[0]
        f64 = torch.float64
        self.refs = [torch.zeros_like(p, memory_format=torch.contiguous_format).detach() for p in params]
        self.bases = [torch.zeros_like(p, memory_format=torch.contiguous_format).detach() for p in params]
        # TRAC's own construction of β: a float64 tensor of the Python floats.
        self.betas = torch.tensor(self.trac_betas, dtype=f64).to(device)
        self.v = torch.zeros(n, len(self.trac_betas), dtype=f64, device=device)
        self.sigma = torch.zeros_like(self.v)
        self.s = torch.zeros_like(self.v)
        self.scale = torch.zeros(n, dtype=f64, device=device)
        self._scale32 = torch.zeros(n, dtype=params[0].dtype, device=device)
        self._scale_views = [self._scale32.view(_member_shape(p)) for p in params]
        self._n = n

    # ------------------------------------------------------------------ the step
    def _compose(self) -> list[Tensor]:
        """``θ_ref + S (θ_base − θ_ref)`` per member (TRAC's ``compose``, with ``S`` as float32)."""
        out = list(torch._foreach_sub(self.bases, self.refs))
        torch._foreach_mul_(out, self._scale_views)
        torch._foreach_add_(out, self.refs)
        return out

    @torch.no_grad()
    def step(
        self,
        params: Sequence[Tensor],
        grads: Sequence[Tensor],
        fresh: Tensor,
        base_step: Callable[[], None],
    ) -> None:
        """One TRAC step of every member.

        Args:
            params: the stacked parameters (changed in place).
            grads: their (clipped) gradients.
            fresh: ``(P, S)`` bool, True where parameter ``k`` of member ``i`` has no optimizer
                state (its Adam step count is 0): it starts with ``θ_ref = θ_base = θ``.
            base_step: the base optimizer's step (Adam / AdamW) on ``params``.
        """
        params = [p.detach() for p in params]
        refs, bases = self.refs, self.bases
        for k, p in enumerate(params):
            mask = fresh[k].view(_member_shape(p))
            refs[k].copy_(torch.where(mask, p, refs[k]))
            bases[k].copy_(torch.where(mask, p, bases[k]))
        self._scale32.copy_(self.scale)  # the S the parameters were last composed with
        # Exactly 0 unless a parameter was changed since the last step: keep that change.
        moved = torch._foreach_sub(params, self._compose())
        torch._foreach_add_(refs, moved)
        torch._foreach_add_(bases, moved)
        h = self._dot(grads, torch._foreach_sub(bases, refs))
        torch._foreach_copy_(params, bases)  # the base optimizer steps from its own iterate
        base_step()
        torch._foreach_copy_(bases, params)
        self.scale.copy_(self._update_scale(h))
        self._scale32.copy_(self.scale)
        torch._foreach_copy_(params, self._compose())

    def _dot(self, a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
        """Per member ``Σ_k ⟨a_k[i], b_k[i]⟩`` in float64, ``(S,)``."""
        n = self._n
        flat_a = torch.cat([x.reshape(n, -1) for x in a], dim=1).to(torch.float64)
        flat_b = torch.cat([x.reshape(n, -1) for x in b], dim=1).to(torch.float64)
        return (flat_a * flat_b).sum(dim=1)

    def _update_scale(self, h: Tensor) -> Tensor:
        """The erfi tuner of every member (TRAC's ``_update_scale`` on rows): the new ``S``, ``(S,)``."""
        betas, v, sigma, s = self.betas, self.v, self.sigma, self.s
        h = h.unsqueeze(1)
        v.mul_(betas * betas).add_(h * h)
        sigma.mul_(betas).sub_(h)
        arg = sigma / (torch.sqrt(2.0 * v) + self.eps)
        s.copy_((self.s_init / ERFI_INV_SQRT2) * erfi_rows(arg))
        return s.sum(dim=1).clamp_min(0.0)

    # ------------------------------------------------------------------ state
    @torch.no_grad()
    def reset_tuner(self, member: int) -> None:
        """Restart member ``member``'s tuner (``v``, ``σ``, ``s`` and ``S`` to 0), as TRAC does when
        the whole optimizer state is cleared."""
        for t in (self.v, self.sigma, self.s):
            t[member].zero_()
        self.scale[member] = 0.0

    def state_dict(self) -> dict[str, Any]:
        """``θ_ref``, ``θ_base``, the tuner and the settings (tensors on their device)."""
        return {
            "refs": [t.clone() for t in self.refs],
            "bases": [t.clone() for t in self.bases],
            "v": self.v.clone(),
            "sigma": self.sigma.clone(),
            "s": self.s.clone(),
            "scale": self.scale.clone(),
            "betas": self.trac_betas,
            "s_init": self.s_init,
            "eps": self.eps,
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (in place).

        Raises:
            ValueError: the state is of other TRAC settings.
        """
        settings = (tuple(state["betas"]), float(state["s_init"]), float(state["eps"]))
        if settings != (self.trac_betas, self.s_init, self.eps):
            raise ValueError(
                f"TRAC state of betas, s_init, eps {settings}, optimizer of "
                f"{(self.trac_betas, self.s_init, self.eps)}"
            )
        for dst, src in zip(self.refs, state["refs"], strict=True):
            dst.copy_(src)
        for dst, src in zip(self.bases, state["bases"], strict=True):
            dst.copy_(src)
        for name in ("v", "sigma", "s", "scale"):
            getattr(self, name).copy_(state[name])
