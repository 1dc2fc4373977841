"""Typed run configuration: dataclasses, a strict YAML loader and dotted ``--set`` overrides.

Every field carries a one-line ``help`` and, where it has one, an allowed range or set of choices;
``docs/configuration.md`` is generated from these (``rlplast config-reference``).

Example:
    >>> cfg = load_config("configs/cartpole.yaml", overrides=["train.seed=3", "agent.learning_rate=1e-3"])
    >>> cfg.train.seed
    3
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlplast.errors import UserError, closest


def _f(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field with a help line and optional ``min``/``max``/``choices``/``key``."""
    meta["help"] = help
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class EnvConfig:
    """The environment: a Gymnasium id (rlplast's shifting ids or any discrete-action id)."""

    id: str = _f("CartPole-v1", "Gymnasium environment id, e.g. CartPole-v1 or rlplast/PermutedCartPole-v0")
    kwargs: dict[str, Any] = _f({}, "keyword arguments for gymnasium.make (e.g. steps_per_task, n_tasks)")
    import_module: str | None = _f(
        None, "module to import before making the env (registers user envs)", key="import"
    )


@dataclass
class AgentConfig:
    """DQN hyperparameters under stable-baselines3's own names."""

    policy: str = _f(
        "MlpPolicy",
        "SB3 policy class; CnnPolicy (NatureCNN) needs uint8 images with bounds 0..255, at least 36x36",
        choices=["MlpPolicy", "CnnPolicy"],
    )
    learning_rate: float = _f(1e-4, "Adam learning rate", min=0.0, exclusive_min=True)
    buffer_size: int = _f(100_000, "replay buffer capacity (transitions)", min=1)
    learning_starts: int = _f(1000, "env steps collected before the first update", min=0)
    batch_size: int = _f(32, "minibatch size of each gradient step", min=1)
    tau: float = _f(1.0, "target-network soft update coefficient (1 = hard copy)", min=0.0, max=1.0)
    gamma: float = _f(0.99, "discount factor", min=0.0, max=1.0)
    train_freq: int = _f(4, "env steps between training calls", min=1)
    gradient_steps: int = _f(1, "gradient steps per training call", min=1)
    n_steps: int = _f(1, "n-step returns", min=1)
    target_update_interval: int = _f(10_000, "env steps between target-network updates", min=1)
    exploration_fraction: float = _f(0.1, "fraction of training over which epsilon decays", min=0.0, max=1.0)
    exploration_initial_eps: float = _f(1.0, "initial epsilon", min=0.0, max=1.0)
    exploration_final_eps: float = _f(0.05, "final epsilon", min=0.0, max=1.0)
    max_grad_norm: float = _f(10.0, "gradient clipping norm", min=0.0, exclusive_min=True)
    stats_window_size: int = _f(100, "episodes in the rolling mean return", min=1)
    net_arch: list[int] = _f([64, 64], "hidden layer sizes of the Q-network MLP head")
    activation: str = _f("relu", "hidden activation", choices=["relu", "tanh", "elu", "leaky_relu"])
    features_extractor: str | None = _f(
        None,
        "features extractor: null (SB3 default) or minatar_cnn (channel-first grids such as MinAtar's)",
        choices=[None, "minatar_cnn"],
    )
    optimizer_impl: str = _f(
        "foreach",
        "Adam kernels: foreach (multi-tensor; the same updates as SB3's default, bit for bit) or "
        "fused (one fused kernel per step; faster, updates differ from SB3's in the last bits)",
        choices=["foreach", "fused"],
    )


@dataclass
class TrainConfig:
    """The training budget and run-wide settings."""

    total_steps: int = _f(50_000, "environment steps to train for", min=1)
    seed: int = _f(0, "random seed (Python, NumPy, torch, env)", min=0)
    device: str = _f("auto", "torch device", choices=["auto", "cpu", "cuda"])
    log_every_steps: int = _f(1000, "env steps between rows of metrics.csv / TensorBoard points", min=1)
    torch_threads: int = _f(
        1, "CPU threads of torch and NumPy's BLAS (0 = their defaults); 1 is fastest for small nets", min=0
    )
    progress: bool = _f(True, "show a progress bar (only on a terminal)")
    on_nonfinite: str = _f(
        "stop",
        "a non-finite loss, gradient norm or parameter: checkpoint and stop, or log it and continue",
        choices=["stop", "continue"],
    )


