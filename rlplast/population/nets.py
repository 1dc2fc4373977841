"""Stacked Q-networks: the parameters of S members in one tensor each, member axis first.

Every member's network is an SB3 ``QNetwork`` (a features extractor, then the ``q_net``
``Sequential`` whose last module is the output ``nn.Linear``) built exactly as stable-baselines3
builds it for a DQN with that seed (:func:`build_member_networks`). Their parameters are stacked,
``(S, *shape)`` per parameter, in ``QNetwork.parameters()`` order, and applied to a batch per
member ``(S, B, ...)`` by a short list of stacked operations compiled from the module tree:

* ``nn.Linear`` → ``torch.baddbmm`` (bitwise equal to ``F.linear`` per member on the CPU);
* ``nn.Conv2d`` → one grouped convolution with ``groups=S`` (channels-last layout);
* ``nn.LayerNorm`` (over the last dimension) → ``F.layer_norm`` without affine parameters, then
  ``torch.addcmul(β, ·, γ)`` with each member's ``γ``, ``β`` (bitwise ``nn.LayerNorm`` per member on
  the CPU: its kernel computes the affine step as that fused multiply-add);
* ``CReLU`` (:class:`rlplast.agents.layers.CReLU`) → the same concatenation on the member-first
  batch (its dimension shifted by the member axis);
* ``nn.Flatten`` and elementwise activations → applied to the member-first batch as they are.

:meth:`StackedQNetwork.member_module` gives member ``i``'s network as an ordinary
``QNetwork`` whose parameters alias slice ``i`` of the stacked tensors: metrics and interventions
written for one network run on it unchanged, and an in-place change through it changes the stack.

Example:
    >>> import gymnasium as gym
    >>> env = gym.make("CartPole-v1")
    >>> members = build_member_networks("MlpPolicy", env.observation_space, env.action_space,
    ...                                 {"net_arch": [64, 64]}, seeds=[0, 1, 2])
    >>> net = StackedQNetwork(members, device="cpu")
    >>> net.forward(torch.zeros(3, 5, 4), net.online).shape
    torch.Size([3, 5, 2])
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import gymnasium as gym
import torch
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from stable_baselines3.common.torch_layers import FlattenExtractor, NatureCNN
from stable_baselines3.dqn.policies import QNetwork
from torch import Tensor, nn
from torch.nn import functional as F

from rlplast.agents import PlasticDQN
from rlplast.agents.layers import CReLU
from rlplast.agents.minatar_cnn import MinAtarCNN
from rlplast.errors import UserError

__all__ = [
    "ELEMENTWISE",
    "EXTRACTORS",
    "StackedQNetwork",
    "build_member_networks",
    "stack_parameters",
]

#: Elementwise modules applied to a member-first batch unchanged (the activations rlplast offers
#: and the common others).
ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.Tanh,
    nn.ELU,
    nn.LeakyReLU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Softplus,
    nn.Identity,
)

#: Features extractors whose ``forward`` is their children applied in order (after SB3's
#: preprocessing; MinAtarCNN's own ``float()`` cast is a no-op on preprocessed input).
EXTRACTORS: tuple[type[nn.Module], ...] = (FlattenExtractor, MinAtarCNN, NatureCNN)


def build_member_networks(
    policy: str | type,
    observation_space: gym.Space,
    action_space: gym.Space,
    policy_kwargs: Mapping[str, Any] | None,
    seeds: Sequence[int],
) -> list[QNetwork]:
    """One online ``QNetwork`` per seed, initialised exactly as PlasticDQN initialises it.

    stable-baselines3's ``DQN(seed=s)`` seeds torch (``set_random_seed``) and then builds its
    policy, whose first network is the online ``q_net`` (SB3 applies no orthogonal init to DQN's
    ``QNetwork``: every layer keeps torch's default init). Here each member's policy — PlasticDQN's
    own policy class for the name (:attr:`PlasticDQN.policy_aliases`: SB3's network, or the head
    with LayerNorm / CReLU of :mod:`rlplast.agents.layers`) — is built the same way right after
    ``torch.manual_seed(seed)``, so member ``i``'s initial parameters are bitwise those of
    ``PlasticDQN(policy, env, seed=seeds[i], policy_kwargs=...)``. The global torch RNG state is
    restored afterwards.

    Args:
        policy: ``"MlpPolicy"``, ``"CnnPolicy"`` or a DQN policy class.
        observation_space: the members' observation space.
        action_space: the members' (Discrete) action space.
        policy_kwargs: SB3 ``policy_kwargs`` (``net_arch``, ``activation_fn``,
            ``features_extractor_class``, ``normalize_images``, ``layer_norm``, ...).
        seeds: one seed per member.

    Returns:
        The members' online networks, on the CPU.
    """
    if isinstance(policy, str):
        aliases = PlasticDQN.policy_aliases
        if policy not in aliases:
            raise UserError(f"unknown DQN policy '{policy}'; valid: {', '.join(aliases)}")
        policy_cls: Any = aliases[policy]
    else:
        policy_cls = policy
    kwargs = dict(policy_kwargs or {})
    kwargs.pop("optimizer_kwargs", None)  # the population has its own (stacked) optimizer
    kwargs.pop("optimizer_class", None)
    networks = []
    with torch.random.fork_rng(devices=[]):
        for seed in seeds:
            torch.manual_seed(int(seed))
            built = policy_cls(observation_space, action_space, lambda _: 0.0, **kwargs)
            networks.append(built.q_net)
    return networks


def stack_parameters(networks: Sequence[nn.Module], device: torch.device | str) -> list[Tensor]:
    """The networks' parameters stacked member-first, in ``parameters()`` order (fresh leaves)."""
    per_net = [list(net.parameters()) for net in networks]
    return [
        torch.stack([p.detach() for p in same]).to(device).requires_grad_(True)
        for same in zip(*per_net, strict=True)
    ]


# ------------------------------------------------------------------------------ stacked operations
# Each operation splits in two: ``prepare(params)`` makes the views of the stacked parameters it
# needs (transposed weights, ...) and ``apply(x, prepared)`` runs it on a member-first batch. The
# online network's gradient pass prepares its views every update (they are part of the autograd
# graph); acting and the target network reuse views prepared once (the stacks change in place only).
@dataclass(frozen=True)
class _Linear:
    weight: int  # index into the parameter list
    bias: int | None

    def prepare(self, params: Sequence[Tensor]) -> Any:
        bias = None if self.bias is None else params[self.bias].unsqueeze(1)
        return params[self.weight].transpose(1, 2), bias

    def apply(self, x: Tensor, prepared: Any) -> Tensor:
        w_t, bias = prepared
        return torch.bmm(x, w_t) if bias is None else torch.baddbmm(bias, x, w_t)


@dataclass(frozen=True)
class _Conv2d:
    weight: int
    bias: int | None
    stride: Any
    padding: Any
    dilation: Any

    def prepare(self, params: Sequence[Tensor]) -> Any:
        w = params[self.weight]  # (S, out, in, kh, kw) -> the groups of one (S*out, in, kh, kw) kernel
        bias = None if self.bias is None else params[self.bias].reshape(-1)
        return w.reshape(-1, *w.shape[2:]), bias, w.shape[0]

    def apply(self, x: Tensor, prepared: Any) -> Tensor:
        weight, bias, s = prepared
        b, c, h, w = x.shape[1:]
        # Members become the groups of one convolution over (B, S*C, H, W), laid out channels-last
        # (B, H, W, S*C): oneDNN's grouped convolution is several times faster in that layout on
        # the CPU than in NCHW, and faster than one convolution per member (measured; results
        # equal per member).
        grouped = x.permute(1, 3, 4, 0, 2).reshape(b, h, w, s * c).permute(0, 3, 1, 2)
        out = F.conv2d(grouped, weight, bias, self.stride, self.padding, self.dilation, groups=s)
        return out.unflatten(1, (s, -1)).transpose(0, 1)


@dataclass(frozen=True)
class _LayerNorm:
    weight: int | None
    bias: int | None
    eps: float

    def prepare(self, params: Sequence[Tensor]) -> Any:
        weight = None if self.weight is None else params[self.weight].unsqueeze(1)
        bias = None if self.bias is None else params[self.bias].unsqueeze(1)
        return weight, bias

    def apply(self, x: Tensor, prepared: Any) -> Tensor:
        weight, bias = prepared
        # nn.LayerNorm's CPU kernel normalises each row as x * rstd + (-mean * rstd), then applies
        # its affine parameters as one fused multiply-add: the same steps, with gamma and beta per member.
        out = F.layer_norm(x, x.shape[-1:], None, None, self.eps)
        if weight is not None and bias is not None:
            return torch.addcmul(bias, out, weight)
        if weight is not None:
            return out * weight
        return out if bias is None else out + bias


@dataclass(frozen=True)
class _CReLU:
    dim: int  # in the member-first batch

    def prepare(self, params: Sequence[Tensor]) -> Any:
        return None

    def apply(self, x: Tensor, prepared: Any) -> Tensor:
        return torch.cat((F.relu(x), F.relu(-x)), dim=self.dim)  # CReLU.forward


@dataclass(frozen=True)
class _Flatten:
    def prepare(self, params: Sequence[Tensor]) -> Any:
        return None

    def apply(self, x: Tensor, prepared: Any) -> Tensor:
        return x.flatten(2)


@dataclass(frozen=True)
class _Elementwise:
    module: nn.Module

    def prepare(self, params: Sequence[Tensor]) -> Any:
        return None

    def apply(self, x: Tensor, prepared: Any) -> Tensor:
        return self.module.forward(x)  # the module's own function, without Module.__call__


_Op = _Linear | _Conv2d | _LayerNorm | _CReLU | _Flatten | _Elementwise


def _compile(module: nn.Module, index: Mapping[int, int], ops: list[_Op]) -> None:
    """Append the stacked operations of ``module`` (a chain of layers) to ``ops``."""

    def param(p: Tensor | None) -> int | None:
        return None if p is None else index[id(p)]

    if isinstance(module, nn.Sequential) or type(module) in EXTRACTORS:
        for child in module.children():
            _compile(child, index, ops)
    elif type(module) is nn.Linear:
        ops.append(_Linear(index[id(module.weight)], param(module.bias)))
    elif type(module) is nn.Conv2d:
        if module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise UserError(f"population: cannot stack {module} (groups, padding mode or string padding)")
        ops.append(
            _Conv2d(
                index[id(module.weight)], param(module.bias), module.stride, module.padding, module.dilation
            )
        )
    elif type(module) is nn.LayerNorm:
        if len(module.normalized_shape) != 1:
            raise UserError(f"population: cannot stack {module} (only a LayerNorm over the last dimension)")
        ops.append(_LayerNorm(param(module.weight), param(module.bias), float(module.eps)))
    elif type(module) is CReLU:
        # A module's dim counts from its batch's first axis; the member axis comes before it.
        dim = cast("int", module.dim)
        ops.append(_CReLU(dim if dim < 0 else dim + 1))
    elif type(module) is nn.Flatten:
        if module.start_dim != 1 or module.end_dim != -1:
            raise UserError(f"population: cannot stack {module} (only Flatten(1, -1))")
        ops.append(_Flatten())
    elif type(module) in ELEMENTWISE:
        ops.append(_Elementwise(module))
    else:
        raise UserError(
            f"population: cannot stack a {type(module).__name__} layer; supported: Linear, Conv2d, "
            f"LayerNorm, CReLU, Flatten, {', '.join(c.__name__ for c in ELEMENTWISE)} and the features extractors "
            f"{', '.join(c.__name__ for c in EXTRACTORS)}"
        )


def _preprocessor(space: gym.Space, normalize_images: bool) -> Callable[[Tensor], Tensor]:
    """SB3's ``preprocess_obs`` for one observation space, on member-first batches."""
    if isinstance(space, gym.spaces.Box):
        if normalize_images and is_image_space(space):
            if not is_image_space_channels_first(space):
                raise UserError(
                    f"population: channel-last image observations {space} need SB3's transpose "
                    "wrapper, which the population engine does not apply; give the env channel-first "
                    "observations"
                )
            return lambda obs: obs.float() / 255.0
        return lambda obs: obs.float()
    if isinstance(space, gym.spaces.MultiBinary):
        return lambda obs: obs.float()
    if isinstance(space, gym.spaces.Discrete):
        n = int(space.n)
        return lambda obs: F.one_hot(obs.long(), num_classes=n).float()
    raise UserError(
        f"population: observation space {space} is not supported; valid: Box, MultiBinary, Discrete"
    )


class StackedQNetwork:
    """S members' Q-networks as stacked parameters plus the operations that apply them.

    The stacked tensors (:attr:`params` for the online networks, :attr:`target_params` for the
    target networks) are only ever changed in place, so views made of them (member modules, the
    optimizer's references) stay valid for the life of the object.

    Args:
        members: the members' online ``QNetwork``s, identical in structure (see
            :func:`build_member_networks`); the target networks start as copies of them.
        device: where the stacked tensors live.

    Raises:
        UserError: a layer, extractor or observation space the engine cannot stack.
    """

    def __init__(self, members: Sequence[QNetwork], device: torch.device | str) -> None:
        if not members:
            raise UserError("population: needs at least one member")
        template = members[0]
        if list(template.buffers()):
            raise UserError("population: networks with buffers (e.g. batch norm) are not supported")
        if type(template.features_extractor) not in EXTRACTORS:
            raise UserError(
                f"population: cannot stack the features extractor {type(template.features_extractor).__name__}; "
                f"valid: {', '.join(c.__name__ for c in EXTRACTORS)}"
            )
        self.device = torch.device(device)
        self.n_members = len(members)
        #: Qualified parameter names, in ``QNetwork.parameters()`` order.
        self.names: list[str] = [name for name, _ in template.named_parameters()]
        self.params: list[Tensor] = stack_parameters(members, self.device)
        self.target_params: list[Tensor] = [p.detach().clone() for p in self.params]
        index = {id(p): k for k, p in enumerate(template.parameters())}
        self._ops: list[_Op] = []
        _compile(template.features_extractor, index, self._ops)
        _compile(template.q_net, index, self._ops)
        if not isinstance(self._ops[-1], _Linear):
            raise UserError("population: the Q-network must end in an nn.Linear")
        self._preprocess = _preprocessor(template.observation_space, template.normalize_images)
        # A structural copy without storage of its own: member views replace every parameter.
        self._template = copy.deepcopy(template).to("meta")
        self._views: dict[tuple[str, int], QNetwork] = {}
        with torch.no_grad():
            #: Views of the online parameters for passes without gradient (acting).
            self.online: list[Any] = self.prepare([p.detach() for p in self.params])
            #: Views of the target parameters.
            self.target: list[Any] = self.prepare(self.target_params)

    # ------------------------------------------------------------------ forward passes
    def prepare(self, params: Sequence[Tensor]) -> list[Any]:
        """The views of ``params`` the forward pass uses (see :meth:`forward`)."""
        return [op.prepare(params) for op in self._ops]

    def features_and_q(self, obs: Tensor, prepared: Sequence[Any]) -> tuple[Tensor, Tensor]:
        """Penultimate features ``(S, B, D)`` and Q-values ``(S, B, A)`` of a batch ``(S, B, ...)``.

        Args:
            obs: observations, member-first ``(S, B, ...)``, in their stored dtype.
            prepared: :meth:`prepare` of the parameters to use — :attr:`online` or :attr:`target`
                (prepared once, no gradient) or ``prepare(self.params)`` for a gradient pass.
        """
        x = self._preprocess(obs)
        ops = self._ops
        for op, p in zip(ops[:-1], prepared[:-1], strict=True):
            x = op.apply(x, p)
        return x, ops[-1].apply(x, prepared[-1])

    def forward(self, obs: Tensor, prepared: Sequence[Any]) -> Tensor:
        """Q-values ``(S, B, A)`` of a batch of observations ``(S, B, ...)`` (see :meth:`features_and_q`)."""
        x = self._preprocess(obs)
        for op, p in zip(self._ops, prepared, strict=True):
            x = op.apply(x, p)
        return x

    # ------------------------------------------------------------------ member views
    def member_module(self, member: int, target: bool = False) -> QNetwork:
        """Member ``member``'s online (or target) network as an ordinary ``QNetwork``.

        Its parameters are ``nn.Parameter`` aliases of slice ``member`` of the stacked tensors:
        reading them reads the stack, an in-place change (``copy_``, ``mul_``,
        ``reset_parameters()`` under ``no_grad``) changes exactly that member's slice. Gradients
        of a loss computed through the view land in the view's own ``.grad``, not in the stack's.
        Views are made once per member and kept.
        """
        if not 0 <= member < self.n_members:
            raise IndexError(f"member {member} out of range for a population of {self.n_members}")
        key = ("target" if target else "online", member)
        view = self._views.get(key)
        if view is None:
            view = copy.deepcopy(self._template)
            stacked = self.target_params if target else self.params
            modules = dict(view.named_modules())
            for name, tensor in zip(self.names, stacked, strict=True):
                owner, _, attr = name.rpartition(".")
                alias = nn.Parameter(tensor.detach()[member], requires_grad=not target)
                modules[owner]._parameters[attr] = alias
            view.train(not target)
            self._views[key] = view
        return view

    @torch.no_grad()
    def copy_to_target(self, tau: float = 1.0) -> None:
        """SB3's ``polyak_update`` on every member: ``target ← (1 − τ)·target + τ·online``.

        The same two in-place operations per tensor as SB3's (``mul_(1 - tau)``, then ``add`` with
        ``alpha=tau``), so ``tau = 1`` copies exactly (for finite targets) as SB3 does.
        """
        online = [p.detach() for p in self.params]
        torch._foreach_mul_(self.target_params, 1 - tau)
        torch._foreach_add_(self.target_params, online, alpha=tau)
