"""Plasticity injection (Nikishin, Oh, Ostrovski, Lyle, Pascanu, Dabney, Barreto, NeurIPS 2023)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn import functional as F

from rlplast.errors import UserError
from rlplast.fields import config_field
from rlplast.interventions._schedule import ScheduledIntervention
from rlplast.interventions.base import register
from rlplast.nets import copy_parameters, drop_optimizer_state, reinitialise

if TYPE_CHECKING:
    from rlplast.agents.dqn import PlasticDQN

__all__ = ["InjectedHead", "PlasticityInjection"]


class InjectedHead(nn.Module):
    """A Q-network head after ``K ≥ 1`` plasticity injections.

    ``live`` is the trainable head (the original head modules, whose parameters the optimizer
    holds). Every injection ``k`` froze two versions of it as buffers: ``old_k``, the head's
    parameters just before injection ``k``, and ``fresh_k``, the fresh initialisation ``live``
    restarted from. The output is

        ``Q(x) = live(x) + Σ_k [old_k(x) − fresh_k(x)]``,

    evaluated as ``F_K(x) + (live(x) − fresh_K(x))`` with ``F_1 = old_1`` and
    ``F_k = F_{k−1} + (old_k − fresh_{k−1})``: the same sum, in an order whose value at the moment
    of an injection is bitwise the value before it (``live = fresh_K`` there, so the last
    bracket is exactly 0 and ``F_K`` repeats the previous output's operations). Frozen versions
    are evaluated with the live modules' own operations (``F.linear`` for ``nn.Linear``, private
    copies of parameter-free modules such as activations, so hooks on the live modules — the
    metrics' — see the live head only). Gradients reach ``x`` (the layers below the head) through
    every term; only the frozen versions' tensors get none.

    Args:
        live: the head's modules, in order (they move into this module unchanged).
    """

    def __init__(self, live: nn.Sequential) -> None:
        super().__init__()
        self.live = live
        self.injections = 0
        self._n_params = len(list(live.parameters()))
        # For each live module: (attribute, index into the head's parameter list) per parameter.
        index = {id(p): j for j, p in enumerate(live.parameters())}
        self._slots: list[list[tuple[str, int]]] = [
            [(attr, index[id(p)]) for attr, p in m.named_parameters(recurse=False)] for m in live
        ]
        # Parameter-free modules run on private copies: not submodules, so not hooked, not walked.
        self._plain: list[nn.Module | None] = [
            None if slots else copy.deepcopy(m) for m, slots in zip(live, self._slots, strict=True)
        ]

    def frozen(self, kind: str, k: int) -> list[Tensor]:
        """The frozen version ``kind`` (``old`` or ``fresh``) of injection ``k`` (0-based)."""
        return [getattr(self, f"{kind}{k}_{j}") for j in range(self._n_params)]

    @torch.no_grad()
    def push(self, old: Sequence[Tensor], fresh: Sequence[Tensor]) -> None:
        """Record one more injection: freeze ``old`` and ``fresh`` (copied) as buffers."""
        k = self.injections
        for kind, tensors in (("old", old), ("fresh", fresh)):
            for j, t in enumerate(tensors):
                self.register_buffer(f"{kind}{k}_{j}", t.detach().clone())
        self.injections = k + 1

    def _apply_frozen(self, tensors: Sequence[Tensor], x: Tensor) -> Tensor:
        for module, slots, plain in zip(self.live, self._slots, self._plain, strict=True):
            if plain is not None:
                x = plain(x)
            elif type(module) is nn.Linear:
                named = dict(slots)
                bias = tensors[named["bias"]] if "bias" in named else None
                x = F.linear(x, tensors[named["weight"]], bias)
            else:
                x = functional_call(module, {attr: tensors[j] for attr, j in slots}, (x,))
        return x

    def forward(self, x: Tensor) -> Tensor:
        """``F_K(x) + (live(x) − fresh_K(x))`` (see the class docstring)."""
        n = self.injections
        if n == 0:
            return self.live(x)
        acc = self._apply_frozen(self.frozen("old", 0), x)
        for k in range(1, n):
            acc = acc + (
                self._apply_frozen(self.frozen("old", k), x)
                - self._apply_frozen(self.frozen("fresh", k - 1), x)
            )
        return acc + (self.live(x) - self._apply_frozen(self.frozen("fresh", n - 1), x))


@register("plasticity_injection")
@dataclass
class PlasticityInjection(ScheduledIntervention):
    """At each event, freeze the Q-network's head and add a fresh head minus its frozen copy.

    The paper's injection replaces the head ``h_θ`` by ``h_θ(x) + h_θ'(x) − h_θ'⁻(x)``: ``θ``
    (the current head) frozen, ``θ'`` a fresh initialisation that is trained, ``θ'⁻`` a frozen copy
    of ``θ'``. Right after an injection the Q-values are unchanged (``h_θ' = h_θ'⁻``), the number
    of trainable parameters is the same, and only the new head (plus the layers below it, as
    before) learns. Here ``θ'`` is drawn *into the head's own parameter tensors* (each module's
    ``reset_parameters``, global torch RNG), so the optimizer keeps holding exactly the trainable
    parameters — the new head's — and their Adam state is cleared, as for new parameters; ``θ``
    and ``θ'⁻`` become buffers of an :class:`InjectedHead` that takes the head's place in
    ``q_net.q_net``. Repeated injections compose: injection ``K`` freezes the head as it is then,
    so ``Q = h_live + Σ_k (h_old_k − h_fresh_k)`` and every forward pass evaluates the head
    ``2K + 1`` times. The head's modules are renamed by the move (``q_net.2`` becomes
    ``q_net.2.live.0``), and so are the per-layer metric columns of the head.

    **The head** is the last ``n_layers`` ``nn.Linear`` layers of the MLP after the features
    extractor (``q_net.q_net``), with the modules between them (activations, LayerNorm). The
    paper injects into the head of its Atari network; the default ``n_layers: 2`` (its two fully
    connected layers) is our reading, not checked against the paper's code. With ``n_layers: 1`` the head is linear and an injection is exactly a reset
    of its Adam state (a linear ``old − fresh`` folds into the trained weights), so use a deeper
    head. A network whose ``q_net.q_net`` is not an ``nn.Sequential`` ending in an
    ``nn.Linear``, or has fewer linear layers than ``n_layers`` (e.g. MinAtar's CNN with an empty
    ``agent.net_arch``: its hidden layer is inside the extractor), is refused at setup.

    **The target network** gets the same structure at the same moment and is synced to the online
    network there (all parameters copied, the same frozen versions): an injection is also a target
    update, so the TD targets right after it are the (unchanged) online network's. Later syncs
    copy the parameters as usual; the frozen versions never change.

    Fires on an env-step interval and/or at task switches (see :mod:`._schedule`); logs
    ``intervention/injections``. Cannot run per member of a population (it changes the network's
    structure). Checkpoints keep the injected network (they pickle the agent); a ``model.zip``
    written after an injection has the new head's parameter names and frozen buffers, so
    ``PlasticDQN.load`` into a fresh policy refuses it.

    Example:
        >>> from rlplast.interventions import build_intervention
        >>> inject = build_intervention({"name": "plasticity_injection", "when": "task_switch"})
    """

    per_member: ClassVar[bool] = False
    per_member_reason: ClassVar[str] = (
        "it adds a head to the Q-network, and a population's members share one stacked network structure"
    )

    n_layers: int = config_field(
        2, "the head: the last n_layers linear layers of q_net.q_net (the MLP after the extractor)", min=1
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_layers < 1:
            raise UserError(f"intervention '{self.name}': n_layers must be >= 1, got {self.n_layers}")

    def setup(self, model: PlasticDQN) -> None:
        super().setup(model)
        self._start = self._head_start(self.online_net)

    def _head_start(self, q_net: nn.Module) -> int:
        """Index in ``q_net.q_net`` of the head's first module; one-line errors for other networks."""
        head = getattr(q_net, "q_net", None)
        if isinstance(head, nn.Sequential) and len(head) and isinstance(head[-1], InjectedHead):
            raise UserError(f"intervention '{self.name}': the Q-network already has an injected head")
        if not (isinstance(head, nn.Sequential) and len(head) and isinstance(head[-1], nn.Linear)):
            raise UserError(
                f"intervention '{self.name}': needs a Q-network with a linear head (q_net.q_net, an "
                f"nn.Sequential ending in an nn.Linear); {type(q_net).__name__} has none"
            )
        linear = [i for i, m in enumerate(head) if isinstance(m, nn.Linear)]
        if self.n_layers > len(linear):
            raise UserError(
                f"intervention '{self.name}': n_layers={self.n_layers} but the Q-network's head "
                f"(q_net.q_net, after the features extractor) has only {len(linear)} linear layer"
                f"{'s' if len(linear) != 1 else ''}"
            )
        start = linear[-self.n_layers]
        for module in list(head)[start:]:
            if len(list(module.parameters())) != len(list(module.parameters(recurse=False))):
                raise UserError(
                    f"intervention '{self.name}': cannot freeze the head module {type(module).__name__} "
                    "(it has parameters in nested modules)"
                )
        return start

    def _injected(self, q_net: nn.Module) -> InjectedHead:
        """``q_net``'s injected head, wrapping the head modules at the first injection.

        ``q_net.q_net`` becomes a new ``nn.Sequential`` (body modules, then the
        :class:`InjectedHead` holding the head modules): the same module and parameter objects in
        the same order, in a new container, so caches keyed by the container are rebuilt.
        """
        head = q_net.q_net
        assert isinstance(head, nn.Sequential)
        if isinstance(head[-1], InjectedHead):
            return head[-1]
        modules = list(head)
        injected = InjectedHead(nn.Sequential(*modules[self._start :]))
        q_net.q_net = nn.Sequential(*modules[: self._start], injected)
        return injected

    @property
    def injections(self) -> int:
        """Injections applied to the online network so far."""
        head = getattr(self.online_net, "q_net", None)
        last = head[-1] if isinstance(head, nn.Sequential) and len(head) else None
        return last.injections if isinstance(last, InjectedHead) else 0

    @torch.no_grad()
    def fire(self) -> None:
        """Inject now."""
        online, target = self._injected(self.online_net), self._injected(self.target_net)
        live = list(online.live.parameters())
        old = [p.detach().clone() for p in live]
        reinitialise(online.live)  # θ' drawn in place: the optimizer keeps its tensors
        fresh = [p.detach().clone() for p in live]
        drop_optimizer_state(self.optimizer, live)
        online.push(old, fresh)
        target.push(old, fresh)
        copy_parameters(self.online_net, self.target_net)  # the target: the injected online network

    def log_values(self) -> dict[str, float]:
        return {"intervention/injections": float(self.fires)}

    def state_dict(self) -> dict[str, Any]:
        frozen: dict[str, list[list[Tensor]]] = {"old": [], "fresh": []}
        head = getattr(self.online_net, "q_net", None) if "model" in self.__dict__ else None
        if isinstance(head, nn.Sequential) and isinstance(head[-1], InjectedHead):
            for kind, versions in frozen.items():
                versions.extend(
                    [t.clone() for t in head[-1].frozen(kind, k)] for k in range(head[-1].injections)
                )
        return {**super().state_dict(), **frozen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the schedule and, on a set-up model with fewer injections, its frozen heads.

        A checkpoint restores the injected network itself; this rebuilds it from the state on an
        agent built afresh (the live head's parameters come with the agent's own state).
        """
        super().load_state_dict(state)
        old, fresh = state.get("old", []), state.get("fresh", [])
        if "model" not in self.__dict__ or not old:
            return
        have = self.injections
        if have > len(old):
            raise ValueError(f"plasticity_injection state has {len(old)} injections, the network {have}")
        if have == len(old):
            return
        online, target = self._injected(self.online_net), self._injected(self.target_net)
        device = next(online.live.parameters()).device
        for k in range(have, len(old)):
            o = [t.to(device) for t in old[k]]
            f = [t.to(device) for t in fresh[k]]
            online.push(o, f)
            target.push(o, f)
