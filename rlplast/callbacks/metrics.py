"""The training callback: episodes, task switches, logging rows, metrics and the progress bar.

One callback does all per-step bookkeeping so the step path stays short: it reads ``infos`` once,
and everything heavier happens only when the step counter crosses a logging boundary.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from rlplast.io import append_line
from rlplast.runlog import RunLogger

if TYPE_CHECKING:
    from rlplast.agents.dqn import PlasticDQN
    from rlplast.config import MetricsConfig


class MetricsProbe:
    """Draws probe states from the replay buffer and runs the metric suite on them.

    It uses its own NumPy generator, so drawing probe states never touches the global NumPy RNG
    that drives exploration and replay sampling: training is identical with and without metrics.
    Probe plasticity (hundreds of gradient steps) runs only every ``probe_every_steps``; the other
    selected metrics run every ``every_steps``.

    Why some values are NaN (e.g. fewer than two action classes) is noted once per run: kept in
    :attr:`reported` (and in ``summary.json`` as ``notes``) and, with ``echo``, printed to stderr.
    """

    def __init__(self, cfg: MetricsConfig, seed: int, echo: bool = True) -> None:
        from rlplast.metrics import MetricSuite

        # The probe's seed must differ from the training seed: with the same seed its "fresh" target
        # network would be the agent's own initialisation (same init order, same draws).
        probe_seed = int(np.random.SeedSequence([seed, 0x9B0BE]).generate_state(1)[0])
        options: dict[str, Any] = dict(
            n_min=cfg.n_min,
            nc_global_mean=cfg.nc_global_mean,
            probe_steps=cfg.probe_steps,
            probe_seed=probe_seed,
        )
        self.suite = MetricSuite(names=cfg.names, **options)
        cheap = [name for name in self.suite.names if name != "probe"]
        self.cheap_suite = (
            self.suite
            if cheap == self.suite.names
            else MetricSuite(names=cheap, **options)
            if cheap
            else None
        )
        self.probe_every = cfg.probe_every_steps
        self.probe_size = cfg.probe_size
        self.rng = np.random.default_rng([seed, 0x5EED])
        self.init_params: list[torch.Tensor] | None = None
        self.reported: set[str] = set()
        self.echo = echo

    def snapshot_init(self, model: Any) -> None:
        self.init_params = [p.detach().clone() for p in model.q_net.parameters()]

    def compute(self, model: Any, with_probe: bool) -> dict[str, float]:
        """Metrics on fresh probe states; ``with_probe`` adds probe plasticity (if selected)."""
        suite = self.suite if with_probe else self.cheap_suite
        if suite is None:
            return {}
        buffer = model.replay_buffer
        size = buffer.size()
        if size < 2:
            return {}
        n = min(self.probe_size, size)
        idx = self.rng.choice(size, size=n, replace=False)
        obs = buffer.to_torch(buffer.observations[idx, 0])
        actions = buffer.to_torch(buffer.actions[idx, 0].reshape(-1)).long()
        values = suite.compute(model.q_net, obs, taken_actions=actions, init_params=self.init_params)
        for reason in suite.nan_reasons:
            if reason not in self.reported:
                self.reported.add(reason)
                if self.echo:
                    print(f"rlplast: metrics: {reason} (reported once)", file=sys.stderr)
        return values


class TrainingCallback(BaseCallback):
    """Per-step bookkeeping for a PlasticDQN run.

    Args:
        run_logger: where rows go (metrics.csv, TensorBoard).
        run_dir: the run directory (``episodes.csv`` is written there).
        total_steps: the training budget (for the progress bar).
        log_every_steps: env steps between logging rows.
        metrics: the metrics probe, or ``None`` for no metrics.
        metrics_every_steps: env steps between metric computations.
        progress: show a tqdm bar (only when stderr is a terminal).
        checkpoint: called with the step to write a checkpoint (``None``: no checkpoints).
        checkpoint_every_steps: env steps between periodic checkpoints (0: only on stop requests).
        stop_on_nonfinite: checkpoint and stop when the loss, gradient norm or a parameter is not finite.
    """

    model: PlasticDQN

    def __init__(
        self,
        run_logger: RunLogger,
        run_dir: str | Path,
        total_steps: int,
        log_every_steps: int,
        metrics: MetricsProbe | None = None,
        metrics_every_steps: int = 5000,
        progress: bool = True,
        checkpoint: Callable[[int], None] | None = None,
        checkpoint_every_steps: int = 0,
        stop_on_nonfinite: bool = True,
    ) -> None:
        super().__init__()
        self.run_logger = run_logger
        self.episodes_path = Path(run_dir) / "episodes.csv"
        self.total_steps = total_steps
        self.log_every = log_every_steps
        self.metrics = metrics
        self.metrics_every = metrics_every_steps
        self.show_progress = progress and sys.stderr.isatty()
        self.task_id: int | None = None
        self.task_returns: dict[int, list[float]] = {}
        self.all_returns: list[float] = []
        self.pending_episodes: list[str] = []
        self.window: deque[tuple[float, int]] = deque(maxlen=100)
        self.last_log_step = 0
        self.start_time = 0.0
        self.last_log_time = 0.0
        self.elapsed_before = 0.0  # wall time of earlier sessions of a resumed run
        self.bar: Any = None
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every_steps
        self.last_checkpoint_step = 0
        self.last_n_updates = 0.0
        self.stop_on_nonfinite = stop_on_nonfinite
        #: Why training should stop at the next iteration end (a signal, non-finite values).
        self.stop_reason: str | None = None
        self.resumed = False

    # ------------------------------------------------------------------ resume
    #: Attributes that make up the callback's part of a checkpoint.
    STATE = (
        "task_id",
        "task_returns",
        "all_returns",
        "window",
        "last_log_step",
        "elapsed_before",
        "last_checkpoint_step",
        "last_n_updates",
    )

    def state_dict(self) -> dict[str, Any]:
        state = {name: getattr(self, name) for name in self.STATE}
        state["elapsed_before"] = self.elapsed()
        if self.metrics is not None:
            state["metrics_rng"] = self.metrics.rng.bit_generator.state
            state["metrics_init_params"] = self.metrics.init_params
            state["metrics_notes"] = sorted(self.metrics.reported)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self.STATE:
            setattr(self, name, state[name])
        if self.metrics is not None:
            self.metrics.rng.bit_generator.state = state["metrics_rng"]
            self.metrics.init_params = state["metrics_init_params"]
            self.metrics.reported = set(state.get("metrics_notes", ()))  # older checkpoints: none
        self.resumed = True

    def elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self.start_time if self.start_time else 0.0)

    # ------------------------------------------------------------------ SB3 hooks
    def _on_training_start(self) -> None:
        self.start_time = self.last_log_time = time.perf_counter()
        self.model.iteration_end_hook = self.on_iteration_end
        if not self.resumed:
            self.window = deque(maxlen=self.model._stats_window_size)
            append_line(self.episodes_path, "step,episode_return,episode_length,task_id")
            if self.metrics is not None:
                self.metrics.snapshot_init(self.model)
        if self.show_progress:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total_steps, unit="step", dynamic_ncols=True, smoothing=0.1)

    def _on_step(self) -> bool:
        step = self.num_timesteps
        for info in self.locals["infos"]:
            task = info.get("task_id")
            if task is not None and task != self.task_id:
                if self.task_id is not None:
                    self.model.notify_task_switch(int(task))
                self.task_id = int(task)
            episode = info.get("episode")
            if episode is not None:
                self._record_episode(step, float(episode["r"]), int(episode["l"]))
        if step // self.log_every > self.last_log_step // self.log_every:
            self._log(step)
        return True

    def _on_training_end(self) -> None:
        self.model.iteration_end_hook = None
        if self.stop_reason is None and self.num_timesteps != self.last_log_step:
            self._log(self.num_timesteps)
        if self.bar is not None:
            self.bar.close()

    def on_iteration_end(self) -> bool:
        """After each collect-and-train iteration: checkpoint when due; ``False`` stops training."""
        step = self.num_timesteps
        due = (
            self.checkpoint_every
            and step // self.checkpoint_every > self.last_checkpoint_step // self.checkpoint_every
        )
        if self.checkpoint is not None and (due or self.stop_reason is not None):
            self.flush_episodes()
            self.last_checkpoint_step = step
            self.checkpoint(step)
        return self.stop_reason is None

    def request_stop(self, reason: str) -> None:
        """Stop at the next iteration end, after a checkpoint (used by signal handlers)."""
        if self.stop_reason is None:
            self.stop_reason = reason

    # ------------------------------------------------------------------ bookkeeping
    def _record_episode(self, step: int, ret: float, length: int) -> None:
        task = self.task_id if self.task_id is not None else 0
        self.window.append((ret, length))
        self.all_returns.append(ret)
        self.task_returns.setdefault(task, []).append(ret)
        self.pending_episodes.append(f"{step},{ret!r},{length},{task}")

    def mean_window_return(self) -> float:
        return float(np.mean([r for r, _ in self.window])) if self.window else math.nan

    def flush_episodes(self) -> None:
        if self.pending_episodes:
            append_line(self.episodes_path, "\n".join(self.pending_episodes))
            self.pending_episodes = []

    def _log(self, step: int) -> None:
        now = time.perf_counter()
        self.flush_episodes()
        row: dict[str, Any] = {
            "time_s": self.elapsed(),
            "steps_per_s": (step - self.last_log_step) / max(now - self.last_log_time, 1e-9),
            "shift/task_id": self.task_id if self.task_id is not None else 0,
            "rollout/episodes": len(self.all_returns),
            "rollout/ep_return_mean": self.mean_window_return(),
            "rollout/ep_len_mean": float(np.mean([n for _, n in self.window])) if self.window else math.nan,
            "rollout/exploration_rate": float(self.model.exploration_rate),
        }
        row.update(self.model.pop_train_stats())
        self._check_finite(step, row)
        if self.metrics is not None and step // self.metrics_every > self.last_log_step // self.metrics_every:
            every = self.metrics.probe_every
            row.update(
                self.metrics.compute(self.model, with_probe=step // every > self.last_log_step // every)
            )
        self.run_logger.write(step, row)
        if self.bar is not None:
            self.bar.update(step - self.last_log_step)
            self.bar.set_postfix(ret=f"{row['rollout/ep_return_mean']:.1f}", task=row["shift/task_id"])
        self.last_log_step = step
        self.last_log_time = time.perf_counter()

    def _check_finite(self, step: int, row: dict[str, Any]) -> None:
        """Flag a non-finite loss, gradient norm or parameter (one device sync per logging step)."""
        updated = row["train/n_updates"] > self.last_n_updates  # else loss and norm are NaN by design
        self.last_n_updates = row["train/n_updates"]
        bad = {k: row[k] for k in ("train/loss", "train/grad_norm") if updated and not math.isfinite(row[k])}
        finite = torch.stack([torch.isfinite(p).all() for p in self.model.q_net.parameters()]).all()
        if not bool(finite):
            bad["parameters"] = "non-finite"
        if not bad:
            return
        what = ", ".join(f"{k}={v}" for k, v in bad.items())
        print(f"rlplast: non-finite values at step {step}: {what}", file=sys.stderr)
        if self.stop_on_nonfinite:
            self.request_stop(f"non-finite values at step {step}: {what}")

    def returns_per_task(self) -> dict[str, float]:
        return {str(k): float(np.mean(v)) for k, v in sorted(self.task_returns.items())}
