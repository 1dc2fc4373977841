"""One forward pass that returns activations (and, on request, pre-activations), features and Q-values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from rlplast.nets import last_linear

__all__ = [
    "ACTIVATION_TYPES",
    "ForwardPass",
    "forward_pass",
    "forward_with_activations",
    "is_activation",
    "last_linear",
]

#: Modules whose outputs are recorded as activations (and whose inputs as pre-activations).
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
)


def is_activation(module: nn.Module) -> bool:
    """Whether the forward pass records ``module``'s output as an activation.

    True for :data:`ACTIVATION_TYPES` and for any module whose class sets ``is_activation = True``
    (e.g. ``rlplast.agents.layers.CReLU``, whose output is the concatenated ``[relu(z), relu(−z)]``:
    its units are the concatenated features). The attribute lets activations defined outside
    ``torch.nn`` be recorded without the metrics importing them.
    """
    return isinstance(module, ACTIVATION_TYPES) or getattr(type(module), "is_activation", False) is True


@dataclass(frozen=True)
class ForwardPass:
    """What one forward pass of a Q-network recorded.

    Attributes:
        activations: output of every activation module (:data:`ACTIVATION_TYPES`), by module path
            (``"q_net.1"``, ``"features_extractor.cnn.1"``); a module applied twice also has
            ``"<path>#1"``, ``"<path>#2"``, … in call order.
        preactivations: the input of the same modules under the same keys (the tensor the
            activation function was applied to), or None when not requested.
        features: ``(N, D)`` penultimate features (input of the last ``nn.Linear``, flattened).
        q_values: ``(N, C)`` Q-values.
    """

    activations: dict[str, Tensor]
    preactivations: dict[str, Tensor] | None
    features: Tensor
    q_values: Tensor


def _extract(q_net: nn.Module, obs: Tensor) -> Tensor:
    extractor = getattr(q_net, "features_extractor", None)
    extract = getattr(q_net, "extract_features", None)
    if callable(extract) and extractor is not None:
        # SB3's path: preprocessing (float cast, image scaling, one-hot) then the extractor.
        return extract(obs, extractor)
    if callable(extractor):
        return extractor(obs.float())
    return obs.float().flatten(1)


def _unique_key(store: dict[str, Tensor], name: str) -> str:
    key, k = name, 1
    while key in store:  # a module applied twice keeps every call's tensor
        key, k = f"{name}#{k}", k + 1
    return key


def forward_pass(q_net: nn.Module, obs: Tensor, preactivations: bool = False) -> ForwardPass:
    """Run ONE forward pass and record activations, optionally pre-activations, features and Q-values.

    The network is an SB3 ``QNetwork``-like module: ``features_extractor`` and an ``nn.Sequential``
    ``q_net`` whose last module is the output ``nn.Linear`` (any other module works too: its
    features are then the input of its last ``nn.Linear``, captured by a hook). Forward hooks are
    registered on every activation module (:func:`is_activation`) for this call only and
    removed afterwards. Gradient mode is the caller's (wrap in ``torch.no_grad()`` for metrics).

    Pre-activations cost nothing unless requested. When requested, a forward pre-hook keeps a
    reference to each activation module's input; the input of an *in-place* activation
    (``inplace=True``, e.g. ``nn.ReLU(inplace=True)``) is overwritten by its output, so it alone is
    copied first.

    Args:
        q_net: the Q-network.
        obs: a batch of observations on the network's device.
        preactivations: also record the input of every activation module.

    Returns:
        The :class:`ForwardPass` (``preactivations`` None unless requested).
    """
    activations: dict[str, Tensor] = {}
    pre: dict[str, Tensor] | None = {} if preactivations else None
    handles = []

    def make_hook(name: str) -> Any:
        def hook(_module: nn.Module, _inp: Any, out: Tensor) -> None:
            activations[_unique_key(activations, name)] = out

        return hook

    def make_pre_hook(name: str, inplace: bool) -> Any:
        def pre_hook(_module: nn.Module, inp: tuple[Tensor, ...]) -> None:
            assert pre is not None
            pre[_unique_key(pre, name)] = inp[0].clone() if inplace else inp[0]

        return pre_hook

    try:
        for name, module in q_net.named_modules():
            if is_activation(module):
                handles.append(module.register_forward_hook(make_hook(name)))
                if pre is not None:
                    inplace = bool(getattr(module, "inplace", False))
                    handles.append(module.register_forward_pre_hook(make_pre_hook(name, inplace)))
        head = getattr(q_net, "q_net", None)
        if isinstance(head, nn.Sequential) and len(head) and isinstance(head[-1], nn.Linear):
            features = head[:-1](_extract(q_net, obs))
            q_values = head[-1](features)
        else:
            # Generic module: capture the input of the last Linear with a hook.
            last = last_linear(q_net)
            captured: list[Tensor] = []
            handles.append(last.register_forward_hook(lambda _m, inp, _o: captured.append(inp[0])))
            q_values = q_net(obs)
            features = captured[-1]
    finally:
        for handle in handles:
            handle.remove()
    return ForwardPass(activations, pre, features.flatten(1), q_values)


def forward_with_activations(q_net: nn.Module, obs: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """:func:`forward_pass` without pre-activations, as a tuple.

    Args:
        q_net: the Q-network.
        obs: a batch of observations on the network's device.

    Returns:
        ``(activations, features, q_values)``: activations by module path (e.g. ``"q_net.1"``,
        ``"features_extractor.cnn.1"``), ``(N, D)`` features (input of the last Linear) and
        ``(N, C)`` Q-values.
    """
    fp = forward_pass(q_net, obs)
    return fp.activations, fp.features, fp.q_values
