"""``make_env``: build an env by id with user-facing errors (used by the config loader / CLI)."""

from __future__ import annotations

import importlib
import inspect
import re
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import load_env_creator

from rlplast.envs.registration import INTERNAL_KWARGS, NAMESPACE, SHIFTS
from rlplast.errors import UserError, closest, describe_exception

#: Keyword arguments ``gym.make`` itself takes besides the env's own (the ones a config may need).
MAKE_KWARGS = ("max_episode_steps",)

_UNEXPECTED = re.compile(r"got an unexpected keyword argument '(\w+)'")
_BINDING = re.compile(
    r"got an unexpected keyword argument|missing \d+ required|got multiple values for|takes \d+ positional"
)
_GYMNASIUM = str(Path(gym.__file__).parent)


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
        UserError: If the module cannot be imported, the id is unknown, the kwargs do not fit the
            env (the message lists the ones it takes), the env needs a package that is not installed
            (e.g. Box2D for ``CarRacing-v3``), or its constructor raises (the message names the env,
            the exception and where it was raised). An exception raised while *importing* the module
            (other than an ImportError) is not caught: it is a bug in that module, not bad input.
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
            "(any registered Gymnasium id works too; to use your own, list the module that registers "
            "it under plugins in the config, or name it in env.import)"
        )
    try:
        return gym.make(env_id, **dict(kwargs or {}))
    except UserError:
        raise  # the env's own one-line message
    except gym.error.DependencyNotInstalled as e:
        raise UserError(f"env '{env_id}' needs a package that is not installed: {e}") from e
    except gym.error.Error as e:
        raise UserError(f"cannot make env '{env_id}': {e}") from e
    except Exception as e:  # noqa: BLE001 - user code: one line naming the env, never a traceback
        raise constructor_error(env_id, e) from e


def constructor_error(env_id: str, exc: Exception) -> UserError:
    """The one-line error for an exception ``gym.make(env_id, ...)`` raised.

    A keyword argument the env does not take (or a missing one) names the env and lists the
    keyword arguments it takes (:func:`env_kwargs`); any other exception names the env, the
    exception type, its message and where it was raised.
    """
    # gym.make re-raises a TypeError from the env creator with its kwargs appended; use the original.
    original = exc.__cause__ if isinstance(exc, TypeError) and isinstance(exc.__cause__, TypeError) else exc
    if isinstance(original, TypeError) and _BINDING.search(str(original)):
        valid = env_kwargs(env_id, original)
        listed = f"; valid: {', '.join([*valid, *MAKE_KWARGS])}" if valid else ""
        unexpected = _UNEXPECTED.search(str(original))
        if unexpected:
            name = unexpected.group(1)
            return UserError(
                f"bad kwargs for env '{env_id}': unknown kwarg '{name}'{closest(name, valid)}{listed}"
            )
        problem = re.sub(r"^[\w.<>]+\(\) ", "", str(original))  # drop the callee's name
        return UserError(f"bad kwargs for env '{env_id}': {problem}{listed}")
    frames = traceback.extract_tb(original.__traceback__)
    where = (
        "in gymnasium.make" if frames and frames[-1].filename.startswith(_GYMNASIUM) else "in its constructor"
    )
    kind, _, rest = describe_exception(original).partition(" ")
    return UserError(f"env '{env_id}' raised {kind.rstrip(':')} {where}: {rest}")


def env_kwargs(env_id: str, error: BaseException | None = None) -> list[str]:
    """The keyword arguments ``gym.make(env_id, ...)`` passes on to the env, as far as they can be seen.

    Collected from the registered defaults, the entry point's signature (for a class: its
    ``__init__`` and, while that forwards ``**kwargs``, its bases'), the shift class of an
    ``rlplast/`` id and, given the ``TypeError`` of a failed construction, every function and
    wrapper ``__init__`` the keyword arguments passed through on the way.

    Args:
        env_id: A registered id.
        error: The exception a construction raised, if any.

    Returns:
        Names in the order found (``self``, ``cls`` and a wrapper's ``env`` left out).
    """
    spec = gym.spec(env_id)
    names: list[str] = []

    def add(found: Iterator[str] | list[str]) -> None:
        names.extend(n for n in found if n not in names and n not in ("self", "cls", "env", *INTERNAL_KWARGS))

    creator: Any = spec.entry_point
    if isinstance(creator, str):
        try:
            creator = load_env_creator(creator)
        except Exception:  # noqa: BLE001 - an entry point that does not load: nothing to inspect
            creator = None
    add(list(spec.kwargs))
    if callable(creator):
        add(_parameters(creator))
    shift = spec.kwargs.get("shift")
    if isinstance(shift, str) and shift in SHIFTS:
        add(_parameters(SHIFTS[shift]))
    tb: TracebackType | None = error.__traceback__ if error is not None else None
    while tb is not None:
        frame = tb.tb_frame
        if not frame.f_code.co_filename.startswith(_GYMNASIUM) and frame.f_code.co_filename != __file__:
            code = frame.f_code
            add(list(code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]))
            owner = frame.f_locals.get("self")
            if isinstance(owner, gym.Env):
                add(_parameters(type(owner)))
        tb = tb.tb_next
    return names


def _parameters(obj: Callable[..., Any]) -> Iterator[str]:
    """Named parameters of a function, or of a class's ``__init__`` chain while it forwards ``**kwargs``."""
    targets = (
        [c.__dict__["__init__"] for c in obj.__mro__ if "__init__" in c.__dict__]
        if isinstance(obj, type)
        else [obj]
    )
    for target in targets:
        if target in (object.__init__, gym.Env.__init__, gym.Wrapper.__init__):
            return
        try:
            params = inspect.signature(target).parameters.values()
        except (TypeError, ValueError):
            return
        forwards = False
        for p in params:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                yield p.name
            forwards = forwards or p.kind == p.VAR_KEYWORD
        if not forwards:
            return
