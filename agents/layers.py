"""Network options of the Q head: LayerNorm before each hidden activation, and CReLU.

Both change only the MLP head of SB3's ``QNetwork`` (the ``q_net`` ``Sequential`` after the
features extractor); the extractor (flatten, MinAtar CNN, NatureCNN) is unchanged and the last
module stays the plain output ``nn.Linear``, so the collapse metrics (its input is the penultimate
features) and head resets work as for the default network.

* **LayerNorm** (Lyle et al. 2024, "Disentangling the Causes of Plasticity Loss in Neural
  Networks", arXiv 2402.18762): every hidden ``nn.Linear`` is followed by ``nn.LayerNorm`` over
  its units, then the activation — ``Linear → LayerNorm → activation``, i.e. the *pre-activations*
  are normalised, ``LN(z)_i = γ_i (z_i − mean(z)) / sqrt(var(z) + ε) + β_i`` (ε = 1e-5, γ = 1,
  β = 0 at initialisation, learned afterwards). The paper attributes part of plasticity loss to the
  drift of the pre-activation distribution, which this placement removes; Plasticine's
  ``use_layer_norm`` networks use the same order.
* **CReLU** (Shang et al. 2016; Abbas et al., "Loss of Plasticity in Continual Deep
  Reinforcement Learning", CoLLAs 2023): ``CReLU(z) = [relu(z), relu(−z)]`` (concatenated along the
  features), so a hidden layer of ``net_arch[i]`` linear units outputs ``2·net_arch[i]`` features and
  the next ``nn.Linear`` takes ``2·net_arch[i]`` inputs. ``net_arch`` counts linear units, i.e. the
  widths *before* the concatenation (the parameter count of the following layer doubles).

With neither option the policy builds SB3's own network (the same modules, the same random draws).

Example:
    >>> import gymnasium as gym
    >>> from rlplast.agents import PlasticDQN
    >>> model = PlasticDQN("MlpPolicy", "CartPole-v1", seed=0,
    ...                    policy_kwargs={"net_arch": [8], "activation_fn": CReLU, "layer_norm": True})
    >>> model.q_net.q_net
    Sequential(
      (0): Linear(in_features=4, out_features=8, bias=True)
      (1): LayerNorm((8,), eps=1e-05, elementwise_affine=True)
      (2): CReLU()
      (3): Linear(in_features=16, out_features=2, bias=True)
    )
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.dqn.policies import QNetwork
from torch import nn
from torch.nn import functional as F

from rlplast.agents import speed

__all__ = [
    "CReLU",
    "CnnPolicy",
    "MlpPolicy",
    "MultiInputPolicy",
    "NetworkOptions",
    "OptionsQNetwork",
    "q_head",
    "width_factor",
]


class CReLU(nn.Module):
    """Concatenated ReLU: ``x ↦ [relu(x), relu(−x)]`` along ``dim`` (doubles that dimension).

    Args:
        dim: the feature dimension. The default, the last one, suits linear layers with any
            leading batch dimensions, ``(N, D)`` as well as a population's ``(S, N, D)``; use
            ``dim=1`` after a convolution (channels).
    """

    #: Outputs per input feature (the next layer's input is this many times wider).
    width_factor: ClassVar[int] = 2
    #: Recorded by the metrics' forward pass like ``nn.ReLU`` (see ``rlplast.metrics.activations``).
    is_activation: ClassVar[bool] = True

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((F.relu(x), F.relu(-x)), dim=self.dim)

    def extra_repr(self) -> str:
        return "" if self.dim == -1 else f"dim={self.dim}"


def width_factor(activation_fn: type[nn.Module]) -> int:
    """How many outputs an activation class gives per input feature (2 for :class:`CReLU`, else 1)."""
    return int(getattr(activation_fn, "width_factor", 1))


def q_head(
    features_dim: int,
    n_actions: int,
    net_arch: list[int],
    activation_fn: type[nn.Module],
    layer_norm: bool = False,
) -> list[nn.Module]:
    """The Q head's modules: per hidden width ``Linear [→ LayerNorm] → activation``, then ``Linear``.

    The linear layers are created in SB3's order (``create_mlp``), so without LayerNorm and with a
    width-preserving activation the modules and their random initial values are SB3's.

    Args:
        features_dim: width of the features extractor's output.
        n_actions: number of actions (outputs).
        net_arch: hidden widths, counted in linear units (before a CReLU doubles them).
        activation_fn: the activation class (instantiated once per hidden layer).
        layer_norm: put ``nn.LayerNorm`` between each hidden ``Linear`` and its activation.
    """
    modules: list[nn.Module] = []
    width = features_dim
    for units in net_arch:
        modules.append(nn.Linear(width, units))
        if layer_norm:
            modules.append(nn.LayerNorm(units))
        modules.append(activation_fn())
        width = units * width_factor(activation_fn)
    modules.append(nn.Linear(width, n_actions))
    return modules


class OptionsQNetwork(QNetwork):
    """SB3's ``QNetwork`` whose head is built by :func:`q_head` (LayerNorm, CReLU widths).

    ``forward`` and ``extract_features`` are SB3's, so the speed layer's direct greedy path and
    every consumer of ``q_net.q_net`` treat it like SB3's network.

    Args:
        observation_space: the observation space.
        action_space: the (Discrete) action space.
        features_extractor: the features extractor.
        features_dim: its output width.
        net_arch: hidden widths (default ``[64, 64]``, as SB3).
        activation_fn: the activation class.
        normalize_images: SB3's image normalisation flag.
        layer_norm: LayerNorm before each hidden activation.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
        layer_norm: bool = False,
    ) -> None:
        # SB3's QNetwork.__init__ would build (and draw) its own MLP first: set up its parent
        # (BasePolicy) instead and build the head here, once.
        super(QNetwork, self).__init__(
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
        )
        self.net_arch = [64, 64] if net_arch is None else net_arch
        self.activation_fn = activation_fn
        self.features_dim = features_dim
        self.layer_norm = layer_norm
        n_actions = int(self.action_space.n)  # type: ignore[attr-defined]
        self.q_net = nn.Sequential(*q_head(features_dim, n_actions, self.net_arch, activation_fn, layer_norm))

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "layer_norm": self.layer_norm}


