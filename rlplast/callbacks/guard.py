"""Non-finite values: a NaN or infinite loss, gradient norm or parameter is reported, and by default stops the run."""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any

import torch

from rlplast.callbacks.base import RunCallback, StopRequest

if TYPE_CHECKING:
    from rlplast.agents import PlasticDQN


class NonFiniteGuard(RunCallback):
    """Checks each logging row's loss and gradient norm and the online network's parameters.

    One device synchronisation per logging row. A problem is printed to stderr with its step and
    the offending quantities; with a ``stop`` request the run then checkpoints and stops at the
    end of the iteration (``train.on_nonfinite: stop``), without one it carries on.

    Args:
        stop: the run's stop request, or ``None`` to report only.
    """

    model: PlasticDQN

    def __init__(self, stop: StopRequest | None) -> None:
        super().__init__()
        self.stop = stop

    def on_row(self, step: int, previous_step: int, row: dict[str, Any]) -> None:
        """Check the row of ``step`` and the parameters; report (and request a stop) if not finite."""
        # An empty (None) loss or norm: no update since the previous row, nothing to check.
        bad = {
            k: row[k]
            for k in ("train/loss", "train/grad_norm")
            if row.get(k) is not None and not math.isfinite(row[k])
        }
        finite = torch.stack([torch.isfinite(p).all() for p in self.model.q_net.parameters()]).all()
        if not bool(finite):
            bad["parameters"] = "non-finite"
        if not bad:
            return
        what = ", ".join(f"{k}={v}" for k, v in bad.items())
        print(f"rlplast: non-finite values at step {step}: {what}", file=sys.stderr)
        if self.stop is not None:
            self.stop.request(f"non-finite values at step {step}: {what}")
