"""The progress bar: steps, steps/s, the latest mean episode return and the task."""

from __future__ import annotations

import sys
from typing import Any

from rlplast.callbacks.base import RunCallback


class Progress(RunCallback):
    """A tqdm bar on stderr (only when stderr is a terminal), moved at every logging row.

    The bar's total is the run's budget; the last iteration may run past it (training stops at the
    end of a collect-and-train iteration, see ``train.total_steps``), so the bar stops at its total.
    A resumed run's bar starts at the step it resumes from.

    Args:
        total_steps: the run's budget (``train.total_steps``).
    """

    def __init__(self, total_steps: int) -> None:
        super().__init__()
        self.total = total_steps
        self.bar: Any = None

    def _on_training_start(self) -> None:
        if not sys.stderr.isatty():
            return
        from tqdm import tqdm

        start = min(self.model.num_timesteps, self.total)
        self.bar = tqdm(total=self.total, initial=start, unit="step", dynamic_ncols=True, smoothing=0.1)

    def on_row(self, step: int, previous_step: int, row: dict[str, Any]) -> None:
        """Move the bar to ``step`` (at most its total) and show the row's mean return and task."""
        if self.bar is None:
            return
        self.bar.update(min(step, self.total) - self.bar.n)
        ret = row["rollout/ep_return_mean"]
        self.bar.set_postfix(ret="-" if ret is None else f"{ret:.1f}", task=row["shift/task_id"])

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
