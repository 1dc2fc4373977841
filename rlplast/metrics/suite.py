"""MetricSuite: run the selected metrics on one forward pass, move results to the host once."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from rlplast.errors import UserError
from rlplast.metrics.activations import forward_pass
from rlplast.metrics.collapse import check_global_mean
from rlplast.metrics.registry import METRICS, MetricContext, TDBatch
from rlplast.nets import last_linear

__all__ = ["MetricSuite"]


class MetricSuite:
    """A validated selection of registered metrics.

    Example:
        >>> suite = MetricSuite(names=["collapse", "rank", "dormant"], n_min=20)
        >>> values = suite.compute(model.q_net, obs, taken_actions=actions)  # doctest: +SKIP
        >>> values["collapse/nc1_greedy"], suite.nan_reasons  # doctest: +SKIP

    Args:
        names: metric names, or ``("all",)`` for every registered metric (probe included) except
            the opt-in ones (``grama``, ``curvature``), which run only when named.
        n_min: minimum samples per action class for the NC metrics.
        nc_global_mean: ``μ_G`` of the NC metrics: ``"classes"`` (unweighted mean of the kept
            class means, default) or ``"samples"`` (mean of the kept samples, as in the paper's
            code and Papyan et al.); see ``docs/metrics.md``.
        probe_steps: Adam steps of the probe-plasticity test.
        probe_seed: seed of the probe-plasticity test.
        probe_lr: Adam learning rate of the probe.
        probe_batch_size: minibatch size of the probe.
        dormant_tau: τ of the dormant score.
        srank_delta: δ of srank.
        feature_rank_eps: ε of the feature rank.
        curvature_iters: power iterations of ``curvature``.
        state: the dict kept across evaluations for stateful metrics (``churn``) — pass one dict to
            several suites to share it; default: a new dict of this suite's own.
        options: free-form options passed to user metrics through ``MetricContext.options``.

    Raises:
        UserError: for an unknown metric name or ``nc_global_mean`` (the message lists the valid
            ones).
    """

    def __init__(
        self,
        names: Sequence[str] = ("all",),
        n_min: int = 20,
        nc_global_mean: str = "classes",
        probe_steps: int = 500,
        probe_seed: int = 0,
        probe_lr: float = 1e-3,
        probe_batch_size: int = 256,
        dormant_tau: float = 0.025,
        srank_delta: float = 0.01,
        feature_rank_eps: float = 0.01,
        curvature_iters: int = 20,
        state: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(names, str):
            names = [names]
        selected: list[str] = []
        for name in names:
            if name == "all":
                selected.extend(METRICS.default_names())
            else:
                METRICS.get(name)  # raises UserError listing the valid names
                selected.append(name)
        if not selected:
            raise UserError(f"no metrics selected; valid: all, {', '.join(sorted(METRICS.names()))}")
        self.names: list[str] = list(dict.fromkeys(selected))
        #: Whether the forward pass records pre-activations (some selected metric reads them).
        self.preactivations = any(METRICS.needs_preactivations(name) for name in self.names)
        #: Whether some selected metric reads a TD batch (pass ``td_batch`` to ``compute`` then).
        self.needs_td_batch = any(METRICS.needs_td_batch(name) for name in self.names)
        self._missing_td_batch = False
        self.n_min = int(n_min)
        self.nc_global_mean = check_global_mean(nc_global_mean)
        self.probe_steps = int(probe_steps)
        self.probe_seed = int(probe_seed)
        self.probe_lr = float(probe_lr)
        self.probe_batch_size = int(probe_batch_size)
        self.dormant_tau = float(dormant_tau)
        self.srank_delta = float(srank_delta)
        self.feature_rank_eps = float(feature_rank_eps)
        self.curvature_iters = int(curvature_iters)
        #: Values stateful metrics keep between evaluations (``MetricContext.state``).
        self.state: dict[str, Any] = state if state is not None else {}
        self.options = dict(options or {})
        #: Why some values are NaN in the last ``compute`` call (log once; empty when none).
        self.nan_reasons: set[str] = set()

    def compute_tensors(
        self,
        q_net: nn.Module,
        obs: Tensor,
        taken_actions: Tensor | None = None,
        init_params: Iterable[Tensor] | None = None,
        td_batch: TDBatch | None = None,
    ) -> dict[str, Tensor]:
        """Run the selected metrics and return device tensors (no host transfer).

        The network is put in eval mode for the pass and every submodule's mode is restored; the
        global torch RNG streams are forked, so they are unchanged afterwards. Pre-activations are
        recorded only when a selected metric was registered with ``preactivations=True``.
        """
        self._missing_td_batch = self.needs_td_batch and td_batch is None
        try:
            device = next(q_net.parameters()).device
        except StopIteration:
            device = obs.device
        obs = obs.to(device)
        modes = [(m, m.training) for m in q_net.modules()]
        fork_devices = (
            [device.index if device.index is not None else torch.cuda.current_device()]
            if device.type == "cuda"
            else []
        )
        results: dict[str, Tensor] = {}
        try:
            q_net.eval()
            with torch.random.fork_rng(devices=fork_devices), torch.no_grad():
                fp = forward_pass(q_net, obs, preactivations=self.preactivations)
                head = last_linear(q_net)
                named = list(q_net.named_parameters())
                ctx = MetricContext(
                    q_net=q_net,
                    obs=obs,
                    activations=fp.activations,
                    preactivations=fp.preactivations,
                    features=fp.features,
                    q_values=fp.q_values,
                    taken_actions=None
                    if taken_actions is None
                    else taken_actions.to(device).reshape(-1).long(),
                    weight=head.weight.detach(),
                    bias=None if head.bias is None else head.bias.detach(),
                    num_classes=int(head.weight.shape[0]),
                    n_min=self.n_min,
                    nc_global_mean=self.nc_global_mean,
                    params=[p.detach() for _, p in named],
                    init_params=None if init_params is None else list(init_params),
                    param_names=[n for n, _ in named],
                    probe_steps=self.probe_steps,
                    probe_seed=self.probe_seed,
                    probe_lr=self.probe_lr,
                    probe_batch_size=self.probe_batch_size,
                    dormant_tau=self.dormant_tau,
                    srank_delta=self.srank_delta,
                    feature_rank_eps=self.feature_rank_eps,
                    curvature_iters=self.curvature_iters,
                    td_batch=None if td_batch is None else _on_device(td_batch, device),
                    state=self.state,
                    options=self.options,
                    metric_names=tuple(self.names),
                )
                for name in self.names:
                    results.update(METRICS.get(name)(ctx))
        finally:
            for m, mode in modes:
                m.training = mode
        return results

    def compute(
        self,
        q_net: nn.Module,
        obs: Tensor,
        taken_actions: Tensor | None = None,
        init_params: Iterable[Tensor] | None = None,
        td_batch: TDBatch | None = None,
    ) -> dict[str, float]:
        """Run the selected metrics and return python floats after ONE device-to-host transfer.

        Args:
            q_net: an SB3 ``QNetwork``-like module (see :func:`forward_with_activations`).
            obs: ``(N, ...)`` probe observations (moved to the network's device).
            taken_actions: ``(N,)`` or ``(N, 1)`` replay actions for the ``taken`` labeling, or None.
            init_params: initial parameters in ``q_net.parameters()`` order, or None.
            td_batch: a replay minibatch with TD targets, for the metrics that need one
                (:attr:`needs_td_batch`; they give NaN without it).

        Returns:
            Metric key → float. 1-D results become ``<key>/<i>``. ``nan_reasons`` is refreshed.
        """
        results = self.compute_tensors(q_net, obs, taken_actions, init_params, td_batch)
        keys: list[str] = []
        parts: list[Tensor] = []
        for key, value in results.items():
            flat = value.detach().reshape(-1).to(torch.float64)
            if value.dim() == 0:
                keys.append(key)
            else:
                keys.extend(f"{key}/{i}" for i in range(flat.shape[0]))
            parts.append(flat)
        host = torch.cat(parts).cpu().tolist() if parts else []  # the single transfer
        values = dict(zip(keys, host, strict=True))
        self.nan_reasons = self._reasons(values)
        return values

    def _reasons(self, values: dict[str, float]) -> set[str]:
        reasons: set[str] = set()
        for labeling in ("greedy", "taken"):
            c_eff = values.get(f"collapse/c_eff_{labeling}")
            if c_eff is None:
                continue
            if c_eff < 2:
                reasons.add(
                    f"collapse ({labeling} actions): C_eff={int(c_eff)} < 2 action classes with "
                    f">= n_min={self.n_min} samples; NC metrics are NaN"
                )
            elif math.isnan(values.get(f"collapse/nc1_{labeling}", 0.0)):
                reasons.add(
                    f"collapse ({labeling} actions): between-class scatter is zero (all class means "
                    "equal); NC1, NC1 quotient, NC2/NC3 of the means and NC4 are NaN"
                )
        for key in ("plasticity/probe_ratio",):
            if key in values and math.isnan(values[key]):
                reasons.add("probe: the fresh network fits the random targets exactly; probe_ratio is NaN")
        if self._missing_td_batch:
            names = ", ".join(n for n in self.names if METRICS.needs_td_batch(n))
            reasons.add(f"{names}: no TD batch (replay minibatch with TD targets) was given; values are NaN")
        return reasons


def _on_device(batch: TDBatch, device: torch.device) -> TDBatch:
    """``batch`` with its tensors on ``device`` (actions int64, flattened; targets flattened)."""
    return TDBatch(
        obs=batch.obs.to(device),
        actions=batch.actions.to(device).reshape(-1).long(),
        targets=batch.targets.to(device).reshape(-1),
    )
