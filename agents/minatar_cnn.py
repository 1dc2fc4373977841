"""MinAtarCNN: the convolutional torso of the published MinAtar DQN, as an SB3 features extractor."""

from __future__ import annotations

import gymnasium as gym
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn


class MinAtarCNN(BaseFeaturesExtractor):
    """Conv 16 @ 3x3 stride 1 + ReLU, flatten, Linear → ``features_dim`` (128) + ReLU.

    Expects channel-first observations with values in [0, 1], e.g. ``rlplast/MinAtarSequence-v0``'s
    ``Box(0, 1, (10, 10, 10), uint8)`` (0/1 entries; :meth:`forward` casts to float). SB3 counts a
    Box as an image only if it is uint8 *with bounds 0..255* (``is_image_space``); with bounds 0..1
    it is not one, so SB3 neither transposes it (no ``VecTransposeImage``) nor divides it by 255,
    even with ``normalize_images=True``. Pass ``normalize_images=False`` anyway (rlplast does), so a
    0..255 grid would not be rescaled either.

    Example:
        >>> import gymnasium as gym
        >>> from stable_baselines3 import DQN
        >>> import rlplast.envs
        >>> from rlplast.agents.minatar_cnn import MinAtarCNN
        >>> env = gym.make("rlplast/MinAtarSequence-v0")
        >>> model = DQN("CnnPolicy", env, learning_starts=0, buffer_size=1000, policy_kwargs=dict(
        ...     features_extractor_class=MinAtarCNN, normalize_images=False, net_arch=[]))
        >>> model.q_net.features_extractor.features_dim
        128

    Args:
        observation_space: A ``Box`` of shape ``(channels, height, width)``.
        features_dim: Width of the output features (128 in the MinAtar paper).
    """

    def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 128) -> None:
        super().__init__(observation_space, features_dim)
        if len(observation_space.shape) != 3:
            raise ValueError(f"MinAtarCNN needs a (channels, height, width) Box, got {observation_space}")
        channels = observation_space.shape[0]
        self.cnn = nn.Sequential(nn.Conv2d(channels, 16, kernel_size=3, stride=1), nn.ReLU(), nn.Flatten())
        with torch.no_grad():
            n_flatten = self.cnn(torch.zeros(1, *observation_space.shape)).shape[1]
        self.linear = nn.Sequential(nn.Linear(n_flatten, features_dim), nn.ReLU())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """Map a batch ``(N, C, H, W)`` to features ``(N, features_dim)``."""
        return self.linear(self.cnn(observations.float()))
