"""Typed settings: the field helper, the one value checker and reference-table rows.

Config sections (:mod:`rlplast.config`), the supervised track's config and intervention parameters
all declare their settings as dataclass fields made with :func:`config_field` and are checked by
:func:`check_value`; ``rlplast config-reference`` and the parameter tables of
``docs/interventions.md`` are rendered from the same fields with :func:`reference_row`.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import inspect
import math
import sys
import textwrap
import types
import typing
from collections.abc import Mapping
from dataclasses import field
from typing import Any

import yaml

from rlplast.errors import UserError


def config_field(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field with a help line and optional ``min``/``max``/``choices``/``key`` metadata.

    The one way rlplast declares a setting: config sections, the supervised track's config and
    intervention parameters all use it, and :func:`check_value` and the reference tables read it.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class Noise:
        ...     std: float = config_field(1e-3, "standard deviation of the noise", min=0.0)

    Args:
        default: The default; a list or dict default is deep-copied for every instance.
        help: One line saying what the setting does (the "meaning" column of the reference).
        **meta: ``min`` / ``max`` (inclusive bounds; ``exclusive_min=True`` makes ``min`` strict),
            ``choices`` (the allowed values, ``None`` for null) and ``key`` (the YAML key when it
            differs from the attribute name, e.g. ``import``).
    """
    meta["help"] = help
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def type_label(tp: Any) -> str:
    """An annotation as the reference tables print it (``int | None`` → ``int or null``)."""
    return _type_name(tp).replace(" | ", " or ").replace("None", "null")


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


class InvalidValue(UserError):
    """A value that does not fit a field: its type, finiteness, range or choices.

    Raised by :func:`check_value`; callers phrase it for their context with :meth:`for_path`
    (config keys) or from the attributes (intervention parameters).

    Attributes:
        kind: ``"type"``, ``"finite"``, ``"range"`` or ``"choice"``.
        expected: What was expected: ``"an integer"``, ``">= 1"``, ``"auto, cpu, cuda"`` …
        value: The offending value.
        where: Position inside the value (``"[2]"`` for an item of a list), or ``""``.
    """

    def __init__(self, kind: str, expected: str, value: Any, where: str = "") -> None:
        self.kind, self.expected, self.value, self.where = kind, expected, value, where
        super().__init__(self.for_path("value"))

    def for_path(self, path: str) -> str:
        """The config-style message, e.g. ``"agent.gamma: must be <= 1.0, got 2"``."""
        at = f"{path}{self.where}"
        if self.kind == "range":
            return f"{at}: must be {self.expected}, got {self.value!r}"
        if self.kind == "choice":
            return f"{at}: {self.value!r} is not allowed; valid: {self.expected}"
        return f"{at}: expected {self.expected}, got {self.value!r}"


def check_value(tp: Any, value: Any, meta: Mapping[str, Any] | None = None) -> Any:
    """Check ``value`` against an annotation and a field's metadata; return it coerced.

    The one checker behind config sections, the supervised config and intervention parameters.
    Types: ``bool``, ``int``, ``float``, ``str``, ``Any``, ``list[...]``, ``dict[...]`` and unions
    with ``None``. Ints are accepted for floats, integral floats and YAML's ``1e5`` (read as a
    string) for ints, and numbers must be finite. ``meta`` may carry ``choices``, ``min``, ``max``
    and ``exclusive_min`` (see :func:`config_field`).

    Example:
        >>> check_value(int, "1e5", {"min": 1})
        100000

    Raises:
        InvalidValue: The value does not fit.
        TypeError: ``tp`` is an annotation this checker does not know.
    """
    checked = _check_type(tp, value)
    if meta:
        _check_range(meta, checked)
    return checked


