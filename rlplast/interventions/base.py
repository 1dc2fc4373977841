"""The intervention interface: four hooks that do nothing by default, plus logging and state.

An intervention is a dataclass whose fields are its config parameters, registered by name in
:data:`INTERVENTIONS`. PlasticDQN calls the hooks:

* :meth:`Intervention.setup` once, after the networks and the optimizer exist (an override must
  call ``super().setup(model)`` first);
* :meth:`Intervention.loss` inside every gradient step, with the replay batch and the
  penultimate features and Q-values of the online network's single forward pass;
* :meth:`Intervention.after_update` after every optimizer step;
* :meth:`Intervention.on_task_switch` when the environment reports a new ``task_id``;

plus :meth:`Intervention.log_values` once per logging step and :meth:`Intervention.state_dict` /
:meth:`Intervention.load_state_dict` for checkpoints. After ``setup``, :attr:`Intervention.online_net`,
:attr:`Intervention.target_net`, :attr:`Intervention.last_layer` and :attr:`Intervention.optimizer`
reach the parts of the agent an intervention changes, and :meth:`Intervention.parameters_for_loss`,
:meth:`Intervention.add_feature_gradient` and :meth:`Intervention.random_stream` cover what a loss
term or a random draw needs.

The same class runs in a single run and in a population (:mod:`rlplast.population`): there every
member gets its own instance, set up on the member's view (``Population.member(i)``), which offers
the same helpers on that member's slices. An intervention that uses only the helpers (and the model
attributes listed in ``docs/interventions.md``) works in both; one that cannot work per member sets
:attr:`Intervention.per_member` to False and says why in :attr:`Intervention.per_member_reason`, and
a population refuses it when it is built.

Parameters are checked by :func:`build_intervention` with the checker config sections use
(:func:`rlplast.fields.check_value`): the annotation gives the type, ``config_field`` metadata
(``min``/``max``/``choices``) the range, then the dataclass's own ``__post_init__`` runs. The config
loader builds every listed intervention once, so a bad spec fails when the config loads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from rlplast.errors import UserError, closest
from rlplast.fields import (
    InvalidValue,
    attribute_docstrings,
    check_value,
    field_types,
    reference_row,
)
from rlplast.registry import Registry

if TYPE_CHECKING:
    from stable_baselines3.common.type_aliases import ReplayBufferSamples

    from rlplast.agents.dqn import PlasticDQN


class Intervention:
    """Base class. Subclasses are dataclasses; every hook is optional.

    Example:
        >>> from dataclasses import dataclass
        >>> from rlplast.fields import config_field
        >>> @register("head_noise")
        ... @dataclass
        ... class HeadNoise(Intervention):
        ...     std: float = config_field(1e-3, "noise added to the output layer", min=0.0)
        ...
        ...     @torch.no_grad()
        ...     def after_update(self, n_updates, num_timesteps):
        ...         with self.random_stream():  # a population member draws from its own stream
        ...             noise = torch.randn_like(self.last_layer.weight)
        ...         self.last_layer.weight.add_(noise, alpha=self.std)
    """

    name: ClassVar[str] = ""
    #: Whether the intervention can run per member of a population (on a member's view, with its
    #: own instance). True for every intervention that reaches the agent only through the helpers
    #: below; a class that needs something a member view cannot offer (e.g. the whole replay
    #: buffer object, the env, another member) sets it to False, and a population refuses it when
    #: it is built, with :attr:`per_member_reason` in the message.
    per_member: ClassVar[bool] = True
    #: Why the intervention cannot run per member (shown when a population refuses it).
    per_member_reason: ClassVar[str] = ""

    # ------------------------------------------------------------------------------ hooks
    def setup(self, model: PlasticDQN) -> None:
        """Called once the model's networks and optimizer exist; keeps ``self.model``.

        An override must call ``super().setup(model)`` first: the helpers below read ``self.model``.
        """
        self.model = model

    def loss(
        self, batch: ReplayBufferSamples, features: torch.Tensor, q_values: torch.Tensor
    ) -> torch.Tensor | None:
        """An extra loss term added to the TD loss (``None`` adds nothing).

        Args:
            batch: the replay batch of this gradient step.
            features: penultimate features of ``batch.observations`` (input of the last linear layer).
            q_values: Q-values of all actions, shape ``(batch, n_actions)``.
        """
        return None

    @classmethod
    def stacked_loss(
        cls,
        members: Sequence[tuple[int, Intervention]],
        params: Sequence[torch.Tensor],
        batch: Any,
        features: torch.Tensor,
        q_values: torch.Tensor,
    ) -> torch.Tensor | None:
        """Optional, for a population: the :meth:`loss` terms of several members in one computation.

        When a class overrides this, a population calls it once per update for that class's
        instances (the first instance of the class in each member's list) instead of calling each
        one's :meth:`loss` on the member's slices. It must act on every member as that member's
        :meth:`loss` would — the same term and gradient (to float32 round-off) and the same logged
        values — which the population tests check. Worth it where the per-member calls cost many
        small operations (``l2_init``); the default per-member path is always correct.

        Args:
            members: ``(member index, instance)`` pairs, in member order.
            params: the stacked online parameters ``(S, *shape)``, leaves of this update's graph,
                in ``online_net.parameters()`` order.
            batch: the stacked replay batch (fields ``(S, B, ...)``).
            features: penultimate features ``(S, B, D)``.
            q_values: Q-values ``(S, B, A)``.

        Returns:
            The sum of the members' terms (0-dim), or None.
        """
        raise NotImplementedError(f"{cls.__name__} has no stacked loss")

    def after_update(self, n_updates: int, num_timesteps: int) -> None:
        """Called after every optimizer step with the update count and the env step count."""

    def on_task_switch(self, task_id: int, num_timesteps: int) -> None:
        """Called when the environment reports a new task."""

    def log_values(self) -> dict[str, float]:
        """Scalars to log at this logging step (keys like ``train/…``). Called once per logging step."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (counters, θ₀, schedules)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    # ------------------------------------------------------------------------------ helpers
    def _require_model(self) -> PlasticDQN:
        model = self.__dict__.get("model")
        if model is None:
            raise RuntimeError(
                f"intervention '{self.name}': the model is not set up yet; the helpers work from setup() "
                "on, and a setup() override must call super().setup(model) first"
            )
        return model

    @property
    def online_net(self) -> nn.Module:
        """The online Q-network (``model.q_net``: features extractor + MLP head), the one trained."""
        return self._require_model().q_net

    @property
    def target_net(self) -> nn.Module:
        """The target Q-network (``model.q_net_target``), same structure as :attr:`online_net`."""
        return self._require_model().q_net_target

    @property
    def last_layer(self) -> nn.Linear:
        """The online network's output layer (penultimate features → Q-values)."""
        return output_layer(self.online_net)

    @property
    def target_last_layer(self) -> nn.Linear:
        """The target network's output layer."""
        return output_layer(self.target_net)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimizer of the online network (``model.policy.optimizer``; Adam by default).

        In a population, the member's Adam state: ``optimizer.state[p]`` for the member's
        parameters, where ``pop(p)`` / ``clear()`` restart exactly that member's moments and steps.
        """
        return self._require_model().policy.optimizer

    def parameters_for_loss(self) -> list[torch.Tensor]:
        """The online network's parameters, differentiable in this update's autograd graph.

        Use these (not ``online_net.parameters()``) in a :meth:`loss` term that depends on the
        parameters themselves (e.g. a distance to θ₀). In a single run they are the online
        network's parameters; in a population they are slices of the stacked parameter tensors,
        made anew on every call, through which the term's gradient reaches the member's weights (a
        member view's own parameters are aliases outside the stack's autograd graph). Same order
        and shapes as ``online_net.parameters()``.
        """
        model = self._require_model()
        member = getattr(model, "parameters_for_loss", None)
        if member is not None:
            return member()
        return list(self.online_net.parameters())

    def add_feature_gradient(self, features: torch.Tensor, grad: torch.Tensor) -> None:
        """Add ``grad`` to the gradient of ``features`` in this update's ``backward()``.

        For a :meth:`loss` that computes its own gradient with respect to the penultimate
        features it was given (instead of returning a differentiable term): the same parameter
        update as adding a term whose gradient is ``grad``. In a single run this registers a
        tensor hook on ``features``; in a population ``features`` is the member's slice of the
        stacked features, which is not itself part of the TD loss's graph (a hook on it would never
        run), so the member's gradient is added to the stacked features' gradient instead.

        Args:
            features: the ``features`` argument of :meth:`loss`.
            grad: a tensor shaped like ``features``.
        """
        # Works before setup too (a loss called on plain tensors, as the supervised track does).
        member = getattr(self.__dict__.get("model"), "add_feature_gradient", None)
        if member is not None:
            member(features, grad)
        else:
            features.register_hook(lambda g: g + grad)

    def random_stream(self) -> AbstractContextManager[None]:
        """A context in which torch's global random generator draws for this agent.

        Wrap the draws an event makes (``reset_parameters()``, ``torch.randn``...) in
        ``with self.random_stream():``. In a single run this does nothing: the run's global torch
        RNG is the stream (seeded by the run's seed). In a population it swaps in the member's own
        stream (seeded from the member's seed), so a member's draws depend on nothing but its seed
        and its own events, not on what the other members drew. Before setup it does nothing.
        """
        member = getattr(self.__dict__.get("model"), "random_stream", None)
        if member is not None:
            return member()
        return contextlib.nullcontext()


def output_layer(q_net: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` of a Q-network (``q_net.q_net[-1]`` for stable-baselines3's QNetwork).

    Raises:
        ValueError: If the network has no linear layer.
    """
    head = getattr(q_net, "q_net", None)
    if isinstance(head, nn.Sequential) and len(head) and isinstance(head[-1], nn.Linear):
        return head[-1]
    linears = [m for m in q_net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(q_net).__name__} has no nn.Linear layer")
    return linears[-1]


INTERVENTIONS: Registry[type[Intervention]] = Registry("intervention")


def register(name: str):
    """Class decorator: register an intervention dataclass under ``name``."""

    def deco(cls: type[Intervention]) -> type[Intervention]:
        cls.name = name
        INTERVENTIONS.register(name)(cls)
        return cls

    return deco


def parameter_fields(cls: type) -> dict[str, dataclasses.Field]:
    """The config parameters of an intervention class: its ``init`` dataclass fields, by name."""
    if not dataclasses.is_dataclass(cls):
        return {}
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def build_intervention(spec: dict[str, Any]) -> Intervention:
    """Build an intervention from a config entry such as ``{name: redo, tau: 0.025}``.

    Each parameter is checked against its field (:func:`rlplast.fields.check_value`: the annotation's
    type, finiteness, and ``min``/``max``/``choices`` metadata), then the dataclass is constructed, which
    runs its own ``__post_init__`` checks.

    Raises:
        UserError: unknown name, unknown parameter or invalid value (messages list valid choices).
    """
    if not isinstance(spec, dict) or "name" not in spec:
        raise UserError(f"each intervention needs a 'name' key, got {spec!r}")
    params = dict(spec)
    cls = INTERVENTIONS.get(str(params.pop("name")))
    fields = parameter_fields(cls)
    for key in params:
        if key not in fields:
            raise UserError(
                f"unknown parameter '{key}' for intervention '{cls.name}'{closest(str(key), fields)}; "
                f"valid: {', '.join(fields) or '(none)'}"
            )
    types = field_types(cls) if fields else {}
    for key, value in params.items():
        params[key] = _check_parameter(cls.name, key, types[key], fields[key], value)
    try:
        return cls(**params)
    except (TypeError, ValueError, OverflowError) as exc:
        # A value the intervention's own checks let through but its set-up rejects (e.g. a seed
        # NumPy refuses): still one line naming the intervention, never a traceback.
        raise UserError(f"intervention '{cls.name}': {exc}") from None


def _check_parameter(owner: str, key: str, tp: Any, f: dataclasses.Field, value: Any) -> Any:
    """One parameter through :func:`check_value`, phrased like the interventions' own checks."""
    try:
        return check_value(tp, value, f.metadata)
    except TypeError:
        return value  # an annotation the checker does not know (e.g. a tuple): the class checks it
    except InvalidValue as exc:
        if exc.kind == "range":
            message = f"{key} must be {exc.expected}, got {exc.value!r}"
        elif exc.kind == "choice":
            message = f"{key} must be one of {exc.expected}, got {exc.value!r}"
        else:
            expected = exc.expected.replace(" | ", " or ")  # int | None -> int or None
            message = f"parameter '{key}{exc.where}' must be {expected}, got {exc.value!r}"
        raise UserError(f"intervention '{owner}': {message}") from None


# ---------------------------------------------------------------------------------- reference
PARAMETER_HEADER = "| parameter | type | default | allowed | meaning |\n|---|---|---|---|---|"


def parameter_reference(name: str) -> str:
    """The Markdown parameter table of intervention ``name``, generated like ``config-reference``.

    One row per parameter: type (annotation), default, allowed values (``config_field`` metadata)
    and meaning (the field's ``help``, else its attribute docstring).
    """
    cls = INTERVENTIONS.get(name)
    fields = parameter_fields(cls)
    if not fields:
        return "No parameters.\n"
    types = field_types(cls)
    docs = attribute_docstrings(cls)
    rows = [
        reference_row(key, types[key], f, f.metadata.get("help", docs.get(key, "")))
        for key, f in fields.items()
    ]
    return "\n".join([PARAMETER_HEADER, *rows]) + "\n"


_TABLE = re.compile(r"(<!-- parameters: (\w+) -->\n)(.*?)(<!-- /parameters -->)", re.S)


def sync_parameter_tables(markdown: str) -> str:
    """Replace every ``<!-- parameters: NAME -->`` … ``<!-- /parameters -->`` block with the current table.

    ``docs/interventions.md`` holds one block per intervention; a test checks it is current. To
    regenerate::

        python -c "from pathlib import Path; from rlplast.interventions import sync_parameter_tables as s; \\
        p = Path('docs/interventions.md'); p.write_text(s(p.read_text()))"
    """
    return _TABLE.sub(lambda m: m.group(1) + parameter_reference(m.group(2)) + m.group(4), markdown)
