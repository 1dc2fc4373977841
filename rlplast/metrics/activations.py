"""One forward pass that returns activations, penultimate features and Q-values."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

__all__ = ["ACTIVATION_TYPES", "forward_with_activations", "last_linear"]

#: Modules whose outputs are recorded as activations.
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


def last_linear(q_net: nn.Module) -> nn.Linear:
    """The output layer: ``q_net.q_net[-1]`` for SB3 ``QNetwork``-like modules, else the last Linear.

    Raises:
        TypeError: if the network has no ``nn.Linear``.
    """
    head = getattr(q_net, "q_net", None)
    if isinstance(head, nn.Sequential) and len(head) and isinstance(head[-1], nn.Linear):
        return head[-1]
    linears = [m for m in q_net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise TypeError(f"{type(q_net).__name__} has no nn.Linear output layer")
    return linears[-1]


def _extract(q_net: nn.Module, obs: Tensor) -> Tensor:
    extractor = getattr(q_net, "features_extractor", None)
    extract = getattr(q_net, "extract_features", None)
    if callable(extract) and extractor is not None:
        # SB3's path: preprocessing (float cast, image scaling, one-hot) then the extractor.
        return extract(obs, extractor)
    if callable(extractor):
        return extractor(obs.float())
    return obs.float().flatten(1)


def forward_with_activations(q_net: nn.Module, obs: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """Run ONE forward pass and collect activations, penultimate features and Q-values.

    The network is an SB3 ``QNetwork``-like module: ``features_extractor`` and an ``nn.Sequential``
    ``q_net`` whose last module is the output ``nn.Linear``. Forward hooks are registered on every
    activation module (:data:`ACTIVATION_TYPES`) for this call only and removed afterwards.
    Gradient mode is the caller's (wrap in ``torch.no_grad()`` for metrics).

    Args:
        q_net: the Q-network.
        obs: a batch of observations on the network's device.

    Returns:
        ``(activations, features, q_values)``: activations by module path (e.g. ``"q_net.1"``,
        ``"features_extractor.cnn.1"``), ``(N, D)`` features (input of the last Linear) and
        ``(N, C)`` Q-values.
    """
    activations: dict[str, Tensor] = {}
    handles = []

    def make_hook(name: str) -> Any:
        def hook(_module: nn.Module, _inp: Any, out: Tensor) -> None:
            key, k = name, 1
            while key in activations:  # a module applied twice keeps both outputs
                key, k = f"{name}#{k}", k + 1
            activations[key] = out

        return hook

    try:
        for name, module in q_net.named_modules():
            if isinstance(module, ACTIVATION_TYPES):
                handles.append(module.register_forward_hook(make_hook(name)))
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
    return activations, features.flatten(1), q_values
