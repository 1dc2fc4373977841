"""A supervised continual track: permuted digits with an MLP (the paper's Experiment A, CPU-sized).

See ``docs/supervised.md``. Example:

    >>> from rlplast.supervised import load_supervised_config, run_continual
    >>> cfg = load_supervised_config(None, ["n_tasks=2", "n_samples=200", "metrics.n_min=5"])
    >>> rows = run_continual(cfg, progress=None)
    >>> sorted(rows[0])[:3]
    ['c_eff', 'dead_fraction', 'distance_from_init']
"""

from __future__ import annotations

from rlplast.supervised.config import SupervisedConfig, load_supervised_config, supervised_config_from_dict
from rlplast.supervised.data import load_digits_data, task_permutation
from rlplast.supervised.model import MLP, build_mlp, sgd_minibatch, sgd_online_single, shrink_perturb
from rlplast.supervised.report import run_supervised, write_report
from rlplast.supervised.track import run_continual, run_warm_start, task_metrics

__all__ = [
    "MLP",
    "SupervisedConfig",
    "build_mlp",
    "load_digits_data",
    "load_supervised_config",
    "run_continual",
    "run_supervised",
    "run_warm_start",
    "sgd_minibatch",
    "sgd_online_single",
    "shrink_perturb",
    "supervised_config_from_dict",
    "task_metrics",
    "task_permutation",
    "write_report",
]
