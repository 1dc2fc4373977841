"""StackedAdam: torch's Adam / AdamW applied to member-stacked parameters, with a step count per member.

Adam is elementwise, so one update of a stacked tensor ``(S, *shape)`` is S independent Adam
updates, except for two per-member quantities: the step count (which sets the bias corrections)
and, in DQN, the gradient-norm clipping factor (:meth:`StackedAdam.clip_grad_norms`). Here the step count
is kept per parameter *and* per member, in a ``(P, S)`` tensor — torch's Adam keeps one step per
parameter, and an intervention that clears the state of one layer of one member (for example a
last-layer reset) must restart exactly those bias corrections.

The arithmetic is torch 2.x's multi-tensor (``foreach=True``, non-capturable) Adam operation by
operation — ``lerp_`` of the first moment, ``mul_``/``addcmul_`` of the second, the bias
corrections in float64 rounded to float32 where torch rounds its Python-float scalars, then
``param + (step_size · m) / (√v / √bc2 + eps)`` — so on the CPU each member's parameters, moments
and steps are bitwise equal to ``torch.optim.Adam(foreach=True)`` (and SB3's single-tensor
default) on that member's network with the same gradients (tested).

Options (``agent.weight_decay``, ``agent.optimizer: trac``):

* **decoupled weight decay** (``weight_decay`` λ > 0): ``torch.optim.AdamW``'s step — every
  parameter is first multiplied by ``1 − lr·λ`` (one ``_foreach_mul_`` with that Python float, as
  torch's multi-tensor AdamW does), then Adam's update follows; bitwise AdamW per member;
* **TRAC** (``trac``): the step above runs on TRAC's base iterate, and the parameters are
  composed from it by each member's scale tuner (:class:`~rlplast.population.trac.StackedTRAC`).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from rlplast.population.trac import StackedTRAC

__all__ = ["MemberAdamState", "StackedAdam"]


def _member_shape(t: Tensor) -> tuple[int, ...]:
    """``(S, 1, ..., 1)``: broadcasts a per-member value over a stacked tensor."""
    return (t.shape[0],) + (1,) * (t.dim() - 1)


class StackedAdam:
    """Adam (or AdamW, or TRAC around either) over member-stacked parameters; every member's update
    is its own optimizer step.

    The gradients live in buffers the optimizer owns (``params[k].grad`` is ``grads[k]``):
    :meth:`zero_grad` zeroes them and backward accumulates into them, so the per-member views
    that clipping and Adam need are made once.

    Args:
        params: stacked leaf tensors ``(S, *shape)``.
        lr: learning rate.
        betas: Adam's ``(beta1, beta2)``.
        eps: Adam's ``eps``.
        impl: ``"foreach"``: the arithmetic of torch's multi-tensor Adam, on the stacked tensors;
            ``"fused"``: torch's own fused Adam (``torch.optim.Adam(fused=True)``) over every
            member's slices — one pass per tensor, the arithmetic of PlasticDQN with
            ``agent.optimizer_impl: fused`` (which differs from foreach in the last bits).
        weight_decay: AdamW's decoupled weight decay λ (0: Adam). Every step first multiplies the
            parameters by ``1 − lr·λ``.
        trac: TRAC around this optimizer (its state for the same parameters), or None.

    Attributes:
        grads: the gradient buffers, one per parameter, shaped like it.
        exp_avg: first moments, one tensor per parameter, shaped like it.
        exp_avg_sq: second moments.
        steps: ``(P, S)`` float32 step counts (torch's step dtype): parameter ``k`` of member
            ``i`` has taken ``steps[k, i]`` Adam steps since its state was last cleared.
    """

    def __init__(
        self,
        params: Sequence[Tensor],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        impl: str = "foreach",
        weight_decay: float = 0.0,
        trac: StackedTRAC | None = None,
    ) -> None:
        if impl not in ("foreach", "fused"):
            raise ValueError(f"impl must be 'foreach' or 'fused', got {impl!r}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        self.impl = impl
        self.weight_decay = float(weight_decay)
        self.trac = trac
        self.params = list(params)
        if not self.params:
            raise ValueError("StackedAdam needs at least one parameter")
        self.lr = float(lr)
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps = float(eps)
        device = self.params[0].device
        s = self.n_members = self.params[0].shape[0]
        n_params = len(self.params)
        self.grads = [torch.zeros_like(p, memory_format=torch.contiguous_format) for p in self.params]
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.contiguous_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.contiguous_format) for p in self.params]
        self.steps = torch.zeros(n_params, s, dtype=torch.float32, device=device)
        self._lr = torch.tensor(self.lr, dtype=torch.float64, device=device)
        # Per-member scalars broadcast over each stacked tensor through views made once.
        shapes = [_member_shape(p) for p in self.params]
        self._step_size = torch.zeros(n_params, s, dtype=torch.float32, device=device)
        self._bc2_sqrt = torch.ones(n_params, s, dtype=torch.float32, device=device)
        self._clip_coef = torch.ones(s, dtype=torch.float32, device=device)
        self._step_size_views = [self._step_size[k].view(shape) for k, shape in enumerate(shapes)]
        self._bc2_sqrt_views = [self._bc2_sqrt[k].view(shape) for k, shape in enumerate(shapes)]
        self._clip_views = [self._clip_coef.view(shape) for shape in shapes]
        self._grad_rows = [g.view(s, -1) for g in self.grads]
        self._attach_grads()
        self._fused: torch.optim.Adam | None = None
        if impl == "fused":
            self._fused = self._member_adam(fused=True)

    def _member_adam(self, **kwargs: Any) -> torch.optim.Adam:
        """A torch Adam (AdamW with weight decay) over every member's slice of every parameter, whose
        gradients and state are views of the stacked buffers (so both implementations share one state)."""
        slices, state = [], {}
        for k, p in enumerate(self.params):
            for i in range(self.n_members):
                view = nn.Parameter(p.detach()[i])
                view.grad = self.grads[k][i]
                slices.append(view)
                state[view] = {
                    "step": self.steps[k, i],
                    "exp_avg": self.exp_avg[k][i],
                    "exp_avg_sq": self.exp_avg_sq[k][i],
                }
        cls = torch.optim.AdamW if self.weight_decay > 0 else torch.optim.Adam
        adam = cls(
            slices,
            lr=self.lr,
            betas=(self.beta1, self.beta2),
            eps=self.eps,
            weight_decay=self.weight_decay,
            **kwargs,
        )
        for view, entry in state.items():
            adam.state[view] = entry
        return adam

    def _attach_grads(self) -> None:
        for p, g in zip(self.params, self.grads, strict=True):
            if p.grad is not g:
                if p.grad is not None:
                    with torch.no_grad():
                        g.copy_(p.grad)
                p.grad = g

    def zero_grad(self) -> None:
        """Zero the gradient buffers (re-attaching any a caller replaced)."""
        self._attach_grads()
        torch._foreach_zero_(self.grads)

    @torch.no_grad()
    def clip_grad_norms(self, max_norm: float) -> Tensor:
        """``clip_grad_norm_`` per member: each member's gradients scaled by its own global norm.

        For member ``i`` the norm is computed as ``torch.nn.utils.clip_grad_norm_`` computes it
        over that member's parameters — the 2-norm of each parameter's gradient, then the 2-norm of
        those — and its gradients are multiplied by ``min(max_norm / (norm + 1e-6), 1)``: the same
        operations, bitwise equal on the CPU.

        Returns:
            The members' total gradient norms before clipping, ``(S,)`` (on the device, no sync).
        """
        self._attach_grads()
        norms = torch.stack([torch.linalg.vector_norm(g, 2, dim=1) for g in self._grad_rows], 1)
        total = torch.linalg.vector_norm(norms, 2, dim=1)
        torch.clamp(max_norm / (total + 1e-6), max=1.0, out=self._clip_coef)
        torch._foreach_mul_(self.grads, self._clip_views)
        return total

    @torch.no_grad()
    def step(self) -> None:
        """One optimizer step for every member from the gradient buffers (no host synchronisation)."""
        self._attach_grads()
        if self.trac is not None:
            # Read before the base step counts it: a parameter without state starts TRAC afresh.
            self.trac.step(self.params, self.grads, self.steps == 0, self._base_step)
        else:
            self._base_step()

    def _base_step(self) -> None:
        """One Adam / AdamW step of every member on the parameters as they are."""
        if self._fused is not None:
            self._fused.step()
            return
        grads = self.grads
        self.steps.add_(1.0)
        if self.weight_decay:
            # torch's multi-tensor AdamW: params *= 1 - lr * weight_decay (a Python float), before Adam.
            torch._foreach_mul_(self.params, 1 - self.lr * self.weight_decay)
        # torch computes the bias corrections in Python floats (double) and rounds the scalars to
        # float32 inside its kernels; the same here, per parameter and member, on the device.
        steps = self.steps.double()
        bias_correction1 = 1 - self.beta1**steps
        self._step_size.copy_((self._lr / bias_correction1).mul_(-1))
        bias_correction2 = 1 - self.beta2**steps
        self._bc2_sqrt.copy_(bias_correction2.sqrt_())
        torch._foreach_lerp_(self.exp_avg, grads, 1 - self.beta1)
        torch._foreach_mul_(self.exp_avg_sq, self.beta2)
        torch._foreach_addcmul_(self.exp_avg_sq, grads, grads, 1 - self.beta2)
        denom = torch._foreach_sqrt(self.exp_avg_sq)
        torch._foreach_div_(denom, self._bc2_sqrt_views)
        torch._foreach_add_(denom, self.eps)
        # torch's addcdiv_(m, denom, value=step_size) computes param + (step_size * m) / denom.
        update = torch._foreach_mul(self.exp_avg, self._step_size_views)
        torch._foreach_div_(update, denom)
        torch._foreach_add_(self.params, update)

    @torch.no_grad()
    def reset_state(self, member: int, params: Sequence[int] | None = None) -> None:
        """Clear the Adam state (moments and step) of ``member`` for the parameter indices
        ``params`` (all when None) — what ``optimizer.state.pop(p)`` does in torch: the next
        step starts that state afresh (with TRAC: ``θ_ref = θ_base =`` the parameter then). All
        (``params`` None, ``optimizer.state.clear()``) also restarts the member's TRAC tuner, as
        clearing a TRAC optimizer's state does."""
        if params is None and self.trac is not None:
            self.trac.reset_tuner(member)
        for k in range(len(self.params)) if params is None else params:
            self.exp_avg[k][member].zero_()
            self.exp_avg_sq[k][member].zero_()
            self.steps[k, member] = 0.0

    def member_state(self, member: int, views: Sequence[nn.Parameter]) -> MemberAdamState:
        """Member ``member``'s Adam state keyed by ``views`` (its network's parameters, in the
        stacked order), shaped like a ``torch.optim.Adam`` state (see :class:`MemberAdamState`)."""
        return MemberAdamState(self, member, views)

    def state_dict(self) -> dict[str, Any]:
        """Moments and steps, and TRAC's state when it is on (tensors on their device)."""
        state = {
            "exp_avg": [t.clone() for t in self.exp_avg],
            "exp_avg_sq": [t.clone() for t in self.exp_avg_sq],
            "steps": self.steps.clone(),
            "lr": self.lr,
            "betas": (self.beta1, self.beta2),
            "eps": self.eps,
            "weight_decay": self.weight_decay,
        }
        if self.trac is not None:
            state["trac"] = self.trac.state_dict()
        return state

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (in place).

        Raises:
            ValueError: TRAC's state given to an optimizer without TRAC, or missing for one with it.
        """
        if ("trac" in state) != (self.trac is not None):
            raise ValueError(
                "the optimizer state is of "
                + ("TRAC" if "trac" in state else "Adam without TRAC")
                + f", the optimizer is {'TRAC' if self.trac is not None else 'Adam without TRAC'}"
            )
        for dst, src in zip(self.exp_avg, state["exp_avg"], strict=True):
            dst.copy_(src)
        for dst, src in zip(self.exp_avg_sq, state["exp_avg_sq"], strict=True):
            dst.copy_(src)
        self.steps.copy_(state["steps"])
        if self.trac is not None:
            self.trac.load_state_dict(state["trac"])


class MemberAdamState(MutableMapping[Tensor, dict[str, Tensor]]):
    """One member's Adam state, shaped like ``torch.optim.Adam().state``.

    Keys are the member view's parameters; ``state[p]`` is
    ``{"step": 0-dim, "exp_avg": ..., "exp_avg_sq": ...}`` whose tensors are views of the member's
    slices of the stacked state (in-place changes change the stack). ``pop(p)``, ``del state[p]``
    and ``clear()`` clear the state as torch's Adam would on its next step (moments and step to
    zero). A parameter whose step is 0 has no state (``p in state`` is False; this check reads the
    step count, one host transfer).
    """

    def __init__(self, adam: StackedAdam, member: int, views: Sequence[nn.Parameter]) -> None:
        if len(views) != len(adam.params):
            raise ValueError(f"{len(views)} views for {len(adam.params)} stacked parameters")
        self.adam = adam
        self.member = member
        self._index: dict[Tensor, int] = {p: k for k, p in enumerate(views)}
        self._views: list[Tensor] = list(views)

    def _entry(self, k: int) -> dict[str, Tensor]:
        a, i = self.adam, self.member
        return {"step": a.steps[k, i], "exp_avg": a.exp_avg[k][i], "exp_avg_sq": a.exp_avg_sq[k][i]}

    def _has(self, k: int) -> bool:
        return bool(self.adam.steps[k, self.member] > 0)

    def __getitem__(self, p: Tensor) -> dict[str, Tensor]:
        k = self._index[p]
        if not self._has(k):
            raise KeyError("parameter has no Adam state yet")
        return self._entry(k)

    def __setitem__(self, p: Tensor, value: dict[str, Tensor]) -> None:
        k = self._index[p]
        with torch.no_grad():
            for name, dst in self._entry(k).items():
                dst.copy_(value[name])

    def __delitem__(self, p: Tensor) -> None:
        k = self._index[p]
        if not self._has(k):
            raise KeyError("parameter has no Adam state")
        self.adam.reset_state(self.member, [k])

    def pop(self, p: Tensor, *default: Any) -> Any:  # type: ignore[override]
        """Clear ``p``'s state and return a copy of it (``default`` if ``p`` is not the member's).

        Unlike a dict's ``pop``, this never reads the step count, so it makes no host
        synchronisation (interventions call it on every reset): for a parameter that has not
        taken a step yet it returns its empty state (step 0, zero moments) rather than ``default``.
        """
        k = self._index.get(p)
        if k is None:
            if default:
                return default[0]
            raise KeyError("not a parameter of this member")
        old = {name: t.clone() for name, t in self._entry(k).items()}
        self.adam.reset_state(self.member, [k])
        return old

    def clear(self) -> None:
        self.adam.reset_state(self.member)

    def __iter__(self) -> Iterator[Tensor]:
        steps = self.adam.steps[:, self.member].tolist()
        return iter([p for p, s in zip(self._views, steps, strict=True) if s > 0])

    def __len__(self) -> int:
        return int((self.adam.steps[:, self.member] > 0).sum())

    def __contains__(self, p: object) -> bool:
        k = self._index.get(p)  # type: ignore[call-overload]
        return k is not None and self._has(k)
