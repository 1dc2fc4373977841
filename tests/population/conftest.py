"""Shared helpers for the population tests: small CartPole populations and PlasticDQN members."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from stable_baselines3.common.logger import Logger

from rlplast.agents import PlasticDQN
from rlplast.config import load_config, read_yaml
from rlplast.population import Population
from rlplast.train import policy_kwargs

METHODS = Path(__file__).resolve().parents[2] / "configs" / "methods"

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


#: The agent options of the method pack, as their method overlays (``configs/methods/``) set them,
#: plus ``--set`` overrides: ``option -> (overlays, overrides)``.
AGENT_OPTIONS: dict[str, tuple[list[str], list[str]]] = {
    "double_dqn": (["double_dqn"], []),
    "layer_norm": (["layer_norm"], []),
    "layer_norm_wd": (["layer_norm_wd"], []),
    "crelu": (["crelu"], []),
    "trac": (["trac"], []),
    "trac_wd": (["trac"], ["agent.weight_decay=0.01"]),
    "all": (["layer_norm_wd", "crelu", "trac", "double_dqn"], []),
}


def _option_config(option: str, path: str | Path | None = None, overrides: Sequence[str] = ()) -> Any:
    """A config (``path``, or the defaults) with the option's overlays and overrides merged in."""
    overlays, extra = AGENT_OPTIONS[option]
    return load_config(
        path, [*extra, *overrides], overlays=[read_yaml(METHODS / f"{name}.yaml") for name in overlays]
    )


def _option_kwargs(option: str) -> dict[str, Any]:
    cfg = _option_config(option, overrides=[f"agent.net_arch={POLICY_KWARGS['net_arch']}"])
    return {"policy_kwargs": policy_kwargs(cfg), "double_dqn": cfg.agent.double_dqn}


@pytest.fixture
def agent_options() -> list[str]:
    """The names of :data:`AGENT_OPTIONS` (a test that parametrizes over them checks its list)."""
    return sorted(AGENT_OPTIONS)


@pytest.fixture
def option_config() -> Callable[..., Any]:
    """``option_config(option, path=None, overrides=())``: a config (``path``, or the defaults) with
    the option's overlays and overrides merged in."""
    return _option_config


@pytest.fixture
def option_kwargs() -> Callable[[str], dict[str, Any]]:
    """``option_kwargs(option)``: ``policy_kwargs`` (with :data:`POLICY_KWARGS`' net_arch) and
    ``double_dqn`` of an agent option as ``rlplast train`` builds them, for ``make_population`` and
    ``make_dqn`` alike."""
    return _option_kwargs