def _check_type(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(arg, value)
            except InvalidValue:
                pass
        raise InvalidValue("type", _type_name(tp), value)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise InvalidValue("type", f"a list of {_type_name(item)}", value)
        out = []
        for i, v in enumerate(value):
            try:
                out.append(_check_type(item, v))
            except InvalidValue as exc:
                raise InvalidValue(exc.kind, exc.expected, exc.value, f"[{i}]{exc.where}") from None
        return out
    if origin is dict:
        if not isinstance(value, dict):
            raise InvalidValue("type", "a mapping", value)
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise InvalidValue("type", "true or false", value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer() and math.isfinite(value):
            return int(value)  # 1e5 in YAML
        if isinstance(value, str):
            try:
                as_float = float(value)
            except ValueError:
                pass
            else:
                if as_float.is_integer():
                    return int(as_float)
        raise InvalidValue("type", "an integer", value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            result = float(value)
        elif isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
            try:
                result = float(value)
            except ValueError:
                raise InvalidValue("type", "a number", value) from None
        else:
            raise InvalidValue("type", "a number", value)
        if not math.isfinite(result):
            raise InvalidValue("finite", "a finite number", value)
        return result
    if tp is str:
        if isinstance(value, str):
            return value
        raise InvalidValue("type", "a string", value)
    raise TypeError(f"unsupported annotation {tp!r}")


def _check_range(meta: Mapping[str, Any], value: Any) -> None:
    if "choices" in meta and value not in meta["choices"]:
        raise InvalidValue("choice", allowed_text(meta), value)
    if value is None or isinstance(value, (str, bool, list, dict)):
        return
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and (value < lo or (meta.get("exclusive_min") and value == lo)):
        raise InvalidValue("range", f"{'>' if meta.get('exclusive_min') else '>='} {lo}", value)
    if hi is not None and value > hi:
        raise InvalidValue("range", f"<= {hi}", value)


def allowed_text(meta: Mapping[str, Any]) -> str:
    """The allowed values of a field's metadata as text: its choices, or its range (``> 0.0 and ≤ 1``)."""
    if "choices" in meta:
        return ", ".join("null" if c is None else str(c) for c in meta["choices"])
    lo, hi = meta.get("min"), meta.get("max")
    parts = []
    if lo is not None:
        parts.append(f"{'>' if meta.get('exclusive_min') else '≥'} {lo}")
    if hi is not None:
        parts.append(f"≤ {hi}")
    return " and ".join(parts)


def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotation of every dataclass field of ``cls`` (inherited ones included).

    Annotations that cannot be resolved (a name imported only for type checking) become ``Any``,
    i.e. unchecked.
    """
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):
        hints = {}
        for klass in reversed(cls.__mro__):
            module = sys.modules.get(klass.__module__)
            namespace = dict(vars(module)) if module else {}
            for name, annotation in vars(klass).get("__annotations__", {}).items():
                try:
                    hints[name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation  # noqa: S307
                except Exception:  # noqa: BLE001 - unresolvable: leave the field unchecked
                    hints[name] = Any
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def field_default(f: dataclasses.Field) -> Any:
    """A dataclass field's default value (``dataclasses.MISSING`` when it has none)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def attribute_docstrings(cls: type) -> dict[str, str]:
    """Attribute docstrings (a string literal right after a field) of ``cls`` and its bases.

    ``{}`` where the source is not available. Used as the help of fields declared without
    :func:`config_field` (e.g. ``coef: float = 0.05`` followed by ``\"\"\"λ, >= 0.\"\"\"``).
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for stmt, after in zip(body, body[1:], strict=False):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[stmt.target.id] = " ".join(after.value.value.split())
    return docs


def _shown(value: Any) -> str:
    if value is dataclasses.MISSING:
        return "(required)"
    if isinstance(value, tuple):
        value = list(value)
    try:
        text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    except yaml.YAMLError:
        text = repr(value)
    return f"`{text}`"


def reference_row(key: str, tp: Any, f: dataclasses.Field, help: str | None = None) -> str:
    """One row ``| key | type | default | allowed | meaning |`` of a reference table.

    Args:
        key: What the first column shows (``agent.gamma``, or a parameter name).
        tp: The field's resolved annotation.
        f: The field (its default and metadata).
        help: The meaning; default: the field's ``help`` metadata.
    """
    meaning = f.metadata.get("help", "") if help is None else help
    cells = [f"`{key}`", type_label(tp), _shown(field_default(f)), allowed_text(f.metadata), meaning]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
