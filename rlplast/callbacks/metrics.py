"""Collapse and plasticity metrics on probe states from the replay buffer, every ``metrics.every_steps``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from rlplast.callbacks.base import RunCallback

if TYPE_CHECKING:
    from rlplast.agents import PlasticDQN
    from rlplast.config import MetricsConfig
    from rlplast.metrics import TDBatch


class MetricsProbe:
    """Draws probe states from the replay buffer and runs the metric suite on them.

    It uses its own NumPy generator, so drawing probe states never touches the global NumPy RNG
    that drives exploration and replay sampling: training is identical with and without metrics.
    Probe plasticity (hundreds of gradient steps) runs only every ``probe_every_steps``; the other
    selected metrics run every ``every_steps``.

    Why some values are NaN (e.g. fewer than two action classes) is noted once per run: kept in
    :attr:`reported` (and in ``summary.json`` as ``notes``) and, with ``echo``, printed to stderr.

    Stateful metrics (``churn``) keep their values in :attr:`state`, one dict shared by both
    suites and saved in checkpoints. Metrics of the TD loss (``grama``, ``curvature``) get a replay
    minibatch of ``probe_size`` transitions with the agent's TD targets
    (:meth:`~rlplast.agents.PlasticDQN.replay_sample`, :meth:`~rlplast.agents.PlasticDQN.td_target`),
    drawn with a seed from this probe's generator, only when such a metric is selected.

    Args:
        cfg: the ``metrics`` config section.
        seed: the run's seed (the probe's generators are derived from it).
        echo: print each NaN reason once to stderr.

    Raises:
        UserError: an unknown metric name.
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
        #: Values stateful metrics keep between evaluations (shared by both suites, checkpointed).
        self.state: dict[str, Any] = {}
        options["state"] = self.state
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

    def snapshot_init(self, model: PlasticDQN) -> None:
        """Keep the online network's parameters as θ₀ (for the distance from initialisation)."""
        self.init_params = [p.detach().clone() for p in model.q_net.parameters()]

    def compute(self, model: PlasticDQN, with_probe: bool) -> dict[str, float]:
        """Metrics on fresh probe states; ``with_probe`` adds probe plasticity (if selected)."""
        suite = self.suite if with_probe else self.cheap_suite
        if suite is None:
            return {}
        size = model.replay_size()
        if size < 2:
            return {}
        idx = self.rng.choice(size, size=min(self.probe_size, size), replace=False)
        obs, actions = model.replay_states(idx)
        # An agent without replay_sample/td_target (e.g. a user's model) gets none: NaN + a note.
        has_td = all(callable(getattr(model, name, None)) for name in ("replay_sample", "td_target"))
        td_batch = self.td_batch(model) if suite.needs_td_batch and has_td else None
        values = suite.compute(
            model.q_net, obs, taken_actions=actions, init_params=self.init_params, td_batch=td_batch
        )
        for reason in suite.nan_reasons:
            if reason not in self.reported:
                self.reported.add(reason)
                if self.echo:
                    print(f"rlplast: metrics: {reason} (reported once)", file=sys.stderr)
        return values

    def td_batch(self, model: PlasticDQN) -> TDBatch:
        """``probe_size`` replay transitions with their TD targets (seed drawn from :attr:`rng`)."""
        from rlplast.metrics import TDBatch

        data = model.replay_sample(self.probe_size, seed=int(self.rng.integers(2**32)))
        return TDBatch(
            obs=data.observations,  # type: ignore[arg-type]
            actions=data.actions.reshape(-1).long(),
            targets=model.td_target(data).reshape(-1),
        )

    def notes(self) -> list[str]:
        """Why some values were NaN, once each (``summary.json``'s ``notes``)."""
        return [f"metrics: {n}" for n in sorted(self.reported)]


class Metrics(RunCallback):
    """Adds the metric columns to the logging rows that cross a multiple of ``every_steps``.

    θ₀ is snapshot when a new run starts. The probe's generator, θ₀, the stateful metrics' state
    (``churn``'s reference states and previous Q-values) and the NaN notes are part of checkpoints,
    so a resumed run draws the same probe states and continues the same comparisons.

    Args:
        probe: draws the probe states and runs the metric suite.
        every_steps: env steps between metric computations (``metrics.every_steps``, a multiple of
            the logging interval).
    """

    model: PlasticDQN

    def __init__(self, probe: MetricsProbe, every_steps: int) -> None:
        super().__init__()
        self.probe = probe
        self.every = every_steps
        self.resumed = False

    def _on_training_start(self) -> None:
        if not self.resumed:
            self.probe.snapshot_init(self.model)

    def on_row(self, step: int, previous_step: int, row: dict[str, Any]) -> None:
        """Add the metric columns when the rows since ``previous_step`` crossed a multiple of ``every_steps``."""
        if step // self.every > previous_step // self.every:
            every = self.probe.probe_every
            with_probe = step // every > previous_step // every
            row.update(self.probe.compute(self.model, with_probe=with_probe))

    def state_dict(self) -> dict[str, Any]:
        return {
            "metrics_rng": self.probe.rng.bit_generator.state,
            "metrics_init_params": self.probe.init_params,
            "metrics_notes": sorted(self.probe.reported),
            # Copies of the dicts (metrics replace their tensors, never change them in place).
            "metrics_state": {k: dict(v) if isinstance(v, dict) else v for k, v in self.probe.state.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.probe.rng.bit_generator.state = state["metrics_rng"]
        self.probe.init_params = state["metrics_init_params"]
        self.probe.reported = set(state.get("metrics_notes", ()))  # older checkpoints: none
        # The suites hold this very dict: refill it. Older checkpoints have none (churn restarts).
        self.probe.state.clear()
        self.probe.state.update(state.get("metrics_state", {}))
        self.resumed = True
