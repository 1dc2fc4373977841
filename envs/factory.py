"""``make_env``: build an env by id with user-facing errors (used by the config loader / CLI)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import gymnasium as gym

from rlplast.envs.registration import NAMESPACE
from rlplast.errors import UserError, closest


def make_env(
    env_id: str, kwargs: Mapping[str, Any] | None = None, import_module: str | None = None
) -> gym.Env:
    """Make ``env_id`` with ``kwargs``, importing an extension package first if given.

    Example:
        >>> from rlplast.envs import make_env
        >>> env = make_env("rlplast/PermutedCartPole-v0", {"steps_per_task": 1000})
        >>> env.spec.id
        'rlplast/PermutedCartPole-v0'

    Args:
        env_id: A registered Gymnasium id (``rlplast/...`` or any Gymnasium id); Gymnasium's
            ``"module:id"`` form is accepted too.
        kwargs: Keyword arguments for ``gym.make``.
        import_module: A module to import first, e.g. a user package whose import registers ids.

    Returns:
        The env made by ``gym.make``.

    Raises:
        UserError: If the module cannot be imported, the id is unknown, the kwargs are invalid or
            the env needs a package that is not installed (e.g. Box2D for ``CarRacing-v3``).
    """
    modules = [import_module] if import_module else []
    if ":" in env_id:
        module, env_id = env_id.split(":", 1)
        modules.append(module)
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise UserError(f"cannot import env module '{module}': {e}") from e
    if env_id not in gym.registry:
        known = sorted(i for i in gym.registry if i.startswith(NAMESPACE))
        hint = closest(env_id, list(gym.registry))
        raise UserError(
            f"unknown env id '{env_id}'{hint}; rlplast ids: {', '.join(known)} "
            "(any registered Gymnasium id works too; set env.import to register your own)"
        )
    try:
        return gym.make(env_id, **dict(kwargs or {}))
    except TypeError as e:
        raise UserError(f"bad kwargs for env '{env_id}': {e}") from e
    except gym.error.DependencyNotInstalled as e:
        raise UserError(f"env '{env_id}' needs a package that is not installed: {e}") from e
    except gym.error.Error as e:
        raise UserError(f"cannot make env '{env_id}': {e}") from e
