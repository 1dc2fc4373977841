"""The speed layer under PlasticDQN: SB3's collection, replay and prediction paths without their waste.

Nothing here changes a result: with the same seed, observations, infos, replay contents, sampled
batches, greedy actions and parameters are those of stable-baselines3 2.9 (tested against SB3 in
``tests/agents``). What is removed, and where:

* :class:`LeanDummyVecEnv` — ``DummyVecEnv`` without its per-step deep copies of immutable values;
* :class:`LeanReplayBuffer` / :class:`LeanNStepReplayBuffer` — a direct ``add`` and, for the
  one-step buffer, sampling without SB3's second copy of each field;
* :class:`MlpPolicy` / :class:`CnnPolicy` / :class:`MultiInputPolicy` — SB3's DQN policies whose
  ``set_training_mode`` skips the module walk when no module depends on the mode;
* :class:`DeviceMean` — running means of per-update tensors without a host transfer per update;
* :class:`LeanDQNMixin` — the DQN methods that use the above: env wrapping, buffer choice,
  multi-tensor Adam, ``_store_transition`` without ``deepcopy`` and a direct greedy ``predict``.

The research seams (``train()``, interventions, accessors) live in :mod:`rlplast.agents.dqn`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import DQN
from stable_baselines3.common.buffers import NStepReplayBuffer, ReplayBuffer
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.common.type_aliases import GymEnv, ReplayBufferSamples
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper, VecNormalize
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn
from stable_baselines3.common.vec_env.util import dict_to_obs
from stable_baselines3.dqn import policies as sb3_policies
from torch.nn import functional as F

__all__ = [
    "LEAN_BUFFERS",
    "CnnPolicy",
    "DeviceMean",
    "LeanDQNMixin",
    "LeanDummyVecEnv",
    "LeanNStepReplayBuffer",
    "LeanReplayBuffer",
    "MlpPolicy",
    "MultiInputPolicy",
    "prefer_foreach",
    "same_structure",
    "structure_key",
]

# ---------------------------------------------------------------------------------- policies
#: Modules whose forward pass depends on train/eval mode.
MODE_DEPENDENT = (th.nn.modules.dropout._DropoutNd, th.nn.modules.batchnorm._NormBase)


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


def same_structure(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Whether two :func:`structure_key` values describe the same network (identity, then length)."""
    return all(x is y for x, y in zip(a[:3], b[:3], strict=True)) and a[3] == b[3]


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
        if cached is None or not same_structure(cached[0], key):
            cached = self.__dict__["_mode_free"] = (
                key,
                not any(isinstance(m, MODE_DEPENDENT) for m in self.modules()),  # type: ignore[attr-defined]
            )
        if cached[1] or (self.training == mode and self.q_net.training == mode):
            if self.training != mode:  # nn.Module.__setattr__ is slow: skip a no-op assignment
                self.training = mode
            return
        super().set_training_mode(mode)  # type: ignore[misc]


class MlpPolicy(_CachedTrainingMode, sb3_policies.MlpPolicy):
    """SB3's DQN ``MlpPolicy`` with a cached training mode."""


class CnnPolicy(_CachedTrainingMode, sb3_policies.CnnPolicy):
    """SB3's DQN ``CnnPolicy`` with a cached training mode."""


class MultiInputPolicy(_CachedTrainingMode, sb3_policies.MultiInputPolicy):
    """SB3's DQN ``MultiInputPolicy`` with a cached training mode."""


# ---------------------------------------------------------------------------------- vectorized env
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


def _innermost(env: VecEnv) -> VecEnv:
    while isinstance(env, VecEnvWrapper):
        env = env.venv
    return env


# ---------------------------------------------------------------------------------- replay buffers
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


# ---------------------------------------------------------------------------------- statistics
class DeviceMean:
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
        """Add one value."""
        self._values.append(value)
        if len(self._values) >= self.FOLD:
            self._fold()

    def extend(self, values: Sequence[th.Tensor]) -> None:
        """Add several values."""
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


def prefer_foreach(optimizer: th.optim.Optimizer) -> None:
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


