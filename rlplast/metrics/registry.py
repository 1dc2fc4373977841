"""The metric registry and the context every registered metric receives.

A metric is one function in one file plus one registration::

    @METRICS.register("my_metric")
    def my_metric(ctx: MetricContext) -> dict[str, Tensor]:
        return {"plasticity/my_metric": ctx.features.abs().mean()}

Any module placed in ``rlplast/metrics/`` is imported by the package, so the new name is then
selectable in ``MetricSuite(names=[...])`` (config ``metrics.names``). A module of your own
package registers the same way once it is imported (``docs/metrics.md``, "A metric in your own
package"). A metric that reads :attr:`MetricContext.preactivations` says so when it registers,
``@METRICS.register("my_metric", preactivations=True)``, so the suite's forward pass records them
only when a selected metric needs them. A metric that needs a TD batch (a replay minibatch with its
TD targets, :class:`TDBatch`) registers with ``td_batch=True``; one too costly for every run
registers with ``opt_in=True`` and is then left out of ``"all"`` (it runs only when named).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from rlplast.registry import Registry

__all__ = ["METRICS", "MetricContext", "MetricFn", "MetricRegistry", "TDBatch"]


@dataclass(frozen=True)
class TDBatch:
    """A replay minibatch and its TD targets, for metrics of the TD loss (gradients, curvature).

    The targets are fixed (computed by the agent from its target network, no gradient), so the
    loss ``L(θ) = mean_i huber(Q_θ(s_i, a_i) − y_i)`` (SB3's ``smooth_l1_loss``, the loss PlasticDQN
    minimises, without interventions' terms) is a function of the online network's parameters
    alone.

    Attributes:
        obs: ``(B, ...)`` observations as stored in replay (before SB3's preprocessing).
        actions: ``(B,)`` int64 actions taken.
        targets: ``(B,)`` TD targets ``y_i`` (float).
    """

    obs: Tensor
    actions: Tensor
    targets: Tensor


@dataclass
class MetricContext:
    """Everything a metric may need, computed once per evaluation by :class:`MetricSuite`.

    Every tensor comes from ONE forward pass of ``q_net`` on ``obs`` in eval mode under
    ``torch.no_grad()`` and lives on the network's device; treat all of them as read-only (other
    metrics read the same tensors). ``N`` is the number of probe observations, ``D`` the width of
    the penultimate features, ``C`` the number of actions.

    Attributes:
        q_net: the Q-network (in eval mode during the call; do not modify it — a metric that
            trains, like ``probe``, works on a deep copy).
        obs: ``(N, ...)`` probe observations on the network's device, as stored in replay
            (before SB3's preprocessing, e.g. uint8 images).
        activations: output of every activation module (``nn.ReLU``, ``nn.Tanh``, … — see
            :func:`rlplast.metrics.activations.is_activation`) by module path, e.g.
            ``"q_net.1"``, ``"features_extractor.cnn.1"``; ``(N, units)`` after a linear layer,
            ``(N, channels, H, W)`` after a convolution. A module applied twice also has
            ``"<path>#1"``, … in call order. Dict order is call order.
        preactivations: the *input* of the same activation modules, under the same keys (e.g.
            ``W h + b`` of the linear layer before the ReLU), from the same forward pass; ``None``
            unless a selected metric was registered with ``preactivations=True`` (or a
            hand-built context passes them).
        features: ``(N, D)`` penultimate features: the input of the last linear layer, flattened
            (for SB3's MLP the output of the last hidden activation, the same tensor as its entry
            in ``activations``).
        q_values: ``(N, C)`` Q-values of the same pass.
        taken_actions: ``(N,)`` int64 actions stored in replay with ``obs``, or None.
        weight: ``(C, D)`` last-layer weight ``W`` (detached, not a copy).
        bias: ``(C,)`` last-layer bias ``b`` (detached) or None.
        num_classes: number of actions ``C`` (rows of ``weight``).
        n_min: minimum samples per action class for the NC metrics (``metrics.n_min``).
        nc_global_mean: ``μ_G`` of the NC metrics: ``"classes"`` (unweighted mean of the kept
            class means) or ``"samples"`` (mean of the kept samples); ``metrics.nc_global_mean``.
        params: the network's parameters (detached, not copies), in ``q_net.parameters()`` order.
        init_params: the parameters at initialisation in the same order, or None (training passes
            them; ``weights`` then reports the distance from initialisation).
        param_names: names matching ``params`` (``q_net.named_parameters()``).
        probe_steps: optimisation steps of the probe-plasticity test (``metrics.probe_steps``).
        probe_seed: seed of the probe-plasticity test (training derives it from ``train.seed``).
        probe_lr: Adam learning rate of the probe.
        probe_batch_size: minibatch size of the probe.
        dormant_tau: threshold τ of the τ-dormant score.
        srank_delta: δ of srank.
        feature_rank_eps: ε of the feature rank.
        curvature_iters: power iterations of the ``curvature`` metric.
        td_batch: a replay minibatch with TD targets (:class:`TDBatch`) for metrics registered with
            ``td_batch=True``, or None (they then return NaN).
        state: values a metric keeps from one evaluation to the next (e.g. ``churn``'s reference
            states and previous Q-values), under the metric's name; the suite keeps the same dict
            across evaluations and training checkpoints it. Starts empty.
        options: free-form options for user metrics (``MetricSuite(options=...)``); the suite
            passes the same dict to every metric and every evaluation.
        metric_names: the metrics selected for this evaluation (lets shared passes compute only
            what is needed; empty means "unknown": shared passes then compute every piece).
        cache: per-evaluation scratch space shared by the metrics (e.g. the one float64 pass over
            the features that serves ``collapse``, ``rank`` and ``dormant``); starts empty. Key
            your own entries with your metric's name.
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
    curvature_iters: int = 20
    td_batch: TDBatch | None = None
    state: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    metric_names: tuple[str, ...] = ()
    cache: dict[str, Any] = field(default_factory=dict)
    preactivations: dict[str, Tensor] | None = None


MetricFn = Callable[[MetricContext], "dict[str, Tensor]"]


class MetricRegistry(Registry[MetricFn]):
    """The metric registry: a :class:`rlplast.registry.Registry` that also records what each metric reads.

    Example:
        >>> @METRICS.register("preact_mean", preactivations=True)  # doctest: +SKIP
        ... def preact_mean(ctx: MetricContext) -> dict[str, Tensor]:
        ...     assert ctx.preactivations is not None
        ...     return {f"plasticity/preact_mean/{k}": v.mean() for k, v in ctx.preactivations.items()}
    """

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self._preactivations: set[str] = set()
        self._td_batch: set[str] = set()
        self._opt_in: set[str] = set()

    def register(
        self, name: str, *, preactivations: bool = False, td_batch: bool = False, opt_in: bool = False
    ) -> Callable[[MetricFn], MetricFn]:
        """Decorator: register a metric function under ``name``.

        Args:
            name: the name selected in ``metrics.names`` / ``MetricSuite(names=...)``.
            preactivations: the metric reads :attr:`MetricContext.preactivations`; the suite's
                forward pass then records them whenever this metric is selected.
            td_batch: the metric reads :attr:`MetricContext.td_batch`; training then draws a replay
                minibatch and computes its TD targets whenever this metric is selected.
            opt_in: leave the metric out of ``"all"`` (it costs extra passes); it runs when named.

        Raises:
            ValueError: if ``name`` is already registered.
        """
        base = super().register(name)

        def deco(fn: MetricFn) -> MetricFn:
            base(fn)
            if preactivations:
                self._preactivations.add(name)
            if td_batch:
                self._td_batch.add(name)
            if opt_in:
                self._opt_in.add(name)
            return fn

        return deco

    def needs_preactivations(self, name: str) -> bool:
        """Whether metric ``name`` was registered with ``preactivations=True``."""
        return name in self._preactivations

    def needs_td_batch(self, name: str) -> bool:
        """Whether metric ``name`` was registered with ``td_batch=True``."""
        return name in self._td_batch

    def is_opt_in(self, name: str) -> bool:
        """Whether metric ``name`` was registered with ``opt_in=True`` (not part of ``"all"``)."""
        return name in self._opt_in

    def default_names(self) -> list[str]:
        """What ``"all"`` selects: every registered metric except the opt-in ones, in registration order."""
        return [name for name in self.names() if name not in self._opt_in]


METRICS = MetricRegistry("metric")
