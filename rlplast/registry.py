"""Name → object registries (metrics, interventions) and the plugin modules that fill them.

A plugin is any importable module whose import registers things: envs with ``gymnasium.register``,
interventions with :func:`rlplast.interventions.register`, metrics with ``METRICS.register``. A
config lists such modules under ``plugins:``; :func:`import_plugins` imports them before any name in
the config is looked up.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from rlplast.errors import UserError, describe_exception, unknown

T = TypeVar("T")

#: Appended to every "unknown <kind>" error of a :class:`Registry`.
PLUGINS_HINT = "to use your own, list the module that registers it under plugins in the config"

_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class Registry(Generic[T]):
    """A dict registry with a decorator and errors that list the valid names.

    Example:
        >>> METRICS: Registry[Callable] = Registry("metric")
        >>> @METRICS.register("feature_norm")
        ... def feature_norm(ctx): ...

    Args:
        kind: What is registered (``"metric"``), for error messages.
        hint: Appended to the "unknown <kind>" error (default: :data:`PLUGINS_HINT`).
    """

    def __init__(self, kind: str, hint: str = PLUGINS_HINT) -> None:
        self.kind = kind
        self.hint = hint
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering an object under ``name``.

        Raises:
            ValueError: If ``name`` is already registered.
        """

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._items[name] = obj
            return obj

        return deco

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a no-op when it is not registered), e.g. when a test's plugin is unloaded."""
        self._items.pop(name, None)

    def get(self, name: str) -> T:
        """The object registered as ``name``.

        Raises:
            UserError: For an unknown name; the message lists the valid names and :attr:`hint`.
        """
        try:
            return self._items[name]
        except KeyError:
            raise unknown(self.kind, name, self._items, hint=self.hint) from None

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def import_plugin(module: str, what: str = "plugin") -> None:
    """Import ``module`` so that its registrations run; every failure is one-line :class:`UserError`.

    Importing twice is a no-op (Python caches modules).

    Args:
        module: A dotted module name, e.g. ``"mylab.interventions"``.
        what: How the message names the module (``"plugin"``, ``"env module"``).

    Raises:
        UserError: ``module`` is not a module name, cannot be found, or raises while it is imported
            (the message names the exception, its message and where it was raised).
    """
    if not isinstance(module, str) or not _MODULE_NAME.fullmatch(module):
        raise UserError(f"{what} {module!r} is not a module name (expected e.g. mypkg.plugins)")
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise UserError(f"cannot import {what} '{module}': {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - user code: report it in one line
        raise UserError(f"cannot import {what} '{module}': {describe_exception(exc)}") from exc


def import_plugins(modules: Iterable[str]) -> None:
    """Import every module of a config's ``plugins`` list, in order (see :func:`import_plugin`)."""
    for module in modules:
        import_plugin(module)
