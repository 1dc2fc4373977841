"""Shared helpers for the intervention tests: a tiny PlasticDQN on CartPole."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch

from rlplast.agents import PlasticDQN
from rlplast.interventions import Intervention


def _make_dqn(interventions: Sequence[Intervention] = (), seed: int = 0, **kwargs: Any) -> PlasticDQN:
    params: dict[str, Any] = {
        "learning_starts": 100,
        "buffer_size": 2_000,
        "batch_size": 32,
        "policy_kwargs": {"net_arch": [32, 32]},
        "seed": seed,
        "device": "cpu",
    }
    params.update(kwargs)
    return PlasticDQN("MlpPolicy", "CartPole-v1", interventions=interventions, **params)


@pytest.fixture
def make_dqn() -> Callable[..., PlasticDQN]:
    """Build a small CartPole PlasticDQN: ``make_dqn([interventions], **dqn_kwargs)``."""
    return _make_dqn


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny networks run fastest (and undisturbed by parallel jobs) on one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
