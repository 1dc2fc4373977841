"""One place that writes a run's scalars: ``metrics.csv`` rows and TensorBoard points.

``metrics.csv`` has one row per logging step. Its first columns are fixed (:data:`BASE_COLUMNS`);
the columns that follow are the other logged keys (collapse/…, plasticity/…, intervention keys)
in sorted order. A key seen for the first time adds a column: the file is rewritten atomically with
the wider header and earlier rows get empty cells. A value of ``None`` (a quantity not computed at
that step) is an empty cell; NaN (computed, but undefined) is ``nan``.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from rlplast.io import append_line, atomic_write_text, truncate_csv_rows

#: Columns every metrics.csv starts with. ``time_s`` and ``steps_per_s`` are wall-clock columns:
#: the only ones that differ between two runs with the same config and seed on CPU.
BASE_COLUMNS = [
    "step",
    "time_s",
    "steps_per_s",
    "shift/task_id",
    "rollout/episodes",
    "rollout/ep_return_mean",
    "rollout/ep_len_mean",
    "rollout/exploration_rate",
    "train/loss",
    "train/grad_norm",
    "train/n_updates",
]
WALL_CLOCK_COLUMNS = ("time_s", "steps_per_s")


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value)
    return str(value)


def _line(values: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(values)
    return buf.getvalue()


class RunLogger:
    """Writes rows to ``metrics.csv`` and (optionally) TensorBoard.

    Args:
        run_dir: the run directory.
        tensorboard: also write TensorBoard event files under ``run_dir/tb``.
        resume_step: continue an existing run after its row of this step (the last logging row
            of the checkpoint the run resumes from): later rows are dropped from metrics.csv, and
            TensorBoard is told to purge its points after it, so no row is duplicated or missing.
    """

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, resume_step: int | None = None) -> None:
        self.path = Path(run_dir) / "metrics.csv"
        self.columns = list(BASE_COLUMNS)
        self._writer = None
        if resume_step is None:
            atomic_write_text(self.path, _line(self.columns) + "\n")
        else:
            truncate_csv_rows(self.path, resume_step)
            with open(self.path, newline="") as fh:
                self.columns = next(csv.reader(fh))
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            self._writer = SummaryWriter(log_dir=str(Path(run_dir) / "tb"), purge_step=purge)

    def write(self, step: int, row: dict[str, Any]) -> None:
        """Write one logging step. ``row`` maps column names to numbers (missing → empty cell)."""
        row = {"step": step, **row}
        new = sorted(k for k in row if k not in self.columns)
        if new:
            self._widen(new)
        append_line(self.path, _line([_fmt(row.get(c)) for c in self.columns]))
        if self._writer is not None:
            for key, value in row.items():
                if key in ("step", *WALL_CLOCK_COLUMNS) or value is None:
                    continue
                self._writer.add_scalar(key, float(value), global_step=step)
            self._writer.add_scalar("time/steps_per_s", float(row.get("steps_per_s") or 0.0), step)

    def _widen(self, new: list[str]) -> None:
        extra = sorted(set(self.columns[len(BASE_COLUMNS) :]) | set(new))
        old_columns = self.columns
        self.columns = BASE_COLUMNS + extra
        with open(self.path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        lines = [_line(self.columns)]
        lines += [
            _line([r.get(c, "") or "" for c in self.columns]) for r in rows if set(r) <= set(old_columns)
        ]
        atomic_write_text(self.path, "\n".join(lines) + "\n")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()


def read_metrics_csv(path: str | Path) -> list[dict[str, str]]:
    """Read a run's metrics.csv as a list of rows (strings; empty string = not computed)."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