class NetworkOptions:
    """Mix into an SB3 DQN policy (before it) for the ``layer_norm`` keyword and CReLU widths.

    ``policy_kwargs={"layer_norm": True}`` puts LayerNorm before each hidden activation of both Q
    networks; ``activation_fn`` may be :class:`CReLU` (or any class with a ``width_factor``). With
    neither, ``make_q_net`` is SB3's, so the networks are bitwise SB3's.

    Args:
        *args: the policy's arguments.
        layer_norm: LayerNorm before each hidden activation.
        **kwargs: the policy's keyword arguments.
    """

    net_args: dict[str, Any]
    activation_fn: type[nn.Module]
    device: torch.device

    def __init__(self, *args: Any, layer_norm: bool = False, **kwargs: Any) -> None:
        # Set before SB3's __init__, which builds the networks (a plain attribute: allowed before
        # nn.Module.__init__).
        self.layer_norm = bool(layer_norm)
        super().__init__(*args, **kwargs)

    def make_q_net(self) -> QNetwork:
        """SB3's ``make_q_net``, or an :class:`OptionsQNetwork` when an option is on."""
        if not self.layer_norm and width_factor(self.activation_fn) == 1:
            return super().make_q_net()  # type: ignore[misc]
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)  # type: ignore[attr-defined]
        return OptionsQNetwork(**net_args, layer_norm=self.layer_norm).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "layer_norm": self.layer_norm}  # type: ignore[misc]


class MlpPolicy(NetworkOptions, speed.MlpPolicy):
    """The speed layer's ``MlpPolicy`` (SB3's, cached training mode) with :class:`NetworkOptions`."""


class CnnPolicy(NetworkOptions, speed.CnnPolicy):
    """The speed layer's ``CnnPolicy`` with :class:`NetworkOptions` (options apply to the Q head)."""


class MultiInputPolicy(NetworkOptions, speed.MultiInputPolicy):
    """The speed layer's ``MultiInputPolicy`` with :class:`NetworkOptions`."""
