"""Method overlays: a method is a partial config merged onto a base config.

``methods/<name>.yaml`` beside the base config (e.g. ``configs/methods/reset.yaml``) or an explicit
``.yaml`` path. ``rlplast train --method`` and ``rlplast compare --methods`` both resolve names here.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rlplast.errors import UserError, closest

#: What ``rlplast compare`` runs without ``--methods``: the mission's comparison of plain DQN,
#: periodic last-layer reset and the NC regularizer.
DEFAULT_METHODS = ("vanilla", "reset", "ncreg")


def available_methods(config_path: str | Path) -> list[str]:
    """Method names found in ``methods/`` beside the config."""
    folder = Path(config_path).parent / "methods"
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.yaml"))


def resolve_method(config_path: str | Path, name: str) -> tuple[str, Path]:
    """Map a method name (or an explicit ``.yaml`` path) to ``(method name, overlay path)``.

    Raises:
        UserError: no such overlay (the message lists the available methods).
    """
    if name.endswith((".yaml", ".yml")):
        path = Path(name)
        if not path.is_file():
            raise UserError(f"method overlay not found: {path}")
        return path.stem, path
    path = Path(config_path).parent / "methods" / f"{name}.yaml"
    if not path.is_file():
        valid = available_methods(config_path)
        listing = ", ".join(valid) if valid else f"none (no .yaml files in {path.parent})"
        raise UserError(f"unknown method '{name}'{closest(name, valid)}; available methods: {listing}")
    return name, path


def parse_methods(text: str | Iterable[str]) -> list[str]:
    """Split ``"a,b , c"`` into names; reject an empty list and duplicates."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [m.strip() for m in items if m.strip()]
    if not names:
        raise UserError("--methods: give at least one method, e.g. --methods vanilla,reset")
    dupes = sorted({m for m in names if names.count(m) > 1})
    if dupes:
        raise UserError(f"--methods: listed more than once: {', '.join(dupes)}")
    return names


def refuse_overlay_as_config(config_path: str | Path, command: str = "train") -> None:
    """Refuse a method overlay passed where a base config belongs (it lives in a ``methods/`` folder).

    An overlay is a partial config: loaded on its own it would silently train the defaults
    (CartPole-v1) with the overlay's interventions.

    Raises:
        UserError: ``config_path`` is in a folder named ``methods`` (the message names the base
            configs beside that folder and the flag that takes the method).
    """
    path = Path(config_path)
    if path.parent.name != "methods":
        return
    bases = sorted(p.name for p in path.parent.parent.glob("*.yaml"))
    listing = f" (base configs there: {', '.join(bases)})" if bases else ""
    flag = f"--method {path.stem}" if command == "train" else f"--methods {path.stem}"
    base = path.parent.parent / (bases[0] if bases else "BASE.yaml")
    raise UserError(
        f"{path} is a method overlay, not a config: give a base config and the method, e.g. "
        f"rlplast {command} {base} {flag}{listing}"
    )
