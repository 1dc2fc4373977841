"""The supervised continual track (Experiment A analogue) and the warm-start mode (Experiment B analogue).

Continual: task ``k`` is the digits with pixel permutation ``task_permutation(seed, k)``; the
network trains on each task for ``epochs_per_task`` passes in a seeded order. Plasticity of a task
is its **online accuracy**: the fraction of training samples predicted correctly *before* the
update that uses them, over all of the task's passes. After each task, NC1–NC4 (and the NC1
quotient) of the penultimate features of the task's whole training set (network in its final
state for the task; it has no BatchNorm or dropout, so there is no train/eval difference), labels =
digit classes, ``W``/``b`` = the last linear layer, plus srank, effective and feature rank,
dormant and dead fractions, feature norm and distance from the initialisation.

Warm start: warm up on a seeded ``warmup_fraction`` of the training split for ``warmup_epochs``,
keeping a checkpoint at epoch 0 and every ``checkpoint_every`` epochs; the NC metrics of each
checkpoint are computed on its warm-up data; then each checkpoint trains ``finetune_epochs`` on the
whole training split, and its final held-out accuracy is recorded.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from rlplast.interventions.nc_regularizer import NCRegularizer
from rlplast.metrics.collapse import collapse_metrics
from rlplast.metrics.plasticity import (
    dead_units,
    distance_from_init,
    dormant_units,
    effective_rank_from_sv,
    feature_norm,
    feature_rank_from_sv,
    singular_values,
    srank_from_sv,
)
from rlplast.supervised.config import SupervisedConfig
from rlplast.supervised.data import (
    _TAG_FRESH,
    _TAG_INIT,
    NUM_CLASSES,
    Dataset,
    epoch_order,
    load_digits_data,
    split,
    task_permutation,
    torch_seed_for,
    warmup_indices,
)
from rlplast.supervised.model import MLP, build_mlp, sgd_minibatch, sgd_online_single, shrink_perturb
from rlplast.threads import set_cpu_threads

__all__ = [
    "NC_KEYS",
    "PLASTICITY_KEYS",
    "evaluate",
    "run_continual",
    "run_warm_start",
    "task_metrics",
    "train_epoch",
]

#: NC columns of tasks.csv / checkpoints.csv (from :func:`collapse_metrics`, ``counts`` dropped).
NC_KEYS = (
    "nc1",
    "nc1_quotient",
    "nc2_equinorm_means",
    "nc2_equinorm_weights",
    "nc2_equiangular",
    "nc2_maxangle",
    "nc2_etf_error",
    "nc3",
    "nc3_etf_error",
    "nc4_mismatch",
    "nc4_agreement",
    "c_eff",
)
#: Plasticity columns.
PLASTICITY_KEYS = (
    "srank",
    "effective_rank",
    "feature_rank",
    "dormant_fraction",
    "dead_fraction",
    "feature_norm",
    "distance_from_init",
)

#: Where progress lines go (``None``: nowhere). Not the RL side's progress reporting: training's
#: ``rlplast.callbacks.Progress`` is a tqdm bar driven by SB3 callbacks and a run's logging rows,
#: and the sweep's ``rlplast.sweep.Progress`` counts finished runs of a grid (with an ETA) under
#: ``rlplast compare:``; a supervised seed is neither, so its few lines (every 10 tasks, each
#: checkpoint) go to this plain callable.
Progress = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_regularizer(cfg: SupervisedConfig) -> NCRegularizer | None:
    """The NC regularizer of the config (``None`` when ``regularizer.coef == 0``)."""
    r = cfg.regularizer
    if r.coef == 0:
        return None
    return NCRegularizer(coef=r.coef, cap=r.cap, variant=r.variant, n_min=r.n_min)


def train_epoch(
    net: MLP, x: Tensor, y: Tensor, lr: float, batch_size: int, regularizer: NCRegularizer | None
) -> tuple[int, list[float]]:
    """One pass over ``(x, y)`` in the given order; the fast path for batch 1 without a regularizer.

    Returns:
        ``(correct_before_update, batch_nc1_values)``.
    """
    if batch_size == 1 and regularizer is None:
        return sgd_online_single(net, x, y, lr), []
    return sgd_minibatch(net, x, y, lr, batch_size, regularizer)


@torch.no_grad()
def evaluate(net: MLP, x: Tensor, y: Tensor) -> float:
    """Accuracy of the current network on ``(x, y)``."""
    return float((net(x).argmax(1) == y).double().mean())


@torch.no_grad()
def task_metrics(
    net: MLP, x: Tensor, y: Tensor, cfg: SupervisedConfig, init_params: list[Tensor]
) -> dict[str, float]:
    """NC and plasticity metrics of the penultimate features of ``(x, y)``, plus accuracy on it.

    The NC values come from one call of :func:`rlplast.metrics.collapse.collapse_metrics` with
    labels = digit classes, ``W``, ``b`` = the last linear layer and ``μ_G`` from
    ``metrics.nc_global_mean``.
    """
    acts, logits = net.forward_all(x)
    feats = acts[-1]
    m = cfg.metrics
    nc = collapse_metrics(
        feats, y, net.head.weight, net.head.bias, NUM_CLASSES, m.n_min, global_mean=m.nc_global_mean
    )
    out = {k: float(nc[k]) for k in NC_KEYS}
    sv = singular_values(feats)
    out["srank"] = float(srank_from_sv(sv, m.srank_delta))
    out["effective_rank"] = float(effective_rank_from_sv(sv))
    out["feature_rank"] = float(feature_rank_from_sv(sv, feats.shape[0], m.feature_rank_eps))
    n_dormant = n_dead = 0.0
    units = 0
    for a in acts:
        count, n_units = dormant_units(a, m.dormant_tau)
        dead, _ = dead_units(a)
        n_dormant += float(count)
        n_dead += float(dead)
        units += n_units
    out["dormant_fraction"] = n_dormant / units
    out["dead_fraction"] = n_dead / units
    out["feature_norm"] = float(feature_norm(feats))
    out["distance_from_init"] = float(distance_from_init(net.parameters(), init_params))
    out["train_acc"] = float((logits.argmax(1) == y).double().mean())
    return out


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _data(cfg: SupervisedConfig) -> tuple[Dataset, Dataset | None]:
    return split(load_digits_data(cfg.n_samples, cfg.image_size), cfg.test_fraction, cfg.seed)


def run_continual(cfg: SupervisedConfig, progress: Progress | None = _stderr) -> list[dict[str, Any]]:
    """Run the permuted-digits task sequence for one seed (``cfg.seed``).

    Returns:
        One row per task: ``seed, task, online_acc, online_acc_last_epoch, train_acc, test_acc,
        nc1_batch, shrink_perturbed`` and every key of :data:`NC_KEYS` and
        :data:`PLASTICITY_KEYS`. ``test_acc`` is NaN without a held-out split, ``nc1_batch`` (mean
        minibatch NC1 seen by the regularizer) NaN without the regularizer.
    """
    set_cpu_threads(cfg.torch_threads)
    train, test = _data(cfg)
    sizes = [train.x.shape[1], *cfg.hidden, NUM_CLASSES]
    net = build_mlp(sizes, torch_seed_for(cfg.seed, _TAG_INIT))
    init_params = [p.detach().clone() for p in net.parameters()]
    regularizer = make_regularizer(cfg)
    rows: list[dict[str, Any]] = []
    n = len(train)
    start_all = time.perf_counter()
    for task in range(cfg.n_tasks):
        perm = task_permutation(cfg.seed, task, train.x.shape[1])
        sp = task > 0 and cfg.shrink_perturb_on
        if sp:
            shrink_perturb(
                net,
                cfg.shrink_perturb.shrink,
                cfg.shrink_perturb.perturb,
                torch_seed_for(cfg.seed, _TAG_FRESH, task),
            )
        x_task = train.x[:, perm].contiguous()
        correct = 0
        last_correct = 0
        batch_nc1: list[float] = []
        try:
            for epoch in range(cfg.epochs_per_task):
                order = epoch_order(cfg.seed, n, task, epoch)
                last_correct, nc1s = train_epoch(
                    net, x_task[order], train.y[order], cfg.lr, cfg.batch_size, regularizer
                )
                correct += last_correct
                batch_nc1 += nc1s
        except FloatingPointError as exc:
            # A diverged network has no meaningful metrics: the seed's rows end at the last good task.
            if progress is not None:
                progress(f"seed {cfg.seed} task {task}: {exc}; stopping this seed")
            break
        row: dict[str, Any] = {
            "seed": cfg.seed,
            "task": task,
            "online_acc": correct / (n * cfg.epochs_per_task),
            "online_acc_last_epoch": last_correct / n,
        }
        metrics = task_metrics(net, x_task, train.y, cfg, init_params)
        row["train_acc"] = metrics.pop("train_acc")
        row["test_acc"] = evaluate(net, test.x[:, perm], test.y) if test is not None else math.nan
        row["nc1_batch"] = _nanmean(batch_nc1) if regularizer is not None else math.nan
        row["shrink_perturbed"] = int(sp)
        row.update(metrics)
        rows.append(row)
        if progress is not None and (task % 10 == 0 or task == cfg.n_tasks - 1):
            progress(
                f"seed {cfg.seed} task {task}/{cfg.n_tasks - 1}: online acc {row['online_acc']:.3f}, "
                f"NC1 {row['nc1']:.3g} ({time.perf_counter() - start_all:.0f} s)"
            )
    return rows


def run_warm_start(cfg: SupervisedConfig, progress: Progress | None = _stderr) -> list[dict[str, Any]]:
    """Warm up on part of the training split, then fine-tune every checkpoint on all of it (one seed).

    Returns:
        One row per checkpoint: ``seed, epoch, warmup_acc, warmup_test_acc, final_test_acc,
        final_train_acc, shrink_perturbed`` and every NC / plasticity key
        (computed on the warm-up data at the checkpoint).
    """
    set_cpu_threads(cfg.torch_threads)
    train, test = _data(cfg)
    assert test is not None  # the config validation requires test_fraction > 0
    ws = cfg.warm_start
    warm = train.subset(warmup_indices(cfg.seed, len(train), ws.warmup_fraction))
    sizes = [train.x.shape[1], *cfg.hidden, NUM_CLASSES]
    net = build_mlp(sizes, torch_seed_for(cfg.seed, _TAG_INIT))
    init_params = [p.detach().clone() for p in net.parameters()]
    regularizer = make_regularizer(cfg)
    checkpoints: list[tuple[int, MLP]] = [(0, copy.deepcopy(net))]
    for epoch in range(1, ws.warmup_epochs + 1):
        order = epoch_order(cfg.seed, len(warm), 0, epoch)
        train_epoch(net, warm.x[order], warm.y[order], cfg.lr, cfg.batch_size, regularizer)
        if epoch % ws.checkpoint_every == 0:
            checkpoints.append((epoch, copy.deepcopy(net)))
    rows: list[dict[str, Any]] = []
    start_all = time.perf_counter()
    for epoch, ckpt in checkpoints:
        row: dict[str, Any] = {"seed": cfg.seed, "epoch": epoch}
        metrics = task_metrics(ckpt, warm.x, warm.y, cfg, init_params)
        row["warmup_acc"] = metrics.pop("train_acc")
        row["warmup_test_acc"] = evaluate(ckpt, test.x, test.y)
        if cfg.shrink_perturb_on:
            shrink_perturb(
                ckpt,
                cfg.shrink_perturb.shrink,
                cfg.shrink_perturb.perturb,
                torch_seed_for(cfg.seed, _TAG_FRESH, epoch),
            )
        for ft_epoch in range(ws.finetune_epochs):
            # The same fine-tuning data order for every checkpoint: only the starting point differs.
            order = epoch_order(cfg.seed, len(train), 1, ft_epoch)
            train_epoch(ckpt, train.x[order], train.y[order], cfg.lr, cfg.batch_size, regularizer)
        row["final_test_acc"] = evaluate(ckpt, test.x, test.y)
        row["final_train_acc"] = evaluate(ckpt, train.x, train.y)
        row["shrink_perturbed"] = int(cfg.shrink_perturb_on)
        row.update(metrics)
        rows.append(row)
        if progress is not None:
            progress(
                f"seed {cfg.seed} checkpoint epoch {epoch}: NC1 {row['nc1']:.3g}, final test acc "
                f"{row['final_test_acc']:.3f} ({time.perf_counter() - start_all:.0f} s)"
            )
    return rows
