"""TRAC: a parameter-free scale tuner around Adam / AdamW (Muppidi, Zhang, Yang, NeurIPS 2024).

"Fast TRAC: A Parameter-Free Optimizer for Lifelong Reinforcement Learning" (arXiv 2405.16642).
The base optimizer (Adam, or AdamW with weight decay) runs on its own iterate ``θ_base``; the
network's parameters are that iterate's displacement from a reference point ``θ_ref`` (the
parameters at the first step), scaled by a learned ``S ≥ 0``::

    Δ_t      = θ_base,t − θ_ref
    h_t      = ⟨g_t, Δ_t⟩                                  (g_t: the gradient at θ_t, all parameters)
    θ_base,t+1 = Base(θ_base,t, g_t)                         (one Adam / AdamW step)
    v_t,j    = β_j² v_t−1,j + h_t²
    σ_t,j    = β_j σ_t−1,j − h_t
    s_t,j    = s_init / erfi(1/√2) · erfi(σ_t,j / (√(2 v_t,j) + ε))
    S_t      = max(0, Σ_j s_t,j)
    θ_t+1    = θ_ref + S_t (θ_base,t+1 − θ_ref)

over the discount factors ``β ∈ {0.9, 0.99, 0.999, 0.9999, 0.99999, 0.999999}``, with
``s_init = ε = 1e-8`` and ``v_0 = σ_0 = 0`` (so ``S`` starts at 0: the first step leaves the
parameters at ``θ_ref``, and ``S`` stays 0 while the gradients are 0). ``erfi`` is the imaginary
error function. ``S`` is the one learned quantity: it grows while successive gradients keep
pointing the same way along ``Δ`` and shrinks (pulling the parameters back toward ``θ_ref``) when
they turn against it — an adaptive, data-dependent regularisation toward the initialisation.

**Why not the ``trac-optimizer`` package.** Its PyTorch wrapper (0.0.2, the repository's last
change in October 2024) appends a line to a log file and calls ``.item()`` on every step, builds its
optimizer class inside a function (nothing to import when unpickling a checkpoint), keys its saved
state by the parameter tensors themselves (``load_state_dict`` cannot map them to a new model's
parameters) and recovers ``Δ`` as ``(θ − θ_ref)/(S + ε)``, which loses it whenever ``S`` is clipped
to 0. This file implements the same recurrence from the paper with ``θ_base`` stored, its state in
``state_dict`` and checkpoints, and no host synchronisation.

**Parameters changed between steps** (resets, shrink-and-perturb, ReDo) keep their new value:
the change is added to ``θ_ref`` and ``θ_base`` alike, so ``Δ`` is unchanged. A parameter whose
optimizer state is dropped (``rlplast.nets.drop_optimizer_state``, a full reset clearing the state)
restarts with ``θ_ref = θ_base =`` its current value; clearing the whole state also resets the tuner.

Classes: :class:`TRACAdam` and :class:`TRACAdamW` take Adam's / AdamW's arguments, so SB3 builds
them from ``policy_kwargs={"optimizer_class": TRACAdam, "optimizer_kwargs": {...}}``. Cost: about
25 multi-tensor operations per step on top of the base step (measured on one busy CPU thread,
128×128 MLP: ≈ 0.53 ms against Adam's ≈ 0.22 ms per step).

Example:
    >>> import torch
    >>> w = torch.nn.Parameter(torch.ones(3))
    >>> opt = TRACAdam([w], lr=1e-2)
    >>> for _ in range(3):
    ...     opt.zero_grad(); (w ** 2).sum().backward(); _ = opt.step()
    >>> float(opt.scale()) >= 0.0
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, cast, overload

import torch
from torch import Tensor

__all__ = ["BETAS", "TRACAdam", "TRACAdamW", "TRACMixin", "check_trac_settings", "erfi"]

#: TRAC's discount factors β_j (the paper's and the package's).
BETAS: tuple[float, ...] = (0.9, 0.99, 0.999, 0.9999, 0.99999, 0.999999)

#: erfi's argument is clipped to ±this. erfi(10) ≈ 1.5e42 puts each s_j near 1e34, far past any
#: scale a network survives (S ≈ 100 needs an argument near 5), so the clip never binds in a run
#: that has not already diverged.
ERFI_MAX_ARG = 10.0
_ERFI_TERMS = 192  # series terms: relative accuracy ≈ 1e-14 up to |x| = ERFI_MAX_ARG
_TUNER_KEY = "trac"  # the optimizer-wide state entry (a string key in optimizer.state)


def check_trac_settings(betas: Iterable[float], s_init: float, eps: float) -> tuple[float, ...]:
    """TRAC's discount factors as floats, after checking them (in [0, 1)) and ``s_init``, ``eps`` (> 0).

    Raises:
        ValueError: a setting out of range.
    """
    checked = tuple(float(b) for b in betas)
    if not checked or not all(0.0 <= b < 1.0 for b in checked):
        raise ValueError(f"TRAC: discount factors must lie in [0, 1), got {checked}")
    if not s_init > 0.0 or not eps > 0.0:
        raise ValueError(f"TRAC: s_init and eps must be > 0, got {s_init}, {eps}")
    return checked


def erfi(x: Tensor) -> Tensor:
    """The imaginary error function ``erfi(x) = −i erf(ix) = (2/√π) Σ_n x^(2n+1) / (n! (2n+1))``.

    Float64 on ``x``'s device, no host synchronisation. The series' terms ``x^(2n+1)/n!`` are a
    cumulative product of ``x²/n`` (no factorials, no overflow) and all have the sign of ``x``, so
    there is no cancellation; ``|x|`` is clipped to :data:`ERFI_MAX_ARG`. Relative error below 1e-13
    (tested against SciPy).
    """
    x64 = x.to(torch.float64).clamp(-ERFI_MAX_ARG, ERFI_MAX_ARG)
    first, inv_n, weights = _series_constants(x.device)
    ratios = torch.addcmul(first, (x64 * x64).unsqueeze(-1), inv_n)  # [1, x²/1, x²/2, …]
    return x64 * (torch.cumprod(ratios, dim=-1) @ weights)


_SERIES: dict[torch.device, tuple[Tensor, Tensor, Tensor]] = {}


def _series_constants(device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """The erfi series' constants on ``device``, made once: ``e_0``, ``[0, 1/1, 1/2, …]``, ``2/(√π (2n+1))``."""
    cached = _SERIES.get(device)
    if cached is None:
        n = torch.arange(_ERFI_TERMS, dtype=torch.float64)
        first = torch.zeros(_ERFI_TERMS, dtype=torch.float64)
        first[0] = 1.0
        inv_n = torch.where(n > 0, 1.0 / n.clamp_min(1.0), torch.zeros_like(n))
        weights = (2.0 / math.sqrt(math.pi)) / (2.0 * n + 1.0)
        cached = _SERIES[device] = (first.to(device), inv_n.to(device), weights.to(device))
    return cached


