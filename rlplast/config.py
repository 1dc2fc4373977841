"""Typed run configuration: dataclasses, a strict YAML loader and dotted ``--set`` overrides.

Every field is declared with :func:`rlplast.fields.config_field` (re-exported here): a one-line
``help`` and, where it has one, an allowed range or set of choices; values are checked by
:func:`rlplast.fields.check_value` and ``docs/configuration.md`` is generated from the same fields
(``rlplast config-reference``). Loading a config imports its ``plugins`` first, then checks every
intervention spec and metric name against the registries (:func:`load_plugins`, :func:`check_names`).

Example:
    >>> cfg = load_config("configs/cartpole.yaml", overrides=["train.seed=3", "agent.learning_rate=1e-3"])
    >>> cfg.train.seed
    3
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlplast.errors import UserError, closest
from rlplast.fields import InvalidValue, check_value, config_field, field_types, reference_row

__all__ = [
    "AgentConfig",
    "CheckpointConfig",
    "Config",
    "EnvConfig",
    "EvalConfig",
    "MetricsConfig",
    "OutputConfig",
    "TrainConfig",
    "apply_overrides",
    "build_config",
    "check_names",
    "config_field",
    "config_from_dict",
    "config_to_dict",
    "deep_merge",
    "dump_config",
    "first_difference",
    "load_config",
    "load_plugins",
    "parse_override",
    "read_yaml",
    "reference_markdown",
]


@dataclass
class EnvConfig:
    """The environment: a Gymnasium id (rlplast's shifting ids or any discrete-action id)."""

    id: str = config_field(
        "CartPole-v1", "Gymnasium environment id, e.g. CartPole-v1 or rlplast/PermutedCartPole-v0"
    )
    kwargs: dict[str, Any] = config_field(
        {}, "keyword arguments for gymnasium.make (e.g. steps_per_task, n_tasks)"
    )
    import_module: str | None = config_field(
        None, "module to import before making the env (registers user envs)", key="import"
    )


@dataclass
class AgentConfig:
    """DQN hyperparameters under stable-baselines3's own names."""

    policy: str = config_field(
        "MlpPolicy",
        "SB3 policy class; CnnPolicy (NatureCNN) needs uint8 images with bounds 0..255, at least 36x36",
        choices=["MlpPolicy", "CnnPolicy"],
    )
    learning_rate: float = config_field(
        1e-4, "learning rate of Adam (of the base optimizer with trac)", min=0.0, exclusive_min=True
    )
    buffer_size: int = config_field(100_000, "replay buffer capacity (transitions)", min=1)
    learning_starts: int = config_field(1000, "env steps collected before the first update", min=0)
    batch_size: int = config_field(32, "minibatch size of each gradient step", min=1)
    tau: float = config_field(1.0, "target-network soft update coefficient (1 = hard copy)", min=0.0, max=1.0)
    gamma: float = config_field(0.99, "discount factor", min=0.0, max=1.0)
    train_freq: int = config_field(4, "env steps between training calls", min=1)
    gradient_steps: int = config_field(1, "gradient steps per training call", min=1)
    n_steps: int = config_field(1, "n-step returns", min=1)
    target_update_interval: int = config_field(10_000, "env steps between target-network updates", min=1)
    exploration_fraction: float = config_field(
        0.1, "fraction of training over which epsilon decays", min=0.0, max=1.0
    )
    exploration_initial_eps: float = config_field(1.0, "initial epsilon", min=0.0, max=1.0)
    exploration_final_eps: float = config_field(0.05, "final epsilon", min=0.0, max=1.0)
    max_grad_norm: float = config_field(10.0, "gradient clipping norm", min=0.0, exclusive_min=True)
    stats_window_size: int = config_field(100, "episodes in the rolling mean return", min=1)
    net_arch: list[int] = config_field(
        [64, 64], "hidden layer sizes of the Q-network MLP head, in linear units (before crelu doubles them)"
    )
    activation: str = config_field(
        "relu",
        "hidden activation; crelu = [relu(z), relu(-z)] doubles each hidden layer's output width "
        "(Abbas et al. 2023)",
        choices=["relu", "tanh", "elu", "leaky_relu", "crelu"],
    )
    layer_norm: bool = config_field(
        False,
        "LayerNorm after each hidden Linear of the Q head, before its activation (Lyle et al. 2024); "
        "the output layer stays a plain Linear",
    )
    weight_decay: float = config_field(
        0.0,
        "decoupled weight decay (AdamW): each step theta <- theta - learning_rate * weight_decay * theta; "
        "0 = Adam",
        min=0.0,
    )
    optimizer: str = config_field(
        "adam",
        "adam, or trac: the parameter-free TRAC scale tuner around Adam/AdamW (Muppidi et al. 2024)",
        choices=["adam", "trac"],
    )
    double_dqn: bool = config_field(
        False, "Double DQN targets: the online network picks argmax a', the target network evaluates it"
    )
    features_extractor: str | None = config_field(
        None,
        "features extractor: null (SB3 default) or minatar_cnn (channel-first grids such as MinAtar's)",
        choices=[None, "minatar_cnn"],
    )
    optimizer_impl: str = config_field(
        "foreach",
        "Adam kernels: foreach (multi-tensor; the same updates as SB3's default, bit for bit) or "
        "fused (one fused kernel per step; faster, updates differ from SB3's in the last bits)",
        choices=["foreach", "fused"],
    )


@dataclass
class TrainConfig:
    """The training budget and run-wide settings."""

    total_steps: int = config_field(50_000, "environment steps to train for", min=1)
    seed: int = config_field(0, "random seed (Python, NumPy, torch, env)", min=0)
    device: str = config_field("auto", "torch device", choices=["auto", "cpu", "cuda"])
    log_every_steps: int = config_field(
        1000, "env steps between rows of metrics.csv / TensorBoard points", min=1
    )
    torch_threads: int = config_field(
        1, "CPU threads of torch and NumPy's BLAS (0 = their defaults); 1 is fastest for small nets", min=0
    )
    progress: bool = config_field(True, "show a progress bar (only on a terminal)")
    on_nonfinite: str = config_field(
        "stop",
        "a non-finite loss, gradient norm or parameter: checkpoint and stop, or log it and continue",
        choices=["stop", "continue"],
    )
    engine: str = config_field(
        "single",
        "how rlplast compare trains a method's seeds: single (one PlasticDQN process per run) or "
        "population (all seeds of a method in lock-step in one process; docs/population.md); "
        "rlplast train always trains one PlasticDQN",
        choices=["single", "population"],
    )


@dataclass
class MetricsConfig:
    """Neural-collapse and plasticity metrics computed during training."""

    enabled: bool = config_field(True, "compute metrics during training")
    every_steps: int = config_field(
        5000, "env steps between metric computations (a multiple of log_every_steps)", min=1
    )
    probe_size: int = config_field(2048, "replay states drawn for each metric computation", min=2)
    names: list[str] = config_field(["all"], "metric names to compute (see docs/metrics.md), or [all]")
    n_min: int = config_field(20, "classes (actions) with fewer samples are dropped from NC metrics", min=1)
    nc_global_mean: str = config_field(
        "classes",
        "global mean of the NC metrics: classes (unweighted mean of the class means) or samples "
        "(sample mean, as in the paper's code; see docs/metrics.md)",
        choices=["classes", "samples"],
    )
    probe_steps: int = config_field(500, "gradient steps of the probe-plasticity fit", min=1)
    probe_every_steps: int = config_field(
        25_000,
        "env steps between probe-plasticity fits, the one costly metric (a multiple of every_steps)",
        min=1,
    )


@dataclass
class EvalConfig:
    """Continual-learning evaluation: greedy returns on every task seen so far (docs/compare.md)."""

    enabled: bool = config_field(
        False, "evaluate the agent every every_steps on every task seen so far (eval/task_<k>/… columns)"
    )
    every_steps: int = config_field(
        10_000,
        "env steps between evaluations (a multiple of train.log_every_steps); the row of the budget "
        "(train.total_steps) is evaluated too",
        min=1,
    )
    episodes: int = config_field(
        5, "episodes per task and evaluation (and random-policy episodes, once per task)", min=1
    )
    epsilon: float = config_field(
        0.001,
        "probability of a uniformly random action in evaluation (Dopamine's Atari value)",
        min=0.0,
        max=1.0,
    )
    max_episode_steps: int | None = config_field(
        None, "cut evaluation episodes after this many steps (null: the env's own time limit)", min=1
    )


@dataclass
class CheckpointConfig:
    """Checkpoints for exact resume (``rlplast train --resume RUN_DIR``)."""

    every_steps: int = config_field(
        20_000, "env steps between checkpoints (0 = only on SIGINT/SIGTERM)", min=0
    )
    keep: int = config_field(2, "newest checkpoints kept on disk", min=1)


@dataclass
class OutputConfig:
    """Where a run writes its files."""

    dir: str = config_field("runs", "parent folder of run directories")
    name: str | None = config_field(
        None, "run directory name inside output.dir, no path separators (default: <config stem>-s<seed>)"
    )
    tensorboard: bool = config_field(True, "write TensorBoard event files")
    save_model: bool = config_field(True, "write model.zip at the end")


@dataclass
class Config:
    """A whole run: plugins, env, agent, training, metrics, interventions and output."""

    plugins: list[str] = config_field(
        [],
        "modules imported first, when the config loads; their imports register your own envs, "
        "interventions and metrics (e.g. [mylab])",
    )
    env: EnvConfig = field(default_factory=EnvConfig, metadata={"help": "environment"})
    agent: AgentConfig = field(default_factory=AgentConfig, metadata={"help": "DQN hyperparameters"})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "training budget"})
    metrics: MetricsConfig = field(default_factory=MetricsConfig, metadata={"help": "metrics"})
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={"help": "continual-learning evaluation"})
    interventions: list[dict[str, Any]] = config_field(
        [],
        "interventions, e.g. [{name: reset_last_layers, every_steps: 20000}]; parameters: "
        "docs/interventions.md",
    )
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig, metadata={"help": "checkpoints"})
    output: OutputConfig = field(default_factory=OutputConfig, metadata={"help": "output"})

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data, with YAML key names (``env.import``)."""
        return config_to_dict(self)


# ---------------------------------------------------------------------------------------- checking
def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {_key(f): f for f in dataclasses.fields(cls)}


def config_to_dict(obj: Any) -> Any:
    """A dataclass (nested ones included) as plain data under its YAML key names; other values copied."""
    if dataclasses.is_dataclass(obj):
        return {_key(f): config_to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    return copy.deepcopy(obj)


def build_config(cls: type, data: Any, path: str = "") -> Any:
    """Build the dataclass ``cls`` from plain data, checking every key and value against its fields.

    Nested dataclass fields are built recursively; every other field goes through
    :func:`check_value` with its metadata.

    Args:
        cls: A dataclass whose fields are declared with :func:`config_field`.
        data: A mapping of YAML keys (``import``, not ``import_module``) to values.
        path: Dotted position of ``data`` in the whole config, for messages (``"agent"``).

    Raises:
        UserError: Not a mapping, an unknown key (naming the nearest valid one), or a bad value.
    """
    if not isinstance(data, dict):
        raise UserError(f"{path or 'config'}: expected a mapping of {cls.__name__} keys, got {data!r}")
    fields = _fields(cls)
    hints = field_types(cls)
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
            kwargs[f.name] = build_config(typing.cast(type, tp), value if value is not None else {}, where)
            continue
        try:
            kwargs[f.name] = check_value(tp, value, f.metadata)
        except InvalidValue as exc:
            raise UserError(exc.for_path(where)) from None
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
    if cfg.eval.enabled and cfg.eval.every_steps % cfg.train.log_every_steps:
        raise UserError(
            f"eval.every_steps ({cfg.eval.every_steps}) must be a multiple of "
            f"train.log_every_steps ({cfg.train.log_every_steps})"
        )
    if any(n <= 0 for n in cfg.agent.net_arch):
        raise UserError(f"agent.net_arch: layer sizes must be positive, got {cfg.agent.net_arch}")
    if not cfg.agent.net_arch and (cfg.agent.layer_norm or cfg.agent.activation == "crelu"):
        # The network options act on the Q head's hidden layers only: with none they would do nothing.
        option = "agent.layer_norm" if cfg.agent.layer_norm else "agent.activation: crelu"
        raise UserError(
            f"{option} acts on the hidden layers of agent.net_arch, which is [] here (a features "
            "extractor's own layers are not changed); give agent.net_arch hidden sizes, e.g. [128]"
        )
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


def load_plugins(cfg: Config) -> None:
    """Import the modules that register the config's own names: ``plugins``, then ``env.import``.

    A plugin that cannot be imported, or raises while it is imported, is a :class:`UserError`.
    ``env.import`` is imported here only so that interventions and metrics it registers are known
    when the config is checked; if it fails, the error is reported where it always was, when the
    env is made (a crash there is a run failure, not bad input).
    """
    from rlplast.registry import import_plugins

    import_plugins(cfg.plugins)
    if cfg.env.import_module:
        with contextlib.suppress(Exception):
            importlib.import_module(cfg.env.import_module)


def check_names(cfg: Config) -> None:
    """Check every intervention spec and metric name against the registries (after the plugins).

    Intervention specs are built as a run would build them (:func:`rlplast.interventions.build_intervention`:
    name, parameter names, types and ranges from the field metadata, then the intervention's own
    checks), so a bad spec is rejected when the config loads, before any env or model exists.

    Raises:
        UserError: An unknown intervention or metric (the message hints at ``plugins``) or a bad
            intervention parameter, prefixed with its position (``interventions[1]: …``).
    """
    from rlplast.interventions import build_intervention

    for i, spec in enumerate(cfg.interventions):
        try:
            build_intervention(spec)
        except UserError as exc:
            raise UserError(f"interventions[{i}]: {exc}") from None
    if cfg.metrics.enabled:
        from rlplast.metrics import METRICS

        for name in cfg.metrics.names:
            if name != "all":
                METRICS.get(name)  # an unknown name: UserError listing the valid ones


def config_from_dict(data: Any) -> Config:
    """Build and validate a :class:`Config` from plain data (as read from YAML).

    Imports the config's ``plugins`` (and ``env.import``) before it checks intervention and metric
    names, so names registered by those modules are valid (:func:`load_plugins`, :func:`check_names`).
    """
    if data is None:
        data = {}
    cfg = build_config(Config, data, "")
    _validate(cfg)
    load_plugins(cfg)
    check_names(cfg)
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


REFERENCE_HEADER = "| key | type | default | allowed | meaning |\n|---|---|---|---|---|"


def reference_markdown() -> str:
    """A Markdown table of every config field: key, type, default, allowed values and help."""
    lines = [REFERENCE_HEADER]

    def walk(cls: type, prefix: str) -> None:
        hints = field_types(cls)
        for f in dataclasses.fields(cls):
            key = f"{prefix}{_key(f)}"
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                walk(typing.cast(type, tp), key + ".")
                continue
            lines.append(reference_row(key, tp, f))

    walk(Config, "")
    return "\n".join(lines) + "\n"
