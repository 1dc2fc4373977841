"""Interventions per population member: the single-run classes, one instance per member.

Every member gets its own instances of the interventions (so members may differ in intervention
parameters, e.g. a sweep over a reset period in one population), each set up on the member's view
(:class:`~rlplast.population.engine.MemberView`), which offers what interventions use from a
``PlasticDQN``: ``q_net`` / ``q_net_target`` (modules whose parameters alias the member's slices of
the stacked tensors, so an in-place change acts on that member only), ``policy.optimizer.state``
(the member's Adam entries), ``n_updates``, ``num_timesteps``, ``replay_size()`` /
``replay_states()`` / ``replay_sample()``, ``td_target()`` (the member's DQN or Double DQN
targets), ``n_envs``, ``action_space``, ``device``, and the three helpers of the
:class:`~rlplast.interventions.base.Intervention` base that differ in a population:

* ``parameters_for_loss()`` — differentiable slices of the stacked parameters (a view's own
  parameters are aliases outside the stack's autograd graph);
* ``add_feature_gradient(features, grad)`` — a member's features are a slice of the stacked
  features, which the TD loss does not use directly, so a gradient for them is added to the stacked
  features' gradient here (one hook per update for all members);
* ``random_stream()`` — the member's own torch random stream (seeded from the member's seed),
  swapped in while an event draws, so a member's re-initialisations depend on nothing but its seed
  and its own events.

:class:`PopulationInterventions` runs the hooks through the population's seams: ``loss`` from
``Population.loss_terms`` with member ``i``'s slices of the batch, the features ``(S, B, D)`` and
the Q-values ``(S, B, A)``; ``after_update`` from ``Population.after_update_hooks``;
``on_task_switch`` when member ``i``'s env reports a new task (``Population.task_switch_hooks``).
Only hooks a class overrides are called, so an intervention without a loss term costs nothing in
the loss, and one without events nothing after an update.

Example:
    >>> from rlplast.population import Population
    >>> pop = Population("MlpPolicy", "CartPole-v1", seeds=[0, 1], learning_starts=100,
    ...                  interventions=[[{"name": "reset_last_layers", "every_steps": 200}],
    ...                                 [{"name": "reset_last_layers", "every_steps": 400}]])
    >>> pop = pop.learn(1_000)
    >>> pop.interventions.log_values(1)  # doctest: +SKIP
    {'intervention/resets': 2.0}
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor

from rlplast.errors import UserError
from rlplast.interventions.base import Intervention, build_intervention
from rlplast.population.rng import INTERVENTIONS, member_generator

if TYPE_CHECKING:
    from rlplast.agents.dqn import PlasticDQN
    from rlplast.population.engine import Population
    from rlplast.population.replay import ReplaySamples

__all__ = [
    "MEMBER_VIEW_METHODS",
    "InterventionSpec",
    "MemberRandomStream",
    "PopulationInterventions",
    "build_member_interventions",
]

#: The agent methods a member view (:class:`~rlplast.population.engine.MemberView`) offers, as
#: PlasticDQN does; an intervention instance whose ``model_needs`` (optional: a tuple of method
#: names) lists another one is refused when the population is built (kept in step with
#: ``MemberView`` by the population tests).
MEMBER_VIEW_METHODS = frozenset(
    {
        "replay_size",
        "replay_states",
        "replay_sample",
        "td_target",
        "parameters_for_loss",
        "add_feature_gradient",
        "random_stream",
    }
)

#: An intervention as a config entry (``{"name": "redo", "tau": 0.1}``) or an instance not yet set up.
InterventionSpec = Mapping[str, Any] | Intervention


# ------------------------------------------------------------------------------ building
def build_member_interventions(specs: Sequence[Any] | None, n_members: int) -> list[list[Intervention]]:
    """Each member's intervention instances, checked to run per member.

    Args:
        specs: ``None`` or ``[]`` (none); a list of :data:`InterventionSpec` that every member gets
            (a config entry is built once per member, an instance is copied for each member); or
            one such list per member (members may differ in intervention parameters), where
            instances are used as given and must not be shared between members.
        n_members: S.

    Returns:
        One list of fresh (not yet set up) instances per member.

    Raises:
        UserError: a bad spec (as :func:`rlplast.interventions.build_intervention` says), per-member
            lists that do not match the members, an instance given to two members or already set
            up, or an intervention that cannot run per member (its ``per_member`` is False; the
            message gives its ``per_member_reason``).
    """
    entries = list(specs or ())
    per_member = [isinstance(e, (list, tuple)) for e in entries]
    if any(per_member) and not all(per_member):
        raise UserError(
            "population: interventions must be a list of specs for every member or one list per "
            "member, not a mix of both"
        )
    if entries and all(per_member):
        if len(entries) != n_members:
            raise UserError(f"population: {len(entries)} intervention lists for {n_members} members")
        built = [[_build(spec, copy_instance=False) for spec in member] for member in entries]
    else:
        built = [[_build(spec, copy_instance=True) for spec in entries] for _ in range(n_members)]
    seen: dict[int, int] = {}
    for i, member in enumerate(built):
        for intervention in member:
            j = seen.setdefault(id(intervention), i)
            if j != i or sum(x is intervention for x in member) > 1:
                raise UserError(
                    f"population: intervention '{intervention.name}' is given twice (members {j} and "
                    f"{i}); every member needs its own instance"
                )
    return built


def _build(spec: Any, copy_instance: bool) -> Intervention:
    """One intervention from a config entry or an instance, checked to run per member."""
    if isinstance(spec, Intervention):
        if spec.__dict__.get("model") is not None:
            raise UserError(
                f"population: intervention '{spec.name}' is already set up on an agent; give the "
                "population config entries or fresh instances"
            )
        intervention = copy.deepcopy(spec) if copy_instance else spec
    elif isinstance(spec, Mapping):
        intervention = build_intervention(dict(spec))
    else:
        raise UserError(
            f"population: an intervention is a config entry (a mapping with a 'name') or an "
            f"Intervention, got {spec!r}"
        )
    cls = type(intervention)
    if not cls.per_member:
        reason = cls.per_member_reason or f"{cls.__name__}.per_member is False"
        raise UserError(f"population: intervention '{cls.name}' cannot run per member: {reason}")
    # Agent methods this instance needs (``model_needs``, e.g. C-CHAIN's automatic coefficient
    # needs ``td_target``) that a member view does not offer: refused here, before anything is built.
    missing = [m for m in getattr(intervention, "model_needs", ()) if m not in MEMBER_VIEW_METHODS]
    if missing:
        raise UserError(
            f"population: intervention '{cls.name}' cannot run per member with these parameters: it "
            f"needs the agent's {', '.join(f'{m}()' for m in missing)}, which a population member does "
            "not offer"
        )
    return intervention


# ------------------------------------------------------------------------------ random streams
class MemberRandomStream:
    """A member's own torch random stream, swapped in for torch's global generators while it draws.

    Seeded from the member's seed alone (``SeedSequence(seed, spawn_key=(3,))``, see
    :data:`rlplast.population.rng.INTERVENTIONS`), for the CPU generator and, on a CUDA device, that device's
    generator (which ``reset_parameters()`` of CUDA tensors draws from). Entering
    :meth:`scope` saves the global states and sets the member's; leaving it keeps the member's
    advanced state and restores the global ones. Nested scopes are one scope.

    Args:
        seed: the member's seed.
        device: the device of the member's networks.
    """

    def __init__(self, seed: int, device: torch.device | str) -> None:
        device = torch.device(device)
        self._generators: list[torch.Generator] = [torch.default_generator]
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            self._generators.append(torch.cuda.default_generators[index])
        self._states: list[Tensor] = []
        self._depth = 0
        self.manual_seed(int(member_generator(seed, INTERVENTIONS).integers(0, 2**63)))

    def manual_seed(self, seed: int) -> None:
        """Restart the stream at ``torch.manual_seed(seed)``'s state (global generators untouched)."""
        saved = [g.get_state() for g in self._generators]
        try:
            self._states = [g.manual_seed(seed).get_state() for g in self._generators]
        finally:
            for g, state in zip(self._generators, saved, strict=True):
                g.set_state(state)

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Draws inside come from this stream; the global generators are as before afterwards."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        generators = self._generators
        saved = [g.get_state() for g in generators]
        for g, state in zip(generators, self._states, strict=True):
            g.set_state(state)
        self._depth = 1
        try:
            yield
        finally:
            self._depth = 0
            self._states = [g.get_state() for g in generators]
            for g, state in zip(generators, saved, strict=True):
                g.set_state(state)

    def state_dict(self) -> list[Tensor]:
        """The generator states (CPU byte tensors)."""
        return [s.clone() for s in self._states]

    def load_state_dict(self, state: Sequence[Tensor]) -> None:
        """Restore :meth:`state_dict`."""
        if len(state) != len(self._generators):
            raise ValueError(f"{len(state)} generator states for {len(self._generators)} generators")
        self._states = [torch.as_tensor(s).clone() for s in state]