@dataclass
class MetricsConfig:
    """Neural-collapse and plasticity metrics computed during training."""

    enabled: bool = _f(True, "compute metrics during training")
    every_steps: int = _f(
        5000, "env steps between metric computations (a multiple of log_every_steps)", min=1
    )
    probe_size: int = _f(2048, "replay states drawn for each metric computation", min=2)
    names: list[str] = _f(["all"], "metric names to compute (see docs/metrics.md), or [all]")
    n_min: int = _f(20, "classes (actions) with fewer samples are dropped from NC metrics", min=1)
    nc_global_mean: str = _f(
        "classes",
        "global mean of the NC metrics: classes (unweighted mean of the class means) or samples "
        "(sample mean, as in the paper's code; see docs/metrics.md)",
        choices=["classes", "samples"],
    )
    probe_steps: int = _f(500, "gradient steps of the probe-plasticity fit", min=1)
    probe_every_steps: int = _f(
        25_000,
        "env steps between probe-plasticity fits, the one costly metric (a multiple of every_steps)",
        min=1,
    )


@dataclass
class CheckpointConfig:
    """Checkpoints for exact resume (``rlplast train --resume RUN_DIR``)."""

    every_steps: int = _f(20_000, "env steps between checkpoints (0 = only on SIGINT/SIGTERM)", min=0)
    keep: int = _f(2, "newest checkpoints kept on disk", min=1)


@dataclass
class OutputConfig:
    """Where a run writes its files."""

    dir: str = _f("runs", "parent folder of run directories")
    name: str | None = _f(
        None, "run directory name inside output.dir, no path separators (default: <config stem>-s<seed>)"
    )
    tensorboard: bool = _f(True, "write TensorBoard event files")
    save_model: bool = _f(True, "write model.zip at the end")


@dataclass
class Config:
    """A whole run: env, agent, training, metrics, interventions and output."""

    env: EnvConfig = field(default_factory=EnvConfig, metadata={"help": "environment"})
    agent: AgentConfig = field(default_factory=AgentConfig, metadata={"help": "DQN hyperparameters"})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "training budget"})
    metrics: MetricsConfig = field(default_factory=MetricsConfig, metadata={"help": "metrics"})
    interventions: list[dict[str, Any]] = _f(
        [], "interventions, e.g. [{name: reset_last_layers, every_steps: 20000}]"
    )
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig, metadata={"help": "checkpoints"})
    output: OutputConfig = field(default_factory=OutputConfig, metadata={"help": "output"})

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data, with YAML key names (``env.import``)."""
        return _to_dict(self)


# ---------------------------------------------------------------------------------------- loading
def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {_key(f): f for f in dataclasses.fields(cls)}


def _to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {_key(f): _to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    return copy.deepcopy(obj)


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _check(path: str, tp: Any, value: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; return the (coerced) value or raise UserError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check(path, arg, value)
            except UserError as exc:
                errors.append(exc)
        raise UserError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"{path}: expected a list of {_type_name(typing.get_args(tp)[0])}, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_check(f"{path}[{i}]", item, v) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{path}: expected true or false, got {value!r}")
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
        raise UserError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            result = float(value)
        elif isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
            try:
                result = float(value)
            except ValueError:
                raise UserError(f"{path}: expected a number, got {value!r}") from None
        else:
            raise UserError(f"{path}: expected a number, got {value!r}")
        if not math.isfinite(result):
            raise UserError(f"{path}: expected a finite number, got {value!r}")
        return result
    if tp is str:
        if isinstance(value, str):
            return value
        raise UserError(f"{path}: expected a string, got {value!r}")
    raise TypeError(f"unsupported annotation {tp!r} at {path}")


def _check_range(path: str, f: dataclasses.Field, value: Any) -> None:
    meta = f.metadata
    if "choices" in meta and value not in meta["choices"]:
        valid = ", ".join("null" if c is None else str(c) for c in meta["choices"])
        raise UserError(f"{path}: {value!r} is not allowed; valid: {valid}")
    if value is None or isinstance(value, (str, bool, list, dict)):
        return
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and (value < lo or (meta.get("exclusive_min") and value == lo)):
        op = ">" if meta.get("exclusive_min") else ">="
        raise UserError(f"{path}: must be {op} {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise UserError(f"{path}: must be <= {hi}, got {value!r}")


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise UserError(f"{path or 'config'}: expected a mapping of {cls.__name__} keys, got {data!r}")
    fields = _fields(cls)
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in fields:
            raise UserError(
                f"unknown key '{where}'{closest(str(key), fields)}; valid keys: {', '.join(fields)}"
            )
        f = fields[key]
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(typing.cast(type, tp), value if value is not None else {}, where)
            continue
        checked = _check(where, tp, value)
        _check_range(where, f, checked)
        kwargs[f.name] = checked
    return cls(**kwargs)


def _validate(cfg: Config) -> None:
    """Cross-field rules that one field's range cannot express."""
    if cfg.metrics.enabled and cfg.metrics.every_steps % cfg.train.log_every_steps:
        raise UserError(
            f"metrics.every_steps ({cfg.metrics.every_steps}) must be a multiple of "
            f"train.log_every_steps ({cfg.train.log_every_steps})"
        )
    if cfg.metrics.enabled and cfg.metrics.probe_every_steps % cfg.metrics.every_steps:
        raise UserError(
            f"metrics.probe_every_steps ({cfg.metrics.probe_every_steps}) must be a multiple of "
            f"metrics.every_steps ({cfg.metrics.every_steps})"
        )
    if any(n <= 0 for n in cfg.agent.net_arch):
        raise UserError(f"agent.net_arch: layer sizes must be positive, got {cfg.agent.net_arch}")
    name = cfg.output.name
    if name is not None and (
        name in (".", "..") or any(sep in name for sep in ("/", "\\", os.sep)) or "\0" in name
    ):
        raise UserError(
            f"output.name: must be a plain directory name (no path separators, not '.' or '..'), "
            f"got {name!r}; set output.dir (or --out) to choose where runs go"
        )
    for i, spec in enumerate(cfg.interventions):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise UserError(f"interventions[{i}]: expected a mapping with a 'name', got {spec!r}")


