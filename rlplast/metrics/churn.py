"""Churn: how much the Q-function changed on a fixed reference set since the previous evaluation.

C-CHAIN (Tang, Obando-Ceron, Castro, Courville, Berseth, "Mitigating Plasticity Loss in Continual
Reinforcement Learning by Reducing Churn", ICML 2025; and Tang & Berseth, NeurIPS 2024) measures
churn as the change of a network's outputs on reference states that were not in the update. With
``Q`` the current Q-values and ``Q'`` those of the previous evaluation on the same ``N`` reference
states ``s̄`` and ``C`` actions:

* greedy-action churn ``(1/N) Σ_s̄ 1[argmax_a Q(s̄, a) ≠ argmax_a Q'(s̄, a)]`` — 0 for a network
  that did not change, 1 when every greedy action flipped (their ``greedy_a_diff``);
* value churn ``(1/(N C)) Σ_s̄ Σ_a |Q(s̄, a) − Q'(s̄, a)|`` (their ``q_diff_abs``);
* max-Q drift ``(1/N) Σ_s̄ (max_a Q(s̄, a) − max_a Q'(s̄, a))``, signed (their ``maxq_diff``).

C-CHAIN's code compares the network with its copy a few *updates* earlier on a fresh replay batch.
Here the reference set is the probe states of the **first** evaluation, kept fixed for the whole run,
and the comparison spans one metric interval (``metrics.every_steps``): churn accumulated over many
updates, on states whose distribution no longer follows the replay buffer. Ties in ``argmax`` go
to the first maximal action (``torch.argmax``), the same rule as the greedy policy.

State (reference observations, previous Q-values) lives in ``MetricContext.state["churn"]``: the
suite keeps it between evaluations and training checkpoints it, so a resumed run continues exactly.
The first evaluation has no previous Q-values: its churn values are NaN.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlplast.metrics.activations import forward_pass
from rlplast.metrics.registry import METRICS, MetricContext

__all__ = ["churn_values"]

_DT = torch.float64


def churn_values(q_prev: Tensor, q_now: Tensor) -> dict[str, Tensor]:
    """Churn between two ``(N, C)`` Q-value tables of the same states (float64, on their device).

    Returns:
        ``{"action": greedy-action change rate, "q_abs": mean |ΔQ| over states and actions,
        "max_q": mean signed change of max_a Q}``; NaN for an empty table.
    """
    prev, now = q_prev.to(_DT), q_now.to(_DT)
    changed = (prev.argmax(dim=1) != now.argmax(dim=1)).to(_DT)
    return {
        "action": changed.mean(),
        "q_abs": (now - prev).abs().mean(),
        "max_q": (now.amax(dim=1) - prev.amax(dim=1)).mean(),
    }


@METRICS.register("churn")
def churn(ctx: MetricContext) -> dict[str, Tensor]:
    """Greedy-action churn, value churn and max-Q drift on the first evaluation's probe states.

    Keys: ``plasticity/churn_action``, ``plasticity/churn_q_abs``, ``plasticity/churn_max_q``
    (NaN at the first evaluation). Costs one forward pass on the reference states (none at the
    first evaluation, whose own pass is reused).
    """
    state = ctx.state.get("churn")
    if state is None or state["obs"].shape[1:] != ctx.obs.shape[1:]:
        # The reference set is this evaluation's probe states, fixed from now on.
        state = ctx.state["churn"] = {"obs": ctx.obs.detach().clone()}
        q_now = ctx.q_values
    else:
        q_now = forward_pass(ctx.q_net, state["obs"]).q_values
    q_prev = state.get("q")
    state["q"] = q_now.detach().clone()
    if q_prev is None:
        nan = torch.full((), float("nan"), dtype=_DT, device=q_now.device)
        values = {"action": nan, "q_abs": nan, "max_q": nan}
    else:
        values = churn_values(q_prev, q_now)
    return {f"plasticity/churn_{key}": value for key, value in values.items()}