# ------------------------------------------------------------------------------ member batches
class _MemberBatches:
    """Member slices of a stacked batch, each field unbound once on first use."""

    FIELDS = ("observations", "actions", "next_observations", "dones", "rewards", "discounts")

    def __init__(self, batch: ReplaySamples) -> None:
        self.batch = batch
        self._fields: dict[str, Sequence[Tensor] | None] = {}

    def field(self, name: str) -> Sequence[Tensor] | None:
        if name not in self._fields:
            stacked = getattr(self.batch, name)
            self._fields[name] = None if stacked is None else stacked.unbind(0)
        return self._fields[name]


class MemberBatch:
    """Member ``index``'s slice of a stacked replay batch, with the fields of SB3's samples.

    ``observations`` ``(B, ...)``, ``actions`` ``(B, 1)``, ``next_observations``, ``dones``,
    ``rewards`` ``(B, 1)`` and ``discounts`` (None for 1-step replay), sliced on first access.
    """

    __slots__ = ("_batches", "_index")

    def __init__(self, batches: _MemberBatches, index: int) -> None:
        self._batches = batches
        self._index = index

    def __getattr__(self, name: str) -> Tensor | None:
        if name not in _MemberBatches.FIELDS:
            raise AttributeError(
                f"a replay batch has no field '{name}'; fields: {', '.join(_MemberBatches.FIELDS)}"
            )
        parts = self._batches.field(name)
        return None if parts is None else parts[self._index]


