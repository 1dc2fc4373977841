"""Typed config of the supervised continual track (strict, like :mod:`rlplast.config`).

A YAML file may name a parent with ``extends: other.yaml`` (a path relative to the file); the
parent is loaded first and the file's own keys are merged on top, so a variant config is a short
overlay. ``--set key=value`` overrides are applied last. Unknown keys, wrong types and values out of
range raise :class:`rlplast.errors.UserError` (one line, exit code 2 on the command line).

Example:
    >>> cfg = load_supervised_config("configs/supervised/continual_digits.yaml", ["n_tasks=3"])
    >>> cfg.n_tasks
    3
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlplast.config import apply_overrides, deep_merge, read_yaml
from rlplast.config import build_config as _build
from rlplast.config import config_field as _f
from rlplast.config import config_to_dict as _to_dict
from rlplast.errors import UserError

__all__ = [
    "N_DIGITS",
    "MetricsSettings",
    "RegularizerConfig",
    "ShrinkPerturbConfig",
    "SupervisedConfig",
    "WarmStartConfig",
    "dump_supervised_config",
    "load_supervised_config",
    "supervised_config_from_dict",
]

#: Images in scikit-learn's bundled digits data set (the most ``n_samples`` can be).
N_DIGITS = 1797
#: The smallest ``n_samples`` (ten classes need a few samples each).
MIN_SAMPLES = 10


@dataclass
class RegularizerConfig:
    """The paper's NC regularizer ``L = CE − coef · min(NC1_batch(h, y), cap)`` (coef 0 = off)."""

    coef: float = _f(0.0, "λ, weight of the batch-NC1 reward; 0 turns the regularizer off", min=0.0)
    cap: float = _f(
        200.0, "NC1 values above cap are clipped (no reward, no gradient)", min=0.0, exclusive_min=True
    )
    variant: str = _f(
        "pinv", "pinv: Tr(Σ_W Σ_B^†)/C; quotient: Tr Σ_W / Tr Σ_B", choices=["pinv", "quotient"]
    )
    n_min: int = _f(2, "a class needs this many samples in the minibatch to count", min=1)


@dataclass
class ShrinkPerturbConfig:
    """Shrink-and-perturb θ ← shrink·θ + perturb·θ_fresh (shrink 1 and perturb 0 = off)."""

    shrink: float = _f(1.0, "λ, the factor on the current weights (1 = no shrink)", min=0.0, max=1.0)
    perturb: float = _f(0.0, "σ, the factor on a fresh initialisation", min=0.0)
    every: str = _f(
        "task",
        "when: task = at every task switch (warm start: once, before fine-tuning on the full data)",
        choices=["task"],
    )


@dataclass
class MetricsSettings:
    """End-of-task metrics on the penultimate features of the task's training set."""

    n_min: int = _f(20, "classes with fewer samples are dropped from the NC metrics", min=1)
    nc_global_mean: str = _f(
        "classes", "global mean μ_G of the NC metrics (docs/metrics.md)", choices=["classes", "samples"]
    )
    srank_delta: float = _f(0.01, "δ of srank", min=0.0, max=1.0)
    feature_rank_eps: float = _f(0.01, "ε of the feature rank", min=0.0)
    dormant_tau: float = _f(0.025, "τ of the dormant-unit fraction", min=0.0)


@dataclass
class WarmStartConfig:
    """Warm-start mode (the paper's Experiment B analogue)."""

    warmup_fraction: float = _f(
        0.5, "fraction of the training split used for warm-up", min=0.0, max=1.0, exclusive_min=True
    )
    warmup_epochs: int = _f(100, "epochs of warm-up training on the partial data", min=1)
    checkpoint_every: int = _f(5, "epochs between warm-up checkpoints (epoch 0 is always one)", min=1)
    finetune_epochs: int = _f(20, "epochs of training each checkpoint on the full training split", min=1)
    early_epochs: int = _f(50, "checkpoints at epoch <= this count as 'early' in the correlations", min=0)


