"""The TD loss of a Q-network on a :class:`~rlplast.metrics.registry.TDBatch` (for gradient metrics).

Not a metric itself: ``grama`` and ``curvature`` (and metrics of your own) differentiate it.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from rlplast.metrics.registry import TDBatch

__all__ = ["q_values", "td_loss"]


def q_values(q_net: nn.Module, obs: Tensor) -> Tensor:
    """``(B, C)`` Q-values: ``q_net(obs)`` (SB3's ``QNetwork`` preprocesses stored observations
    itself; any other module gets them as float)."""
    if callable(getattr(q_net, "extract_features", None)):
        return q_net(obs)
    return q_net(obs.float())


def td_loss(q_net: nn.Module, batch: TDBatch) -> Tensor:
    """``L(θ) = mean_i huber(Q_θ(s_i, a_i) − y_i)`` with fixed targets ``y`` (SB3's ``smooth_l1_loss``).

    The loss PlasticDQN minimises (without interventions' terms), differentiable w.r.t. ``q_net``'s
    parameters under grad mode.
    """
    q = q_values(q_net, batch.obs)
    taken = q.gather(1, batch.actions.reshape(-1, 1).long())
    return F.smooth_l1_loss(taken, batch.targets.reshape(-1, 1).to(q.dtype))
