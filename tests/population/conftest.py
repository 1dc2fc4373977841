"""Shared helpers for the population tests: small CartPole populations and PlasticDQN members."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
from stable_baselines3.common.logger import Logger

from rlplast.agents import PlasticDQN
from rlplast.population import Population

#: Hyperparameters shared by the population and its PlasticDQN counterparts in these tests.
HYPER: dict[str, Any] = {
    "learning_rate": 1e-3,
    "buffer_size": 2_000,
    "learning_starts": 100,
    "batch_size": 32,
    "train_freq": 4,
    "target_update_interval": 50,
    "max_grad_norm": 10.0,
}
POLICY_KWARGS: dict[str, Any] = {"net_arch": [32, 32]}


def _make_population(seeds: Sequence[int] = (0, 1, 2), env: Any = "CartPole-v1", **kwargs: Any) -> Population:
    params: dict[str, Any] = {**HYPER, "policy_kwargs": POLICY_KWARGS, "device": "cpu"}
    params.update(kwargs)
    return Population("MlpPolicy", env, list(seeds), **params)


def _make_dqn(seed: int = 0, env: Any = "CartPole-v1", **kwargs: Any) -> PlasticDQN:
    params: dict[str, Any] = {**HYPER, "policy_kwargs": POLICY_KWARGS, "device": "cpu", "seed": seed}
    params.update(kwargs)
    model = PlasticDQN("MlpPolicy", env, **params)
    model.set_logger(Logger(folder=None, output_formats=[]))  # train() records to it
    return model


@pytest.fixture
def make_population() -> Callable[..., Population]:
    """``make_population(seeds, env="CartPole-v1", **hyperparameters)`` with the shared settings."""
    return _make_population


@pytest.fixture
def make_dqn() -> Callable[..., PlasticDQN]:
    """``make_dqn(seed, env="CartPole-v1", **kwargs)``: the PlasticDQN a member stands for."""
    return _make_dqn


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small networks run fastest (and undisturbed by parallel jobs) on one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