# ------------------------------------------------------------------------------ the adapter
def _overrides(intervention: Intervention, hook: str) -> bool:
    """Whether the intervention's class overrides the base class's ``hook`` (a method or classmethod)."""
    ours, base = getattr(type(intervention), hook), getattr(Intervention, hook)
    return getattr(ours, "__func__", ours) is not getattr(base, "__func__", base)


class PopulationInterventions:
    """Every member's interventions, run through the population's seams.

    Built by :class:`~rlplast.population.engine.Population` (its ``interventions`` argument;
    ``pop.interventions``); :meth:`setup` sets each instance up on its member's view and registers
    the hooks that some instance overrides.

    A member's interventions fail alone: an exception in one of its hooks marks that member failed
    (``Population.fail_member``, as the population runner does for a member's metrics), its
    hooks are not called again and its loss terms of that update are dropped, while the other
    members train on. A stacked loss that raises fails every member it computes and is not called
    again; one that did not raise keeps computing a failed member's row (its slices keep training
    in the stack, unread, like the rest of a failed member).

    Args:
        population: the population.
        members: one list of intervention instances per member (see
            :func:`build_member_interventions`).

    Attributes:
        members: the instances, ``members[i]`` member ``i``'s, in the order given.
        streams: each member's :class:`MemberRandomStream`.
    """

    def __init__(self, population: Population, members: Sequence[Sequence[Intervention]] = ()) -> None:
        self.population = population
        n = population.n_members
        self.members: list[list[Intervention]] = [list(m) for m in members] or [[] for _ in range(n)]
        if len(self.members) != n:
            raise ValueError(f"{len(self.members)} intervention lists for {n} members")
        self.streams = [MemberRandomStream(seed, population.device) for seed in population.seeds]
        self._loss: list[tuple[int, list[Intervention]]] = []
        # Classes with a stacked loss: one call per update for their instances (see setup).
        self._stacked: list[tuple[type[Intervention], list[tuple[int, Intervention]]]] = []
        self._after_update: list[tuple[int, Intervention]] = []
        self._on_switch: list[list[Intervention]] = [[] for _ in range(n)]
        # The feature slices handed to the members in the loss call under way, and the gradients
        # their interventions add to them (see add_feature_gradient).
        self._slices: Sequence[Tensor] | None = None
        #: Members whose interventions raised (see the class docstring).
        self.failed: set[int] = set()
        self._feature_grads: list[Tensor | None] = []
        self._ready = False

    def setup(self) -> None:
        """Set every instance up on its member's view and register the hooks (once)."""
        if self._ready:
            return
        pop = self.population
        stacked: dict[type[Intervention], list[tuple[int, Intervention]]] = {}
        for i, interventions in enumerate(self.members):
            view = pop.member(i)
            for intervention in interventions:
                # A member view offers the part of PlasticDQN's surface interventions use.
                intervention.setup(cast("PlasticDQN", view))
            losses, seen = [], set()
            for iv in interventions:
                if not _overrides(iv, "loss"):
                    continue
                if _overrides(iv, "stacked_loss") and type(iv) not in seen:
                    seen.add(type(iv))  # the first of its class in the member's list
                    stacked.setdefault(type(iv), []).append((i, iv))
                else:
                    losses.append(iv)
            if losses:
                self._loss.append((i, losses))
            self._after_update.extend((i, iv) for iv in interventions if _overrides(iv, "after_update"))
            self._on_switch[i] = [iv for iv in interventions if _overrides(iv, "on_task_switch")]
        self._stacked = list(stacked.items())
        if self._loss or self._stacked:
            pop.loss_terms.append(self.loss)
        if self._after_update:
            pop.after_update_hooks.append(self.after_update)
        if any(self._on_switch):
            pop.task_switch_hooks.append(self.on_task_switch)
        self._ready = True

    def __len__(self) -> int:
        """Number of intervention instances over all members."""
        return sum(len(m) for m in self.members)

    # ------------------------------------------------------------------ hooks
    def loss(self, batch: ReplaySamples, features: Tensor, q_values: Tensor) -> Tensor | None:
        """The members' loss terms on their slices, summed (a :data:`~rlplast.population.engine.LossTerm`).

        Member ``i``'s interventions get ``batch`` sliced to member ``i`` (a :class:`MemberBatch`),
        ``features[i]`` ``(B, D)`` and ``q_values[i]`` ``(B, A)``; gradients flow through the slices
        to the stacked parameters. Gradients that interventions add to their features
        (:meth:`add_feature_gradient`) are added to ``features``' gradient by one hook. A class
        with a stacked loss (:meth:`Intervention.stacked_loss`) is called once for its instances.

        Returns:
            The sum of every member's terms (0-dim), or None when no term was returned.
        """
        total: Tensor | None = None
        if self._loss:
            total = self._member_losses(batch, features, q_values)
        params = self.population.net.params
        for cls, group in self._stacked:
            try:
                extra = cls.stacked_loss(group, params, batch, features, q_values)
            except Exception as exc:  # noqa: BLE001 - the members' own failure, isolated
                self._stacked = [(c, g) for c, g in self._stacked if g is not group]
                for i, _ in group:
                    self._fail(i, exc)
                continue
            if extra is not None:
                total = extra if total is None else total + extra
        return total

    def _member_losses(self, batch: ReplaySamples, features: Tensor, q_values: Tensor) -> Tensor | None:
        """The per-member ``loss`` calls on the members' slices, and their feature gradients."""
        feats = features.unbind(0)
        qs = q_values.unbind(0)
        batches = _MemberBatches(batch)
        self._slices = feats
        self._feature_grads = [None] * len(feats)
        total: Tensor | None = None
        try:
            for i, interventions in self._loss:
                member_batch = cast("Any", MemberBatch(batches, i))
                member_total: Tensor | None = None
                try:
                    for intervention in interventions:
                        extra = intervention.loss(member_batch, feats[i], qs[i])
                        if extra is not None:
                            member_total = extra if member_total is None else member_total + extra
                except Exception as exc:  # noqa: BLE001 - the member's own failure, isolated
                    self._feature_grads[i] = None
                    self._fail(i, exc)
                    continue
                if member_total is not None:
                    total = member_total if total is None else total + member_total
        finally:
            self._slices = None
        grads, self._feature_grads = self._feature_grads, []
        if any(g is not None for g in grads):
            stacked = torch.stack(
                [g if g is not None else torch.zeros_like(f) for g, f in zip(grads, feats, strict=True)]
            )
            features.register_hook(lambda g: g + stacked)
        return total

    def add_feature_gradient(self, member: int, features: Tensor, grad: Tensor) -> None:
        """Add ``grad`` to the gradient of member ``member``'s features slice in this update.

        Called by the member view's ``add_feature_gradient`` (the :class:`Intervention` helper).
        For the slice handed to the member in the loss call under way, the gradient is collected
        and added to the stacked features' gradient; any other tensor gets an ordinary tensor hook.
        """
        slices = self._slices
        if slices is not None and features is slices[member]:
            previous = self._feature_grads[member]
            self._feature_grads[member] = grad if previous is None else previous + grad
        else:
            features.register_hook(lambda g: g + grad)

    def after_update(self, n_updates: int) -> None:
        """Every member's ``after_update(n_updates, num_timesteps)`` (classes that override it)."""
        num_timesteps = self.population.num_timesteps
        for i, intervention in self._after_update:
            if i in self.failed:  # failed earlier in this loop
                continue
            try:
                intervention.after_update(n_updates, num_timesteps)
            except Exception as exc:  # noqa: BLE001 - the member's own failure, isolated
                self._fail(i, exc)

    def on_task_switch(self, member: int, task_id: int) -> None:
        """Member ``member``'s env reported task ``task_id``: its interventions' task-switch hooks."""
        num_timesteps = self.population.num_timesteps
        for intervention in self._on_switch[member]:
            try:
                intervention.on_task_switch(task_id, num_timesteps)
            except Exception as exc:  # noqa: BLE001 - the member's own failure, isolated
                self._fail(member, exc)
                return

    def _fail(self, member: int, error: Exception) -> None:
        """Mark ``member`` failed and call none of its interventions again."""
        if member in self.failed:
            return
        self.failed.add(member)
        self.population.fail_member(member, error)
        self._loss = [(i, ivs) for i, ivs in self._loss if i != member]
        self._after_update = [(i, iv) for i, iv in self._after_update if i != member]
        self._on_switch[member] = []

    def random_stream(self, member: int) -> contextlib.AbstractContextManager[None]:
        """The scope in which torch's global generators draw member ``member``'s stream."""
        return self.streams[member].scope()

    # ------------------------------------------------------------------ logging and state
    def log_values(self, member: int) -> dict[str, float]:
        """Member ``member``'s intervention scalars for one logging row (each intervention's
        ``log_values()``, merged in list order; call once per logging step, as for a single run)."""
        values: dict[str, float] = {}
        for intervention in self.members[member]:
            values.update(intervention.log_values())
        return values

    def member_state_dict(self, member: int) -> dict[str, Any]:
        """Everything member ``member``'s interventions need to resume: their ``state_dict()``s
        (in list order, with their names) and the member's random stream."""
        return {
            "names": [iv.name for iv in self.members[member]],
            "interventions": [iv.state_dict() for iv in self.members[member]],
            "random_stream": self.streams[member].state_dict(),
        }

    def load_member_state_dict(self, member: int, state: Mapping[str, Any]) -> None:
        """Restore :meth:`member_state_dict` into member ``member``'s (set-up) interventions.

        Raises:
            ValueError: the state is of other interventions.
        """
        names = [iv.name for iv in self.members[member]]
        if list(state["names"]) != names:
            raise ValueError(f"member {member}: state of interventions {list(state['names'])}, have {names}")
        for intervention, sub in zip(self.members[member], state["interventions"], strict=True):
            intervention.load_state_dict(sub)
        self.streams[member].load_state_dict(state["random_stream"])

    def state_dict(self) -> dict[str, Any]:
        """Every member's :meth:`member_state_dict`, as ``{"members": [...]}``."""
        return {"members": [self.member_state_dict(i) for i in range(len(self.members))]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        members = state["members"]
        if len(members) != len(self.members):
            raise ValueError(f"state of {len(members)} members, population of {len(self.members)}")
        for i, sub in enumerate(members):
            self.load_member_state_dict(i, sub)
