"""PlasticDQN: stable-baselines3's DQN with seams for plasticity interventions.

:meth:`PlasticDQN.train` is stable-baselines3 2.9's ``DQN.train`` (the version pinned in
``pyproject.toml``) with two seams:

1. the online network's single forward pass is split at the last linear layer, so the
   penultimate features and the Q-values of the batch are both available; each intervention's
   :meth:`~rlplast.interventions.base.Intervention.loss` may add a term to the TD loss;
2. the gradient norm that ``clip_grad_norm_`` returns is kept (:attr:`PlasticDQN.last_grad_norm`).

The TD targets come from :meth:`PlasticDQN.td_target`: SB3's ``r + (1 − d) γⁿ max_a' Q_target(s', a')``,
or with ``double_dqn=True`` Double DQN's (van Hasselt, Guez, Silver 2016)
``r + (1 − d) γⁿ Q_target(s', argmax_a' Q_online(s', a'))`` — the online network selects the next
action, the target network evaluates it.

With no interventions (and ``double_dqn=False``) the arithmetic is exactly SB3's: the same seed
gives bitwise-identical parameters after any number of updates. Interventions are called from
three places: ``setup`` once the networks exist, ``loss`` / ``after_update`` inside
:meth:`PlasticDQN.train`, and ``on_task_switch`` through :meth:`PlasticDQN.notify_task_switch`.

Code outside ``rlplast.agents`` reads the agent through public accessors only:
:attr:`~PlasticDQN.n_updates`, :attr:`~PlasticDQN.stats_window_size`,
:meth:`~PlasticDQN.replay_size`, :meth:`~PlasticDQN.replay_states`,
:meth:`~PlasticDQN.replay_sample`, :meth:`~PlasticDQN.td_target` and
:meth:`~PlasticDQN.pop_train_stats`; interventions that start a fresh agent use
:meth:`~PlasticDQN.clear_replay` and :meth:`~PlasticDQN.restart_schedules`.

**Callbacks.** :meth:`PlasticDQN.learn` is SB3's off-policy loop plus one event: after every
collect-and-train iteration (where no update is half done, so a checkpoint captures the whole
training state) it calls ``on_iteration_end()`` on every callback that defines it — the callback
passed to ``learn`` and the callbacks nested in it through SB3's ``CallbackList``. Returning
``False`` stops training after that iteration (every such callback is still called).

The speed layer (lean vectorized env and replay buffers, cached training mode, direct greedy
``predict``) is :class:`~rlplast.agents.speed.LeanDQNMixin`, which changes no result. The policies
take the network options of :mod:`rlplast.agents.layers` (``policy_kwargs={"layer_norm": True}``,
``activation_fn=CReLU``); an optimizer with a ``log_values()`` method (TRAC,
:mod:`rlplast.agents.trac`) adds its values to :meth:`~PlasticDQN.pop_train_stats`.

Example:
    >>> from rlplast.agents import PlasticDQN
    >>> model = PlasticDQN("MlpPolicy", "CartPole-v1", seed=0, learning_starts=100)
    >>> model = model.learn(500)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import MaybeCallback, ReplayBufferSamples, TrainFreq
from torch.nn import functional as F

from rlplast.agents.layers import CnnPolicy, MlpPolicy, MultiInputPolicy
from rlplast.agents.speed import DeviceMean, LeanDQNMixin
from rlplast.interventions.base import Intervention


def iteration_end_hooks(callback: BaseCallback) -> list[Callable[[], Any]]:
    """The ``on_iteration_end`` methods of ``callback`` and of the callbacks nested in it.

    Nesting is followed through SB3's ``CallbackList``, in list order (depth first).
    """
    hooks = []
    hook = getattr(callback, "on_iteration_end", None)
    if callable(hook):
        hooks.append(hook)
    if isinstance(callback, CallbackList):
        for child in callback.callbacks:
            hooks.extend(iteration_end_hooks(child))
    return hooks


def td_targets(
    q_net: th.nn.Module, q_net_target: th.nn.Module, replay_data: Any, gamma: float, double_dqn: bool
) -> th.Tensor:
    """The ``(B, 1)`` DQN / Double DQN TD targets of a replay batch (no gradient).

    ``y = r + (1 − d) · γⁿ · Q_target(s', a*)`` with ``a* = argmax_a' Q_target(s', a')`` or, with
    ``double_dqn``, ``a* = argmax_a' Q_online(s', a')``; ``γⁿ`` is the batch's ``discounts`` when
    it has them (n-step replay), else ``gamma``. The one definition :meth:`PlasticDQN.td_target`
    and a population member's ``td_target`` both use.
    """
    # For n-step replay, discount factor is gamma**n_steps (when no early termination)
    discounts = replay_data.discounts if replay_data.discounts is not None else gamma
    with th.no_grad():
        next_q_values = q_net_target(replay_data.next_observations)
        if double_dqn:
            next_actions = q_net(replay_data.next_observations).argmax(dim=1, keepdim=True)
            next_q_values = th.gather(next_q_values, dim=1, index=next_actions)
        else:
            next_q_values, _ = next_q_values.max(dim=1)
            next_q_values = next_q_values.reshape(-1, 1)
        return replay_data.rewards + (1 - replay_data.dones) * discounts * next_q_values


class PlasticDQN(LeanDQNMixin, DQN):
    """A ``stable_baselines3.DQN`` whose update path accepts interventions.

    Args:
        *args: passed to :class:`stable_baselines3.DQN`.
        interventions: interventions whose hooks run inside training (default: none).
        double_dqn: Double DQN targets (see :meth:`td_target`); default False (SB3's targets).
        **kwargs: passed to :class:`stable_baselines3.DQN`.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }

    #: Env steps that SB3's progress-dependent schedules (exploration rate, learning rate) span.
    #: ``None`` (the default): the total of the current ``learn`` call, as in SB3. Set to keep a
    #: continued run on its original schedule: past this many steps the progress SB3 passes to the
    #: schedules is negative, and SB3's linear schedules (DQN's exploration rate) stay at their end.
    schedule_timesteps: int | None = None
    #: Env step from which SB3's progress-dependent schedules (exploration rate, learning rate)
    #: count: 0, as in SB3, until :meth:`restart_schedules` moves it to the step of a restart.
    schedule_start: int = 0

    def __init__(
        self,
        *args: Any,
        interventions: Sequence[Intervention] = (),
        double_dqn: bool = False,
        **kwargs: Any,
    ) -> None:
        self.interventions: list[Intervention] = list(interventions)
        self.double_dqn = bool(double_dqn)
        self.last_grad_norm: th.Tensor | float = float("nan")
        self._loss_stats = DeviceMean()
        self._grad_norm_stats = DeviceMean()
        super().__init__(*args, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        for intervention in self.interventions:
            intervention.setup(self)

    # ------------------------------------------------------------------ public accessors
    @property
    def n_updates(self) -> int:
        """Gradient updates so far (SB3's ``_n_updates``)."""
        return self._n_updates

    @property
    def stats_window_size(self) -> int:
        """How many recent episodes SB3's rollout statistics average over."""
        return self._stats_window_size

    def replay_size(self) -> int:
        """Transitions stored in the replay buffer per env (valid indices for :meth:`replay_states`)."""
        assert self.replay_buffer is not None, "the model has no replay buffer"
        return self.replay_buffer.size()

    def replay_states(
        self, indices: np.ndarray, env_indices: np.ndarray | int = 0, normalize: bool = False
    ) -> tuple[th.Tensor | dict[str, th.Tensor], th.Tensor]:
        """Stored observations and the actions taken in them, as tensors on the model's device.

        Args:
            indices: replay positions, each below :meth:`replay_size`.
            env_indices: the env of each position (or one env for all; see SB3's ``n_envs``).
            normalize: pass the observations through the training env's ``VecNormalize`` (if
                any), as the networks see them in training.

        Returns:
            ``(observations, actions)``: the observations (a dict of tensors for Dict spaces) and
            the taken actions as a 1-D ``long`` tensor.
        """
        buffer = self.replay_buffer
        assert buffer is not None, "the model has no replay buffer"
        stored = buffer.observations
        raw = (
            {k: v[indices, env_indices] for k, v in stored.items()}
            if isinstance(stored, dict)
            else stored[indices, env_indices]
        )
        vec_normalize = self.get_vec_normalize_env() if normalize else None
        if vec_normalize is not None:
            raw = vec_normalize.normalize_obs(raw)
        device = self.device
        obs: th.Tensor | dict[str, th.Tensor] = (
            {k: th.as_tensor(v, device=device) for k, v in raw.items()}
            if isinstance(raw, dict)
            else th.as_tensor(raw, device=device)
        )
        actions = th.as_tensor(buffer.actions[indices, env_indices].reshape(-1), device=device).long()
        return obs, actions

    def replay_sample(self, batch_size: int, seed: int) -> ReplayBufferSamples:
        """A replay minibatch drawn exactly as :meth:`train` draws one, from its own random stream.

        SB3's ``replay_buffer.sample`` (n-step returns and ``VecNormalize`` included) runs on the
        global NumPy generator seeded with ``seed``; the generator's state is restored afterwards,
        so training's own draws are unchanged.

        Args:
            batch_size: transitions to draw (with replacement, as SB3 does).
            seed: seed of the draw (0 to 2**32 - 1).
        """
        buffer = self.replay_buffer
        assert buffer is not None, "the model has no replay buffer"
        saved = np.random.get_state()
        try:
            np.random.seed(seed)
            return buffer.sample(batch_size, env=self._vec_normalize_env)
        finally:
            np.random.set_state(saved)

    def td_target(self, replay_data: ReplayBufferSamples) -> th.Tensor:
        """The ``(B, 1)`` TD targets of a replay batch (no gradient), as :meth:`train` computes them.

        ``y = r + (1 − d) · γⁿ · Q_target(s', a*)`` with ``a* = argmax_a' Q_target(s', a')`` (DQN, SB3)
        or, with ``double_dqn``, ``a* = argmax_a' Q_online(s', a')`` (Double DQN, van Hasselt et
        al. 2016). ``γⁿ`` is the n-step buffer's discount of each transition (``gamma`` for 1-step).
        """
        return td_targets(self.q_net, self.q_net_target, replay_data, self.gamma, self.double_dqn)

    def clear_replay(self) -> None:
        """Empty the replay buffer, as a fresh agent's: no transition stored so far is sampled again.

        The buffer keeps its capacity and arrays (SB3's ``reset``: write position 0, not full), so
        :meth:`replay_size` is 0 until new transitions are stored.
        """
        assert self.replay_buffer is not None, "the model has no replay buffer"
        self.replay_buffer.reset()

    def restart_schedules(self) -> None:
        """Restart, at the current env step, the schedules a fresh agent starts with.

        SB3's training progress is counted from :attr:`schedule_start`, set here to the current
        step: the exploration rate starts again from ``exploration_initial_eps`` and decays to
        ``exploration_final_eps`` over the same number of steps as at the start of the run
        (``exploration_fraction`` × the schedule's budget; a learning-rate schedule restarts
        likewise). ``learning_starts`` moves forward by the steps since the previous start, so the
        agent again acts uniformly at random and makes no update until it has collected
        ``learning_starts`` new transitions (from the next collect-and-train iteration on). The
        target network's update period keeps counting.
        """
        self.learning_starts += self.num_timesteps - self.schedule_start
        self.schedule_start = self.num_timesteps

    def _update_current_progress_remaining(self, num_timesteps: int, total_timesteps: int) -> None:
        # The schedules' progress counts from schedule_start (0 unless restarted: SB3's own).
        super()._update_current_progress_remaining(num_timesteps - self.schedule_start, total_timesteps)

    # ------------------------------------------------------------------ the training loop
    def learn(  # type: ignore[override]
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int | None = 4,
        tb_log_name: str = "DQN",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> PlasticDQN:
        """stable-baselines3 2.9's off-policy ``learn`` loop plus the ``on_iteration_end`` event
        (see the module docstring) and :attr:`schedule_timesteps`."""
        total_timesteps, callback = self._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        if self.schedule_timesteps is not None:
            # SB3 reads _total_timesteps only for the schedules' progress (collect_rollouts).
            self._total_timesteps = self.schedule_timesteps
        iteration_end = iteration_end_hooks(callback)
        callback.on_training_start(locals(), globals())
        assert self.env is not None, "You must set the environment before calling learn()"
        assert isinstance(self.train_freq, TrainFreq)

        while self.num_timesteps < total_timesteps:
            rollout = self.collect_rollouts(
                self.env,
                train_freq=self.train_freq,
                action_noise=self.action_noise,
                callback=callback,
                learning_starts=self.learning_starts,
                replay_buffer=self.replay_buffer,
                log_interval=log_interval,  # type: ignore[arg-type]
            )
            if not rollout.continue_training:
                break
            if self.num_timesteps > 0 and self.num_timesteps > self.learning_starts:
                gradient_steps = (
                    self.gradient_steps if self.gradient_steps >= 0 else rollout.episode_timesteps
                )
                if gradient_steps > 0:
                    self.train(batch_size=self.batch_size, gradient_steps=gradient_steps)
            stop = False
            for hook in iteration_end:
                if hook() is False:
                    stop = True
            if stop:
                break

        callback.on_training_end()
        return self

    # ------------------------------------------------------------------ the update path
    def q_features(self, observations: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """One forward pass of the online network: (penultimate features, Q-values)."""
        q_net = self.q_net
        features = self._body()(q_net.extract_features(observations, q_net.features_extractor))
        return features, q_net.q_net[-1](features)

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        # Switch to train mode (this affects batch norm / dropout)
        self.policy.set_training_mode(True)
        # Update learning rate according to schedule
        self._update_learning_rate(self.policy.optimizer)

        losses = []
        for _ in range(gradient_steps):
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            # SB3's target (the same operations), or Double DQN's with double_dqn.
            target_q_values = self.td_target(replay_data)

            # Seam (a): one forward pass gives the penultimate features and all Q-values.
            features, all_q_values = self.q_features(replay_data.observations)
            current_q_values = th.gather(all_q_values, dim=1, index=replay_data.actions.long())

            loss = F.smooth_l1_loss(current_q_values, target_q_values)
            losses.append(loss.detach())  # SB3: loss.item(); see LeanDQNMixin.dump_logs
            for intervention in self.interventions:
                extra = intervention.loss(replay_data, features, all_q_values)
                if extra is not None:
                    loss = loss + extra

            self.policy.optimizer.zero_grad()
            loss.backward()
            # Seam (b): keep the gradient norm that clip_grad_norm_ computes anyway.
            grad_norm = th.nn.utils.clip_grad_norm_(self._grad_params(), self.max_grad_norm)
            self.policy.optimizer.step()
            self.last_grad_norm = grad_norm  # computed under no_grad: nothing to detach
            self._grad_norm_stats.add(grad_norm)

            self._n_updates += 1
            for intervention in self.interventions:
                intervention.after_update(self._n_updates, self.num_timesteps)

        if losses:
            # No host transfer per train() call: SB3's "train/loss" (the mean of the last call's
            # losses) is computed when SB3's logger dumps (LeanDQNMixin.dump_logs).
            self._loss_stats.extend(losses)
            self._last_train_losses = losses
            self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

    # ------------------------------------------------------------------ interventions and logging
    def pop_train_stats(self) -> dict[str, float]:
        """Mean TD loss and gradient norm since the last call (NaN when no update happened), the
        update count, the optimizer's ``log_values()`` if it has one (TRAC's ``train/trac_scale``)
        and every intervention's :meth:`~rlplast.interventions.base.Intervention.log_values`."""
        stats = {
            "train/loss": self._loss_stats.pop(),
            "train/grad_norm": self._grad_norm_stats.pop(),
            "train/n_updates": float(self._n_updates),
        }
        optimizer_values = getattr(self.policy.optimizer, "log_values", None)
        if callable(optimizer_values):
            stats.update(optimizer_values())
        for intervention in self.interventions:
            stats.update(intervention.log_values())
        return stats

    def notify_task_switch(self, task_id: int) -> None:
        """Run every intervention's task-switch hook (a training callback calls this)."""
        for intervention in self.interventions:
            intervention.on_task_switch(task_id, self.num_timesteps)

    def _excluded_save_params(self) -> list[str]:
        # Interventions hold references to the networks; checkpoints pickle them with the agent.
        return [
            *super()._excluded_save_params(),
            "interventions",
            "last_grad_norm",
            "_grad_norm_stats",
            "_loss_stats",
        ]