# ---------------------------------------------------------------------------------- the DQN mixin
#: torch's global forward (pre-)hook registries; any entry disables the direct greedy path.
_GLOBAL_HOOKS = (th.nn.modules.module._global_forward_hooks, th.nn.modules.module._global_forward_pre_hooks)

#: Layer kinds of the direct greedy path (see LeanDQNMixin._direct_layers).
_LINEAR, _RELU, _OTHER = 0, 1, 2


def _layer_kind(layer: th.nn.Module) -> int:
    if type(layer) is th.nn.Linear:
        return _LINEAR
    if type(layer) is th.nn.ReLU and not layer.inplace:
        return _RELU
    return _OTHER


# mypy checks the mixin's super() calls against DQN; at run time it is a plain mixin.
if TYPE_CHECKING:
    _DQNBase = DQN
else:
    _DQNBase = object


class LeanDQNMixin(_DQNBase):
    """SB3 ``DQN`` methods with the same results and less work; mix in before ``DQN``.

    * ``_wrap_env``: the ``DummyVecEnv`` SB3 creates for a plain env becomes a
      :class:`LeanDummyVecEnv`; a ``VecEnv`` the caller passed in is used as it is.
    * ``_setup_model``: SB3's default replay buffer becomes its lean version (:data:`LEAN_BUFFERS`),
      Adam becomes multi-tensor (:func:`prefer_foreach`).
    * ``_store_transition``: ``ndarray.copy`` instead of ``deepcopy`` for plain array observations.
    * ``predict``: greedy actions for plain Box observations in one direct forward pass.
    * ``dump_logs``: SB3's ``train/loss``, computed from the last ``train()`` call's loss tensors
      (``_last_train_losses``, kept by the subclass' ``train``) when SB3's logger dumps, instead of
      one ``.item()`` per update.
    """

    #: Per-network caches of the hot path (rebuilt on demand, never saved).
    _CACHES: ClassVar[tuple[str, ...]] = (
        "_body_cache",
        "_params_cache",
        "_direct_cache",
        "_last_train_losses",
    )

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
        prefer_foreach(self.policy.optimizer)
        space = self.observation_space
        # Greedy actions skip SB3's generic obs_to_tensor for plain (non-image) Box observations.
        self._fast_greedy = isinstance(space, spaces.Box) and not is_image_space(space)

    def __getstate__(self) -> dict[str, Any]:
        # Checkpoints pickle the whole agent; the caches are rebuilt on demand.
        state = self.__dict__.copy()
        for cache in self._CACHES:
            state.pop(cache, None)
        return state

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), *self._CACHES]

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
        if cached is None or not same_structure(cached[0], key):
            extractor = q_net.features_extractor
            plain = (
                # SB3's QNetwork, or a subclass that builds another head but keeps its forward
                # (rlplast.agents.layers.OptionsQNetwork: LayerNorm and CReLU are "other" layers)
                isinstance(q_net, sb3_policies.QNetwork)
                and type(q_net).forward is sb3_policies.QNetwork.forward
                and type(q_net).extract_features is sb3_policies.QNetwork.extract_features
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

    def _grad_params(self) -> list[th.nn.Parameter]:
        """``list(self.policy.parameters())``, walked once per policy (same order)."""
        cached = self.__dict__.get("_params_cache")
        if cached is None or cached[0] is not self.policy:
            cached = self.__dict__["_params_cache"] = (self.policy, list(self.policy.parameters()))
        return cached[1]

    def _body(self) -> th.nn.Module:
        """The online network's layers but the last (``q_net.q_net[:-1]``), sliced once per network."""
        q_net = self.q_net
        key = structure_key(q_net)
        cached = self.__dict__.get("_body_cache")
        if cached is None or not same_structure(cached[0], key):
            # Slicing a Sequential builds a new module each time: do it once per network.
            cached = self.__dict__["_body_cache"] = (key, q_net.q_net[:-1])
        return cached[1]

    def dump_logs(self) -> None:
        """SB3's ``dump_logs``, recording ``train/loss`` (mean of the last ``train()`` call) first."""
        losses = self.__dict__.get("_last_train_losses")
        if losses:
            self.logger.record("train/loss", float(th.stack(losses).mean()))
        super().dump_logs()