@dataclass
class SupervisedConfig:
    """A supervised run: continual permuted digits (``continual``) or ``warm_start``."""

    mode: str = _f(
        "continual",
        "continual (permuted-digits task sequence) or warm_start",
        choices=["continual", "warm_start"],
    )
    seed: int = _f(0, "seed of the initialisation, the permutations and the data order", min=0)
    n_tasks: int = _f(100, "tasks (pixel permutations) in continual mode; task 0 is the identity", min=1)
    epochs_per_task: int = _f(1, "passes over the task's training data (the paper: 1)", min=1)
    lr: float = _f(0.01, "SGD learning rate (plain SGD, no momentum)", min=0.0, exclusive_min=True)
    batch_size: int = _f(1, "minibatch size (the paper: 1)", min=1)
    hidden: list[int] = _f([100, 100, 100], "hidden layer sizes of the ReLU MLP")
    n_samples: int | None = _f(
        None, f"use only the first N digits (null = all {N_DIGITS}); for quick runs", min=MIN_SAMPLES
    )
    image_size: int = _f(
        8,
        "side of the input images: 8 = the digits as shipped (64 inputs); larger = bilinearly "
        "upsampled (28: MNIST's 784 inputs)",
        min=8,
        max=64,
    )
    test_fraction: float = _f(
        0.0, "held-out fraction (stratified, seeded); warm_start needs > 0", min=0.0, max=0.9
    )
    torch_threads: int = _f(1, "CPU threads of torch and NumPy's BLAS (0 = their defaults)", min=0)
    regularizer: RegularizerConfig = field(
        default_factory=RegularizerConfig, metadata={"help": "NC regularizer"}
    )
    shrink_perturb: ShrinkPerturbConfig = field(
        default_factory=ShrinkPerturbConfig, metadata={"help": "shrink-and-perturb"}
    )
    metrics: MetricsSettings = field(default_factory=MetricsSettings, metadata={"help": "per-task metrics"})
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig, metadata={"help": "warm-start mode"})

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data."""
        return _to_dict(self)

    @property
    def shrink_perturb_on(self) -> bool:
        """Whether shrink-and-perturb changes anything."""
        return self.shrink_perturb.shrink != 1.0 or self.shrink_perturb.perturb != 0.0


def _validate(cfg: SupervisedConfig) -> None:
    if cfg.n_samples is not None and cfg.n_samples > N_DIGITS:
        raise UserError(
            f"n_samples: must be between {MIN_SAMPLES} and {N_DIGITS} (the digits data set has {N_DIGITS} "
            f"images; null = all of them), got {cfg.n_samples}"
        )
    if not cfg.hidden or any(h <= 0 for h in cfg.hidden):
        raise UserError(f"hidden: expected a non-empty list of positive sizes, got {cfg.hidden}")
    if cfg.regularizer.coef > 0 and cfg.batch_size < 2:
        raise UserError(
            "regularizer.coef > 0 needs batch_size >= 2 (NC1 of a single sample is undefined); "
            "set batch_size, e.g. --set batch_size=16"
        )
    if cfg.mode == "warm_start" and cfg.test_fraction <= 0:
        raise UserError("mode warm_start needs a held-out split: set test_fraction > 0 (e.g. 0.3)")
    if cfg.shrink_perturb.shrink == 0.0 and cfg.shrink_perturb.perturb == 0.0:
        raise UserError("shrink_perturb: shrink 0 and perturb 0 would zero every weight")


def supervised_config_from_dict(data: Any) -> SupervisedConfig:
    """Build and validate a :class:`SupervisedConfig` from plain data."""
    cfg = _build(SupervisedConfig, {} if data is None else data, "")
    _validate(cfg)
    return cfg


def _read_with_parents(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    resolved = path.resolve()
    if resolved in seen:
        raise UserError(f"{path}: 'extends' forms a cycle")
    data = read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise UserError(f"{path}: extends: expected a file name, got {parent!r}")
    base = _read_with_parents(path.parent / parent, (*seen, resolved))
    return deep_merge(base, data)


def load_supervised_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> SupervisedConfig:
    """Load a YAML config (following ``extends``), apply ``key=value`` overrides, validate.

    Args:
        path: YAML file; ``None`` starts from the defaults.
        overrides: dotted ``key=value`` strings (values read as YAML), e.g. ``regularizer.coef=0.05``.

    Returns:
        The validated config.
    """
    data = _read_with_parents(Path(path)) if path is not None else {}
    for text in overrides or []:
        # The supervised keys are mostly flat (n_tasks=20), some nested (regularizer.coef=0.05).
        dotted = text.split("=", 1)[0].strip()
        if "=" not in text or not all(dotted.split(".")):
            raise UserError(
                f"--set expects key=value, e.g. n_tasks=20 or regularizer.coef=0.05; got {text!r}"
            )
    return supervised_config_from_dict(apply_overrides(data, overrides or []))


def dump_supervised_config(cfg: SupervisedConfig) -> str:
    """The resolved config as YAML."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
