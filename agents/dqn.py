"""PlasticDQN: stable-baselines3's DQN with seams for plasticity interventions.

This is the only module that touches stable-baselines3 internals. :meth:`PlasticDQN.train` is
stable-baselines3 2.9's ``DQN.train`` (the version pinned in ``pyproject.toml``) with two seams:

1. the online network's single forward pass is split at the last linear layer, so the
   penultimate features and the Q-values of the batch are both available; each intervention's
   :meth:`~rlplast.interventions.base.Intervention.loss` may add a term to the TD loss;
2. the gradient norm that ``clip_grad_norm_`` returns is kept (:attr:`PlasticDQN.last_grad_norm`).

With no interventions the arithmetic is exactly SB3's: the same seed gives bitwise-identical
parameters after any number of updates.

The collection path is SB3's with its redundant copies removed (:class:`LeanDummyVecEnv` as the
vectorized env PlasticDQN creates for a plain env, :class:`LeanReplayBuffer` /
:class:`LeanNStepReplayBuffer` in place of the buffer SB3 chooses, no ``deepcopy`` in
``_store_transition``); observations, infos, n-step returns and replay contents are the same as
SB3's (tested), and objects the caller passed in (a ``VecEnv``, a buffer class) are used unchanged.

Example:
    >>> from rlplast.agents import PlasticDQN
    >>> model = PlasticDQN("MlpPolicy", "CartPole-v1", seed=0, learning_starts=100)
    >>> model = model.learn(500)
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import DQN
from stable_baselines3.common.buffers import NStepReplayBuffer, ReplayBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, ReplayBufferSamples, TrainFreq
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper, VecNormalize
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn
from stable_baselines3.common.vec_env.util import dict_to_obs
from stable_baselines3.dqn import policies as sb3_policies
from torch.nn import functional as F

from rlplast.interventions.base import Intervention

#: torch's global forward (pre-)hook registries; any entry disables the direct greedy path.
_GLOBAL_HOOKS = (th.nn.modules.module._global_forward_hooks, th.nn.modules.module._global_forward_pre_hooks)

#: Layer kinds of the direct greedy path (see PlasticDQN._direct_layers).
_LINEAR, _RELU, _OTHER = 0, 1, 2


def _layer_kind(layer: th.nn.Module) -> int:
    if type(layer) is th.nn.Linear:
        return _LINEAR
    if type(layer) is th.nn.ReLU and not layer.inplace:
        return _RELU
    return _OTHER


#: Modules whose forward pass depends on train/eval mode.
MODE_DEPENDENT = (th.nn.modules.dropout._DropoutNd, th.nn.modules.batchnorm._NormBase)


class _CachedTrainingMode:
    """Skip SB3's recursive ``Module.train()`` walk when it cannot change anything.

    SB3 calls ``set_training_mode`` on every ``predict`` and every ``train``; the walk over all
    modules was ~13 % of a CartPole run. When no module depends on the mode (no dropout, no
    batch/instance norm) only the policy's flag is updated; otherwise the walk runs whenever the
    mode changes (checking the online network's own flag too, so a direct ``q_net.eval()`` is
    honoured).
    """

    training: bool
    q_net: Any

    def set_training_mode(self, mode: bool) -> None:
        key = structure_key(self.q_net)
        cached = self.__dict__.get("_mode_free")
        if cached is None or not _same_key(cached[0], key):
            cached = self.__dict__["_mode_free"] = (
                key,
                not any(isinstance(m, MODE_DEPENDENT) for m in self.modules()),  # type: ignore[attr-defined]
            )
        if cached[1] or (self.training == mode and self.q_net.training == mode):
            if self.training != mode:  # nn.Module.__setattr__ is slow: skip a no-op assignment
                self.training = mode
            return
        super().set_training_mode(mode)  # type: ignore[misc]


def structure_key(q_net: Any) -> tuple[Any, ...]:
    """What the hot-path caches depend on: the Q-network, its extractor, its layer stack and the
    stack's length (so replacing the network, its extractor or inserting a layer rebuilds them)."""
    layers = getattr(q_net, "q_net", None)
    return (
        q_net,
        getattr(q_net, "features_extractor", None),
        layers,
        len(layers) if layers is not None else -1,
    )


