"""The metric registry and the context every registered metric receives.

A metric is one function in one file plus one registration::

    @METRICS.register("my_metric")
    def my_metric(ctx: MetricContext) -> dict[str, Tensor]:
        return {"plasticity/my_metric": ctx.features.abs().mean()}

Any module placed in ``rlplast/metrics/`` is imported by the package, so the new name is then
selectable in ``MetricSuite(names=[...])`` (config ``metrics.names``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from rlplast.registry import Registry

__all__ = ["METRICS", "MetricContext", "MetricFn"]


@dataclass
class MetricContext:
    """Everything a metric may need, computed once per evaluation by :class:`MetricSuite`.

    Attributes:
        q_net: the Q-network (in eval mode during the call; do not modify it).
        obs: ``(N, ...)`` probe observations on the network's device.
        activations: outputs of every activation module, by module path (one forward pass).
        features: ``(N, D)`` penultimate features (input of the last linear layer).
        q_values: ``(N, C)`` Q-values.
        taken_actions: ``(N,)`` int64 actions stored in replay, or None.
        weight: ``(C, D)`` last-layer weight.
        bias: ``(C,)`` last-layer bias or None.
        num_classes: number of actions ``C``.
        n_min: minimum samples per action class for the NC metrics.
        nc_global_mean: ``μ_G`` of the NC metrics: ``"classes"`` (unweighted mean of the kept
            class means) or ``"samples"`` (mean of the kept samples).
        params: the network's parameters (detached), in ``q_net.parameters()`` order.
        init_params: initial parameters in the same order, or None.
        param_names: names matching ``params``.
        probe_steps: optimisation steps of the probe-plasticity test.
        probe_seed: seed of the probe-plasticity test.
        probe_lr: Adam learning rate of the probe.
        probe_batch_size: minibatch size of the probe.
        dormant_tau: threshold of the τ-dormant score.
        srank_delta: δ of srank.
        feature_rank_eps: ε of the feature rank.
        options: free-form options for user metrics.
        metric_names: the metrics selected for this evaluation (lets shared passes compute only
            what is needed; empty means "unknown": shared passes then compute every piece).
        cache: per-evaluation scratch space shared by the metrics (e.g. the one float64 pass over
            the features that serves ``collapse``, ``rank`` and ``dormant``); starts empty.
    """

    q_net: nn.Module
    obs: Tensor
    activations: dict[str, Tensor]
    features: Tensor
    q_values: Tensor
    taken_actions: Tensor | None
    weight: Tensor
    bias: Tensor | None
    num_classes: int
    n_min: int = 20
    nc_global_mean: str = "classes"
    params: list[Tensor] = field(default_factory=list)
    init_params: list[Tensor] | None = None
    param_names: list[str] = field(default_factory=list)
    probe_steps: int = 500
    probe_seed: int = 0
    probe_lr: float = 1e-3
    probe_batch_size: int = 256
    dormant_tau: float = 0.025
    srank_delta: float = 0.01
    feature_rank_eps: float = 0.01
    options: dict[str, Any] = field(default_factory=dict)
    metric_names: tuple[str, ...] = ()
    cache: dict[str, Any] = field(default_factory=dict)


MetricFn = Callable[[MetricContext], "dict[str, Tensor]"]

METRICS: Registry[MetricFn] = Registry("metric")