def config_from_dict(data: Any) -> Config:
    """Build and validate a :class:`Config` from plain data (as read from YAML)."""
    if data is None:
        data = {}
    cfg = _build(Config, data, "")
    _validate(cfg)
    return cfg


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every failure into a one-line UserError."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "could not parse"
        raise UserError(f"invalid YAML in {p}{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read config {p}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{p}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Merge ``overlay`` into a copy of ``base``: mappings merge recursively, other values replace."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value`` (the value is read as YAML) into (path, value)."""
    if "=" not in text:
        raise UserError(f"--set expects section.key=value, got {text!r}")
    dotted, raw = text.split("=", 1)
    parts = dotted.strip().split(".")
    if not all(parts):
        raise UserError(f"--set expects section.key=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise UserError(f"--set {dotted}: cannot parse value {raw!r} as YAML") from None
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set a.b=c`` overrides to plain config data (keys are checked when building)."""
    out = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise UserError(f"--set {'.'.join(parts)}: '{where}' is not a section")
            node = child
        node[parts[-1]] = value
    return out


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    overlays: list[dict[str, Any]] | None = None,
) -> Config:
    """Load a YAML config, merge method overlays, apply ``--set`` overrides, validate.

    Args:
        path: YAML file (``None`` starts from the defaults).
        overrides: ``section.key=value`` strings, applied last.
        overlays: partial configs merged on top of the file before the overrides.
    """
    data = read_yaml(path) if path is not None else {}
    for overlay in overlays or []:
        data = deep_merge(data, overlay)
    data = apply_overrides(data, overrides or [])
    return config_from_dict(data)


_MISSING = "(missing)"


def first_difference(a: Any, b: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """The first place two plain configs differ, as ``(dotted path, value in a, value in b)``.

    Mappings are compared key by key and lists item by item (``interventions[0].coef``); values
    must have the same type (``1`` differs from ``1.0`` and ``true``), NaN equals NaN. A key present
    on one side only gives ``'(missing)'`` on the other. ``None`` when they are the same.
    """
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            where = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                return where, a.get(key, _MISSING), b.get(key, _MISSING)
            found = first_difference(a[key], b[key], where)
            if found is not None:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    if both_nan or (type(a) is type(b) and a == b):
        return None
    return path or "config", a, b


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML (what is written to a run's ``config.yaml``)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def reference_markdown() -> str:
    """A Markdown table of every config field: key, type, default, allowed values and help."""
    lines = ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key = f"{prefix}{_key(f)}"
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                walk(typing.cast(type, tp), key + ".")
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc,operator]
            meta = f.metadata
            allowed = ""
            if "choices" in meta:
                allowed = ", ".join("null" if c is None else str(c) for c in meta["choices"])
            elif "min" in meta or "max" in meta:
                lo = meta.get("min")
                op = ">" if meta.get("exclusive_min") else "≥"
                allowed = " and ".join(
                    s
                    for s in (
                        f"{op} {lo}" if lo is not None else "",
                        f"≤ {meta['max']}" if "max" in meta else "",
                    )
                    if s
                )
            shown = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
            shown_type = _type_name(tp).replace(" | ", " or ").replace("None", "null")
            lines.append(f"| `{key}` | {shown_type} | `{shown}` | {allowed} | {meta.get('help', '')} |")

    walk(Config, "")
    return "\n".join(lines) + "\n"