def _same_key(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return all(x is y for x, y in zip(a[:3], b[:3], strict=True)) and a[3] == b[3]


class MlpPolicy(_CachedTrainingMode, sb3_policies.MlpPolicy):
    """SB3's DQN ``MlpPolicy`` with a cached training mode."""


class CnnPolicy(_CachedTrainingMode, sb3_policies.CnnPolicy):
    """SB3's DQN ``CnnPolicy`` with a cached training mode."""


class MultiInputPolicy(_CachedTrainingMode, sb3_policies.MultiInputPolicy):
    """SB3's DQN ``MultiInputPolicy`` with a cached training mode."""


#: Info values that are immutable, so sharing them is the same as SB3's deep copy.
_IMMUTABLE = (bool, int, float, complex, str, bytes, type(None), np.generic)


def _copy_info(info: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``info`` equal to ``copy.deepcopy(info)``, with immutable values shared.

    SB3's ``DummyVecEnv`` deep-copies every info dict on every step; most values are immutable
    scalars (``TimeLimit.truncated``), so only the others (``terminal_observation``, Monitor's
    ``episode``, an env's own arrays or dicts) are deep-copied here. The caller may then change
    what it receives (``VecFrameStack`` writes stacked terminal observations into the dict)
    without touching the env's own objects.
    """
    return {k: v if isinstance(v, _IMMUTABLE) else copy.deepcopy(v) for k, v in info.items()}


class LeanDummyVecEnv(DummyVecEnv):
    """SB3's ``DummyVecEnv`` without its per-step deep copies of immutable values (same results).

    ``DummyVecEnv`` deep-copies its observation buffer and the list of info dicts on every step
    (≈ 4 % of a CartPole run). Here the observation arrays are copied with ``ndarray.copy`` and
    each info dict with :func:`_copy_info` (deep copies of everything but immutable scalars), so
    callers get objects of their own exactly as from SB3. PlasticDQN only uses this class for the
    vectorized env it creates itself; a ``VecEnv`` passed in by the user is used as it is.
    """

    def step_wait(self) -> VecEnvStepReturn:
        for i, env in enumerate(self.envs):
            obs, reward, terminated, truncated, info = env.step(self.actions[i])
            done = terminated or truncated
            # The SB3 VecEnv convention: a time-limit end is flagged, the last observation kept in
            # the info and the env reset.
            info["TimeLimit.truncated"] = truncated and not terminated
            if done:
                info["terminal_observation"] = obs
                obs, self.reset_infos[i] = env.reset()
            self.buf_rews[i], self.buf_dones[i], self.buf_infos[i] = reward, done, info
            self._save_obs(i, obs)
        infos = [_copy_info(info) for info in self.buf_infos]
        return self._obs_from_buf(), np.copy(self.buf_rews), np.copy(self.buf_dones), infos

    def _obs_from_buf(self):  # type: ignore[no-untyped-def]
        if len(self.keys) == 1 and self.keys[0] is None:  # a plain (non-dict, non-tuple) space
            return self.buf_obs[None].copy()
        return dict_to_obs(self.observation_space, {k: v.copy() for k, v in self.buf_obs.items()})


def _lean_add(
    self: ReplayBuffer,
    obs: np.ndarray,
    next_obs: np.ndarray,
    action: np.ndarray,
    reward: np.ndarray,
    done: np.ndarray,
    infos: list[dict[str, Any]],
) -> None:
    """SB3's ``ReplayBuffer.add`` writing the arrays straight into the storage.

    ``ReplayBuffer.add`` wraps each field in ``np.array(...)`` before assigning it into the
    preallocated storage, which copies again anyway; the stored values are identical. Discrete
    observation spaces (which need SB3's reshape) go through SB3's ``add``.
    """
    if isinstance(self.observation_space, spaces.Discrete):
        ReplayBuffer.add(self, obs, next_obs, action, reward, done, infos)
        return
    pos = self.pos
    self.observations[pos] = obs
    if self.optimize_memory_usage:
        self.observations[(pos + 1) % self.buffer_size] = next_obs
    else:
        self.next_observations[pos] = next_obs
    self.actions[pos] = action.reshape((self.n_envs, self.action_dim))
    self.rewards[pos] = reward
    self.dones[pos] = done
    if self.handle_timeout_termination:
        self.timeouts[pos] = [info.get("TimeLimit.truncated", False) for info in infos]
    self.pos = pos + 1
    if self.pos == self.buffer_size:
        self.full = True
        self.pos = 0


class LeanReplayBuffer(ReplayBuffer):
    """SB3's ``ReplayBuffer`` with a direct ``add`` (see :func:`_lean_add`) and lean sampling."""

    add = _lean_add  # type: ignore[assignment]

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> ReplayBufferSamples:
        """SB3's ``_get_samples`` (same random draws, same values) without its per-field copies.

        Fancy indexing already returns fresh arrays, so on the CPU they become tensors without
        ``th.tensor``'s second copy. Normalizing environments and the memory-optimized layout go
        through SB3's code.
        """
        if env is not None or self.optimize_memory_usage:
            return super()._get_samples(batch_inds, env)
        env_indices = np.random.randint(0, high=self.n_envs, size=(len(batch_inds),))
        dones = self.dones[batch_inds, env_indices] * (1 - self.timeouts[batch_inds, env_indices])
        data = (
            self.observations[batch_inds, env_indices, :],
            self.actions[batch_inds, env_indices, :],
            self.next_observations[batch_inds, env_indices, :],
            dones.reshape(-1, 1),
            self.rewards[batch_inds, env_indices].reshape(-1, 1),
        )
        if self.device.type == "cpu":
            return ReplayBufferSamples(*[th.from_numpy(x) for x in data])
        return ReplayBufferSamples(*[th.as_tensor(x, device=self.device) for x in data])


class LeanNStepReplayBuffer(NStepReplayBuffer):
    """SB3's ``NStepReplayBuffer`` (n-step returns and discounts computed by SB3's sampling) with a
    direct ``add`` (see :func:`_lean_add`)."""

    add = _lean_add  # type: ignore[assignment]


#: SB3's default buffers (chosen by SB3 when ``replay_buffer_class`` is None) → their lean versions,
#: which add no state and store and sample the same values.
LEAN_BUFFERS: dict[type[ReplayBuffer], type[ReplayBuffer]] = {
    ReplayBuffer: LeanReplayBuffer,
    NStepReplayBuffer: LeanNStepReplayBuffer,
}


class _DeviceMean:
    """Running mean of 0-dim tensors with no host transfer and no tensor operation per value.

    Values are kept in a list and summed on their device every :attr:`FOLD` values (and at
    :meth:`pop`), so a training update adds one ``list.append``.
    """

    FOLD = 1024

    def __init__(self) -> None:
        self._values: list[th.Tensor] = []
        self._sum: th.Tensor | None = None
        self._count = 0

    def add(self, value: th.Tensor) -> None:
        self._values.append(value)
        if len(self._values) >= self.FOLD:
            self._fold()

    def extend(self, values: Sequence[th.Tensor]) -> None:
        self._values.extend(values)
        if len(self._values) >= self.FOLD:
            self._fold()

    def _fold(self) -> None:
        part = th.stack(self._values).sum()
        self._count += len(self._values)
        self._values = []
        self._sum = part if self._sum is None else self._sum + part

    def pop(self) -> float:
        """The mean since the last call (NaN if nothing was added), then start over (one host transfer)."""
        if self._values:
            self._fold()
        mean = float(self._sum) / self._count if self._sum is not None else float("nan")
        self._sum, self._count = None, 0
        return mean


def _prefer_foreach(optimizer: th.optim.Optimizer) -> None:
    """Use torch's multi-tensor (``foreach``) Adam when the user left the implementation open.

    On the CPU torch defaults to the per-parameter loop; the multi-tensor version performs the
    same operations in the same order on each tensor (bitwise-identical parameters, tested against
    SB3's DQN) with less dispatch per step. Optimizers other than plain Adam, or an explicit
    ``foreach``/``fused`` choice in ``optimizer_kwargs``, are left alone.
    """
    if type(optimizer) is not th.optim.Adam:
        return
    for group in optimizer.param_groups:
        if group.get("foreach") is None and not group.get("fused") and not group.get("differentiable"):
            group["foreach"] = True


def _innermost(env: VecEnv) -> VecEnv:
    while isinstance(env, VecEnvWrapper):
        env = env.venv
    return env


class PlasticDQN(DQN):
    """A ``stable_baselines3.DQN`` whose update path accepts interventions.

    Args:
        *args: passed to :class:`stable_baselines3.DQN`.
        interventions: interventions whose hooks run inside training (default: none).
        **kwargs: passed to :class:`stable_baselines3.DQN`.
    """

    #: Per-network caches of the hot path (rebuilt on demand, never saved).
    _CACHES: ClassVar[tuple[str, ...]] = (
        "_body_cache",
        "_params_cache",
        "_direct_cache",
        "_last_train_losses",
    )

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }

    def __init__(self, *args: Any, interventions: Sequence[Intervention] = (), **kwargs: Any) -> None:
        self.interventions: list[Intervention] = list(interventions)
        self.last_grad_norm: th.Tensor | float = float("nan")
        self._loss_stats = _DeviceMean()
        self._grad_norm_stats = _DeviceMean()
        #: Called after every collect-and-train iteration; returning False stops training.
        #: Iteration ends are the points where a checkpoint captures the whole training state.
        self.iteration_end_hook: Callable[[], bool] | None = None
        super().__init__(*args, **kwargs)

    @staticmethod
    def _wrap_env(env: GymEnv, verbose: int = 0, monitor_wrapper: bool = True) -> VecEnv:
        """SB3's wrapping (Monitor, DummyVecEnv, image transpose); the ``DummyVecEnv`` SB3 creates
        for a plain env becomes a :class:`LeanDummyVecEnv`. A ``VecEnv`` the caller passed in is
        used as it is (never modified)."""
        wrapped = DQN._wrap_env(env, verbose, monitor_wrapper)
        if not isinstance(env, VecEnv):
            inner = _innermost(wrapped)
            if type(inner) is DummyVecEnv:  # created just now by SB3, owned by this model
                inner.__class__ = LeanDummyVecEnv
        return wrapped

    def _setup_model(self) -> None:
        chosen_by_sb3 = self.replay_buffer_class is None
        super()._setup_model()  # SB3 picks the buffer: ReplayBuffer, NStepReplayBuffer (n_steps > 1), Dict...
        if chosen_by_sb3:
            lean = LEAN_BUFFERS.get(type(self.replay_buffer))  # type: ignore[arg-type]
            if lean is not None:  # the buffer was created just now by SB3, owned by this model
                self.replay_buffer.__class__ = lean  # type: ignore[union-attr]
                self.replay_buffer_class = lean
        _prefer_foreach(self.policy.optimizer)
        space = self.observation_space
        # Greedy actions skip SB3's generic obs_to_tensor for plain (non-image) Box observations.
        self._fast_greedy = isinstance(space, spaces.Box) and not is_image_space(space)
        for intervention in self.interventions:
            intervention.setup(self)

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
        """stable-baselines3 2.9's off-policy ``learn`` loop plus :attr:`iteration_end_hook`."""
        total_timesteps, callback = self._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
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
            if self.iteration_end_hook is not None and not self.iteration_end_hook():
                break

        callback.on_training_end()
        return self

    def __getstate__(self) -> dict[str, Any]:
        # Checkpoints pickle the whole agent; the hook belongs to the live training process.
        state = self.__dict__.copy()
        state["iteration_end_hook"] = None
        for cache in self._CACHES:
            state.pop(cache, None)
        return state

    def _store_transition(
        self,
        replay_buffer: Any,
        buffer_action: np.ndarray,
        new_obs: np.ndarray | dict[str, np.ndarray],
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """SB3's ``_store_transition``; for plain array observations without ``VecNormalize`` the
        next observations are copied with ``ndarray.copy`` instead of ``deepcopy`` (same values)."""
        if self._vec_normalize_env is not None or not isinstance(new_obs, np.ndarray):
            super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)
            return
        next_obs = new_obs.copy()
        for i, done in enumerate(dones):
            # The VecEnv has already reset a finished env: its true last observation is in the info.
            if done and infos[i].get("terminal_observation") is not None:
                next_obs[i] = infos[i]["terminal_observation"]
        self._last_original_obs = self._last_obs
        replay_buffer.add(self._last_obs, next_obs, buffer_action, reward, dones, infos)
        self._last_obs = new_obs

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """SB3's ε-greedy ``DQN.predict`` (same random draws, same actions), with a lean greedy path.

        For a batch of plain Box observations the greedy action is one forward pass under
        ``inference_mode`` — the same arithmetic as SB3's ``policy.predict``, minus its per-call checks,
        copies and reshapes. Anything else goes through SB3's code.
        """
        if not deterministic and np.random.rand() < self.exploration_rate:
            if self.policy.is_vectorized_observation(observation):
                if isinstance(observation, dict):
                    n_batch = observation[next(iter(observation.keys()))].shape[0]
                else:
                    n_batch = observation.shape[0]
                action = np.array([self.action_space.sample() for _ in range(n_batch)])
            else:
                action = np.array(self.action_space.sample())
            return action, state
        if (
            self._fast_greedy
            and isinstance(observation, np.ndarray)
            and observation.shape[1:] == self.observation_space.shape
        ):
            self.policy.set_training_mode(False)
            layers = self._direct_layers()
            with th.inference_mode():
                x = th.as_tensor(observation, device=self.device)
                if layers is None:
                    q_values = self.q_net(x)
                else:
                    # QNetwork -> preprocess_obs (float) -> FlattenExtractor -> Sequential, called
                    # layer by layer: the same operations without the module dispatches.
                    x = x.float().flatten(1)
                    for kind, layer in layers:
                        if kind == _LINEAR:  # Linear.forward's op, without its attribute lookups
                            params = layer._parameters
                            x = F.linear(x, params["weight"], params["bias"])  # type: ignore[arg-type]
                        elif kind == _RELU:
                            x = th.relu(x)
                        else:
                            x = layer.forward(x)
                    q_values = x
            return q_values.argmax(dim=1).cpu().numpy(), state
        return self.policy.predict(observation, state, episode_start, deterministic)

    def _direct_layers(self) -> list[tuple[int, th.nn.Module]] | None:
        """``(kind, layer)`` for the online network's layers when its forward is plain
        flatten-then-Sequential and no module has a forward hook (then they can be called
        directly), else None. ``kind``: :data:`_LINEAR`, :data:`_RELU` (not in place) or other."""
        q_net = self.q_net
        key = structure_key(q_net)
        cached = self.__dict__.get("_direct_cache")
        if cached is None or not _same_key(cached[0], key):
            extractor = q_net.features_extractor
            plain = (
                type(q_net) is sb3_policies.QNetwork
                and type(extractor) is FlattenExtractor
                and type(q_net.q_net) is th.nn.Sequential
            )
            modules = [q_net, extractor, *extractor.modules(), *q_net.q_net.modules()] if plain else []
            layers = [(_layer_kind(layer), layer) for layer in q_net.q_net]
            cached = self.__dict__["_direct_cache"] = (key, plain, modules, layers)
        _, plain, modules, layers = cached
        if not plain or _GLOBAL_HOOKS[0] or _GLOBAL_HOOKS[1]:
            return None
        for m in modules:
            if m._forward_hooks or m._forward_pre_hooks:
                return None
        return layers

    # ------------------------------------------------------------------ the update path
    def q_features(self, observations: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """One forward pass of the online network: (penultimate features, Q-values)."""
        q_net = self.q_net
        layers = q_net.q_net
        key = structure_key(q_net)
        cached = self.__dict__.get("_body_cache")
        if cached is None or not _same_key(cached[0], key):
            # Slicing a Sequential builds a new module each time: do it once per network.
            cached = self.__dict__["_body_cache"] = (key, layers[:-1])
        features = cached[1](q_net.extract_features(observations, q_net.features_extractor))
        return features, layers[-1](features)

    def _grad_params(self) -> list[th.nn.Parameter]:
        """``list(self.policy.parameters())``, walked once per policy (same order)."""
        cached = self.__dict__.get("_params_cache")
        if cached is None or cached[0] is not self.policy:
            cached = self.__dict__["_params_cache"] = (self.policy, list(self.policy.parameters()))
        return cached[1]

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        # Switch to train mode (this affects batch norm / dropout)
        self.policy.set_training_mode(True)
        # Update learning rate according to schedule
        self._update_learning_rate(self.policy.optimizer)

        losses = []
        for _ in range(gradient_steps):
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            # For n-step replay, discount factor is gamma**n_steps (when no early termination)
            discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma

            with th.no_grad():
                next_q_values = self.q_net_target(replay_data.next_observations)
                next_q_values, _ = next_q_values.max(dim=1)
                next_q_values = next_q_values.reshape(-1, 1)
                target_q_values = replay_data.rewards + (1 - replay_data.dones) * discounts * next_q_values

            # Seam (a): one forward pass gives the penultimate features and all Q-values.
            features, all_q_values = self.q_features(replay_data.observations)
            current_q_values = th.gather(all_q_values, dim=1, index=replay_data.actions.long())

            loss = F.smooth_l1_loss(current_q_values, target_q_values)
            losses.append(loss.detach())
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
            # losses) is computed when SB3's logger dumps, see dump_logs().
            self._loss_stats.extend(losses)
            self._last_train_losses = losses
            self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

    def dump_logs(self) -> None:
        """SB3's ``dump_logs``, recording ``train/loss`` (mean of the last ``train()`` call) first."""
        losses = self.__dict__.get("_last_train_losses")
        if losses:
            self.logger.record("train/loss", float(th.stack(losses).mean()))
        super().dump_logs()

    # ------------------------------------------------------------------ logging helpers
    def pop_train_stats(self) -> dict[str, float]:
        """Mean TD loss and gradient norm since the last call (NaN when no update happened)."""
        stats = {
            "train/loss": self._loss_stats.pop(),
            "train/grad_norm": self._grad_norm_stats.pop(),
            "train/n_updates": float(self._n_updates),
        }
        for intervention in self.interventions:
            stats.update(intervention.log_values())
        return stats

    def notify_task_switch(self, task_id: int) -> None:
        """Run every intervention's task-switch hook (called by the training callback)."""
        for intervention in self.interventions:
            intervention.on_task_switch(task_id, self.num_timesteps)

    # ------------------------------------------------------------------ persistence
    def _excluded_save_params(self) -> list[str]:
        # Interventions hold references to the networks; checkpoints store their state_dict.
        return [
            *super()._excluded_save_params(),
            "interventions",
            "last_grad_norm",
            "_grad_norm_stats",
            "_loss_stats",
            "iteration_end_hook",
            *self._CACHES,
        ]
