"""A metric in one file (docs/metrics.md): the action gap."""

from __future__ import annotations

import torch
from torch import Tensor

from rlplast.metrics.registry import METRICS, MetricContext


@METRICS.register("plastlab_q_gap")
def q_gap(ctx: MetricContext) -> dict[str, Tensor]:
    """``plasticity/plastlab_q_gap``: mean over states of ``Q_(1) − Q_(2)``."""
    top2 = ctx.q_values.to(torch.float64).topk(2, dim=1).values
    return {"plasticity/plastlab_q_gap": (top2[:, 0] - top2[:, 1]).mean()}