#: erfi(1/√2), the tuner's normaliser.
ERFI_INV_SQRT2 = float(erfi(torch.tensor(1.0 / math.sqrt(2.0), dtype=torch.float64)))


class TRACMixin:
    """TRAC around a ``torch.optim`` optimizer; mix in before it (see the module docstring).

    Args:
        params: parameters or parameter groups.
        *args: the base optimizer's arguments.
        trac_betas: the discount factors β_j.
        trac_s_init: ``s_init``.
        trac_eps: ``ε``.
        **kwargs: the base optimizer's keyword arguments (``lr``, ``foreach``, ``weight_decay`` …).
    """

    param_groups: list[dict[str, Any]]
    state: Any

    def __init__(
        self,
        params: Iterable[Any],
        *args: Any,
        trac_betas: Iterable[float] = BETAS,
        trac_s_init: float = 1e-8,
        trac_eps: float = 1e-8,
        **kwargs: Any,
    ) -> None:
        betas = check_trac_settings(trac_betas, trac_s_init, trac_eps)
        super().__init__(params, *args, **kwargs)  # type: ignore[call-arg]
        self.trac_betas = betas
        self.trac_s_init = float(trac_s_init)
        self.trac_eps = float(trac_eps)

    # ------------------------------------------------------------------ state
    def _tuner(self, device: torch.device) -> dict[str, Tensor]:
        """The optimizer-wide tuner state: ``β``, and ``v``, ``σ``, ``s`` and the applied ``S`` created
        at zero (float64)."""
        tuner = self.state.get(_TUNER_KEY)
        if tuner is None:
            zeros = torch.zeros(len(self.trac_betas), dtype=torch.float64, device=device)
            betas = torch.tensor(self.trac_betas, dtype=torch.float64).to(device)
            tuner = self.state[_TUNER_KEY] = {
                "betas": betas,
                "v": zeros,
                "sigma": zeros.clone(),
                "s": zeros.clone(),
                "scale": torch.zeros((), dtype=torch.float64, device=device),
            }
        return tuner

    def scale(self) -> Tensor:
        """``S = max(0, Σ_j s_j)``: the factor on ``θ_base − θ_ref`` (0 before the first step)."""
        tuner = self.state.get(_TUNER_KEY)
        if tuner is None:
            return torch.zeros((), dtype=torch.float64)
        return tuner["scale"]

    def __getstate__(self) -> dict[str, Any]:
        # torch's Optimizer pickles only defaults, state and param_groups; keep TRAC's settings.
        state = cast(dict[str, Any], super().__getstate__())  # type: ignore[misc]
        state.update(trac_betas=self.trac_betas, trac_s_init=self.trac_s_init, trac_eps=self.trac_eps)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict``; the tuner state (not a parameter's) is copied to the parameters' device."""
        super().load_state_dict(state_dict)  # type: ignore[misc]
        tuner = self.state.get(_TUNER_KEY)
        if tuner is not None:
            device = next(p.device for group in self.param_groups for p in group["params"])
            self.state[_TUNER_KEY] = {
                k: v.detach().to(device=device, dtype=torch.float64, copy=True) for k, v in tuner.items()
            }

    def log_values(self) -> dict[str, float]:
        """``train/trac_scale``: the current ``S`` (one host transfer)."""
        return {"train/trac_scale": float(self.scale())}

    # ------------------------------------------------------------------ the step
    def _update_scale(self, h: Tensor, tuner: dict[str, Tensor]) -> Tensor:
        """The erfi tuner: update ``v``, ``σ``, ``s`` with ``h_t`` and return the new ``S``."""
        betas, v, sigma, s = tuner["betas"], tuner["v"], tuner["sigma"], tuner["s"]
        v.mul_(betas * betas).add_(h * h)
        sigma.mul_(betas).sub_(h)
        arg = sigma / (torch.sqrt(2.0 * v) + self.trac_eps)
        s.copy_((self.trac_s_init / ERFI_INV_SQRT2) * erfi(arg))
        return s.sum().clamp_min(0.0)

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One TRAC step: the base optimizer's step on ``θ_base``, then ``θ = θ_ref + S (θ_base − θ_ref)``."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            return loss
        tuner = self._tuner(params[0].device)
        scale = tuner["scale"]  # the S the parameters were last composed with
        ops = _ListOps(params)
        refs: list[Tensor] = []
        bases: list[Tensor] = []
        new: dict[Tensor, tuple[Tensor, Tensor]] = {}
        for p in params:
            st = self.state.get(p)
            if st is None or "trac_ref" not in st:
                # First step of this parameter (or its optimizer state was dropped): θ_ref = θ_base = θ.
                new[p] = (p.detach().clone(), p.detach().clone())
                ref, base = new[p]
            else:
                ref, base = st["trac_ref"], st["trac_base"]
            refs.append(ref)
            bases.append(base)
        # Exactly 0 unless a parameter was changed since the last step: keep that change (θ_ref and
        # θ_base move with it, Δ = θ_base − θ_ref stays).
        moved = ops.sub(params, ops.compose(refs, bases, scale))
        ops.add_(refs, moved)
        ops.add_(bases, moved)
        h = ops.dot([p.grad for p in params], ops.sub(bases, refs))  # type: ignore[misc]
        ops.copy_(params, bases)  # the base optimizer steps from its own iterate
        super().step()  # type: ignore[misc]
        ops.copy_(bases, params)
        for p, (ref, base) in new.items():  # after the base step, which initialises its own state
            self.state[p]["trac_ref"] = ref
            self.state[p]["trac_base"] = base
        scale.copy_(self._update_scale(h, tuner))
        ops.copy_(params, ops.compose(refs, bases, scale))
        return loss


class _ListOps:
    """Elementwise operations on lists of tensors: torch's multi-tensor (``foreach``) kernels when every
    tensor shares the first one's device and dtype (one dispatch per list), else one per tensor.

    The same instance (hence the same kernels) composes the parameters and later checks them, so
    ``θ_ref + S (θ_base − θ_ref)`` is reproduced bit for bit.
    """

    def __init__(self, like: list[Tensor]) -> None:
        first = like[0]
        self.foreach = all(t.device == first.device and t.dtype == first.dtype for t in like)
        self.dtype = first.dtype

    def sub(self, a: list[Tensor], b: list[Tensor]) -> list[Tensor]:
        if self.foreach:
            return list(torch._foreach_sub(a, b))
        return [x - y for x, y in zip(a, b, strict=True)]

    def add_(self, a: list[Tensor], b: list[Tensor]) -> None:
        if self.foreach:
            torch._foreach_add_(a, b)
        else:
            for x, y in zip(a, b, strict=True):
                x.add_(y)

    def copy_(self, dst: list[Tensor], src: list[Tensor]) -> None:
        if self.foreach:
            torch._foreach_copy_(dst, src)
        else:
            for x, y in zip(dst, src, strict=True):
                x.copy_(y)

    def compose(self, refs: list[Tensor], bases: list[Tensor], scale: Tensor) -> list[Tensor]:
        """``θ_ref + S (θ_base − θ_ref)`` for every parameter."""
        out = self.sub(bases, refs)
        if self.foreach:
            torch._foreach_mul_(out, scale.to(self.dtype))
            torch._foreach_add_(out, refs)
            return out
        return [r + d * scale.to(r.dtype) for r, d in zip(refs, out, strict=True)]

    def dot(self, a: list[Tensor], b: list[Tensor]) -> Tensor:
        """``Σ ⟨a_i, b_i⟩`` in float64 (one concatenated product)."""
        flat_a = torch.cat([x.reshape(-1) for x in a]).to(torch.float64)
        flat_b = torch.cat([x.reshape(-1) for x in b]).to(torch.float64)
        return torch.dot(flat_a, flat_b)


class TRACAdam(TRACMixin, torch.optim.Adam):
    """TRAC around ``torch.optim.Adam`` (Adam's arguments plus ``trac_betas``, ``trac_s_init``, ``trac_eps``)."""


class TRACAdamW(TRACMixin, torch.optim.AdamW):
    """TRAC around ``torch.optim.AdamW`` (decoupled weight decay on ``θ_base``)."""
