"""Population: S independent DQN members trained in lock-step in one process.

Each member is the DQN that ``PlasticDQN(policy, env, seed=seeds[i], ...)`` would train — same
hyperparameters under SB3's names, same initial network, same env seeding, same update arithmetic
— with its own random streams for exploration and replay sampling (see
:mod:`rlplast.population.rng`). The loop below is stable-baselines3 2.9's off-policy loop
(``learn`` → ``collect_rollouts`` → ``train``) written once for all members:

* act: one stacked forward pass, ε-greedy on the device; the actions are the only per-step
  device-to-host transfer;
* step every member's env (one sync vector env), account episodes on the host;
* store the transitions (one write per field), update the target networks every
  ``target_update_interval`` env steps (SB3's ``_n_calls`` count), update ε;
* every ``train_freq`` steps, once ``num_timesteps > learning_starts``: ``gradient_steps``
  updates, each a batched TD loss (DQN's or Double DQN's targets, :meth:`Population.td_target`),
  per-member gradient clipping and a stacked optimizer step (Adam, AdamW, or TRAC around either),
  with no host synchronisation.

Example:
    >>> pop = Population("MlpPolicy", "CartPole-v1", seeds=[0, 1, 2, 3], learning_starts=100)
    >>> pop = pop.learn(1_000)
    >>> [e.member for e in pop.tracker.pop_episodes()][:3]  # doctest: +SKIP
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from rlplast.agents.dqn import td_targets
from rlplast.errors import UserError
from rlplast.population.adam import MemberAdamState, StackedAdam
from rlplast.population.envs import EnvSource, EpisodeTracker, make_member_envs
from rlplast.population.interventions import PopulationInterventions, build_member_interventions
from rlplast.population.nets import StackedQNetwork, build_member_networks
from rlplast.population.replay import ReplaySamples, StackedReplayBuffer, check_replay_fits
from rlplast.population.rng import EXPLORATION, RAW_HIGH, REPLAY, BlockStream
from rlplast.population.trac import StackedTRAC

if TYPE_CHECKING:
    from stable_baselines3.common.type_aliases import ReplayBufferSamples
    from stable_baselines3.dqn.policies import QNetwork

    from rlplast.config import Config

__all__ = ["DQNSettings", "MemberFailure", "MemberView", "Population", "PopulationCallback", "StepResult"]


@dataclass(frozen=True)
class DQNSettings:
    """DQN hyperparameters under stable-baselines3's names, with SB3's defaults (and PlasticDQN's
    ``double_dqn``)."""

    learning_rate: float = 1e-4
    buffer_size: int = 1_000_000
    learning_starts: int = 100
    batch_size: int = 32
    tau: float = 1.0
    gamma: float = 0.99
    train_freq: int = 4
    gradient_steps: int = 1
    n_steps: int = 1
    target_update_interval: int = 10_000
    exploration_fraction: float = 0.1
    exploration_initial_eps: float = 1.0
    exploration_final_eps: float = 0.05
    max_grad_norm: float = 10.0
    #: PlasticDQN's ``double_dqn``: Double DQN targets (see :meth:`Population.td_target`).
    double_dqn: bool = False

    def __post_init__(self) -> None:
        ints = ("buffer_size", "batch_size", "train_freq", "n_steps", "target_update_interval")
        for name in ints:
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise UserError(f"population: {name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.train_freq, (int, np.integer)):
            raise UserError("population: train_freq must be a number of env steps")
        if self.gradient_steps == 0 or self.gradient_steps < -1:
            raise UserError(f"population: gradient_steps must be >= 1 (or -1), got {self.gradient_steps}")
        if self.learning_starts < 0:
            raise UserError(f"population: learning_starts must be >= 0, got {self.learning_starts}")
        if not 0.0 <= self.tau <= 1.0:
            raise UserError(f"population: tau must be in [0, 1], got {self.tau}")
        if not (isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0):
            raise UserError(f"population: learning_rate must be a number > 0, got {self.learning_rate!r}")

    def exploration_rate(self, progress_remaining: float) -> float:
        """SB3's ``LinearSchedule(initial, final, fraction)`` at ``progress_remaining``."""
        done = 1 - progress_remaining
        if done > self.exploration_fraction:
            return self.exploration_final_eps
        span = self.exploration_final_eps - self.exploration_initial_eps
        return self.exploration_initial_eps + done * span / self.exploration_fraction


@dataclass
class StepResult:
    """What the last env step returned (host arrays, shape ``(S,)``), for callbacks."""

    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    infos: dict[str, Any]


class PopulationCallback:
    """Hooks into :meth:`Population.learn`; every method is optional (the defaults do nothing).

    ``on_step`` runs after every env step, before the transitions are stored (where SB3 calls
    ``callback.on_step``); ``on_iteration_end`` after every collect-and-train iteration (the point
    where a checkpoint captures the whole training state). Returning False from either stops
    training.
    """

    def on_training_start(self, population: Population) -> None:
        """Before the first step of :meth:`Population.learn`."""

    def on_step(self, population: Population) -> bool:
        """After an env step (see :attr:`Population.last_step`)."""
        return True

    def on_iteration_end(self, population: Population) -> bool:
        """After ``train_freq`` env steps and the updates that follow them."""
        return True

    def on_training_end(self, population: Population) -> None:
        """After the last iteration."""


#: An extra loss term: ``term(batch, features, q_values)`` → per-member losses ``(S,)`` (or their
#: sum) or None.
#: ``features`` ``(S, B, D)`` and ``q_values`` ``(S, B, A)`` are the online pass of the batch.
LossTerm = Callable[[ReplaySamples, Tensor, Tensor], "Tensor | None"]


class MemberView:
    """Member ``index`` seen as one agent: ordinary modules and an Adam-like state aliasing its slices.

    ``q_net``/``q_net_target`` are SB3 ``QNetwork``s whose parameters alias the member's slices of
    the stacked tensors; ``optimizer.state`` maps ``q_net``'s parameters to the member's Adam
    state (:class:`~rlplast.population.adam.MemberAdamState`); ``init_params`` are its initial
    parameters θ₀. ``policy`` is the view itself, so code written for ``model.policy.q_net`` /
    ``model.policy.optimizer`` reads the member.

    For interventions (set up on the view, see :mod:`rlplast.population.interventions`) and the
    metrics it offers the rest of what they read from a ``PlasticDQN``: ``n_updates``,
    ``num_timesteps``, ``action_space``, ``observation_space``, ``device``, ``n_envs`` (1),
    ``gamma``, ``double_dqn``, ``replay_size()``, ``replay_states()`` and ``replay_sample()`` on the
    member's replay, ``td_target()`` with the member's networks, and the member's side of the
    intervention helpers ``parameters_for_loss()``, ``add_feature_gradient()`` and
    ``random_stream()``.
    """

    #: Envs per member (``PlasticDQN.n_envs``): a member has one.
    n_envs = 1

    def __init__(self, population: Population, index: int) -> None:
        self._population = population
        self.index = index
        self.seed = population.seeds[index]
        self.device = population.device
        self.action_space = population.action_space
        self.observation_space = population.observation_space
        #: The discount (``PlasticDQN.gamma``).
        self.gamma = population.settings.gamma
        #: Double DQN targets (``PlasticDQN.double_dqn``).
        self.double_dqn = population.settings.double_dqn
        self.q_net: QNetwork = population.net.member_module(index)
        self.q_net_target: QNetwork = population.net.member_module(index, target=True)
        params = list(self.q_net.parameters())
        adam = population.optimizer
        self.optimizer = _MemberOptimizer(
            adam.member_state(index, params),
            [
                {
                    "params": params,
                    "lr": adam.lr,
                    "betas": (adam.beta1, adam.beta2),
                    "eps": adam.eps,
                    "weight_decay": adam.weight_decay,
                }
            ],
        )
        self.init_params: list[Tensor] = [p[index] for p in population.init_params]

    @property
    def policy(self) -> MemberView:
        """The view itself (``model.policy.q_net`` / ``model.policy.optimizer`` read the member)."""
        return self

    @property
    def n_updates(self) -> int:
        """Gradient updates so far (every member's: the population updates in lock-step)."""
        return self._population.n_updates

    @property
    def num_timesteps(self) -> int:
        """Env steps so far (the members' shared clock)."""
        return self._population.num_timesteps

    def replay_size(self) -> int:
        """Transitions in the member's replay (valid positions for :meth:`replay_states`)."""
        return self._population.replay.size()

    def replay_states(
        self, indices: np.ndarray, env_indices: np.ndarray | int = 0, normalize: bool = False
    ) -> tuple[Tensor, Tensor]:
        """The member's stored observations and taken actions at replay ``indices`` (on the device).

        ``PlasticDQN.replay_states`` for a member: ``env_indices`` must be 0 (one env per member);
        ``normalize`` changes nothing (a population has no ``VecNormalize``).

        Returns:
            ``(observations, actions)``: observations in their stored dtype, actions 1-D ``long``.
        """
        if np.any(np.asarray(env_indices) != 0):
            raise ValueError("a population member has one env: env_indices must be 0")
        replay = self._population.replay
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64).reshape(-1), device=self.device)
        obs = replay.observations[self.index].index_select(0, idx)
        return obs, replay.actions[self.index].index_select(0, idx)

    def replay_sample(self, batch_size: int, seed: int) -> ReplayBufferSamples:
        """A minibatch of the member's replay, drawn as ``PlasticDQN.replay_sample`` draws one.

        The positions are those SB3's ``replay_buffer.sample`` draws after
        ``np.random.seed(seed)`` (``randint(0, size, batch_size)``, here from a generator of its
        own: NumPy's global one is untouched), so on the same replay contents the batch is
        PlasticDQN's; n-step returns as in training.

        Args:
            batch_size: transitions to draw (with replacement, as SB3 does).
            seed: seed of the draw (0 to 2**32 - 1).

        Returns:
            SB3's ``ReplayBufferSamples`` (``discounts`` None for 1-step replay), on the device.
        """
        from stable_baselines3.common.type_aliases import ReplayBufferSamples

        replay = self._population.replay
        positions = np.random.RandomState(seed).randint(0, replay.size(), size=batch_size)
        idx = torch.as_tensor(positions, dtype=torch.int64, device=self.device)
        b = replay.sample(idx.unsqueeze(0), member=self.index)
        return ReplayBufferSamples(
            b.observations[0],
            b.actions[0],
            b.next_observations[0],
            b.dones[0],
            b.rewards[0],
            None if b.discounts is None else b.discounts[0],
        )

    def td_target(self, replay_data: Any) -> Tensor:
        """The ``(B, 1)`` TD targets of a batch of the member (no gradient), ``PlasticDQN.td_target``
        with the member's networks: ``r + (1 − d) γⁿ Q_target(s', a*)``, ``a*`` the target network's
        argmax (DQN) or, with ``double_dqn``, the online network's (Double DQN).

        Args:
            replay_data: the member's batch (SB3's ``ReplayBufferSamples`` or a member's slice of
                the population's batch in an intervention's ``loss``).
        """
        return td_targets(self.q_net, self.q_net_target, replay_data, self.gamma, self.double_dqn)

    def parameters_for_loss(self) -> list[Tensor]:
        """Slices of the stacked online parameters, differentiable in this update's graph (made
        anew per call; the view's own parameters are aliases outside that graph)."""
        index = self.index
        return [p[index] for p in self._population.net.params]

    def add_feature_gradient(self, features: Tensor, grad: Tensor) -> None:
        """Add ``grad`` to the gradient of the member's features slice in this update (see
        :meth:`~rlplast.population.interventions.PopulationInterventions.add_feature_gradient`)."""
        self._population.interventions.add_feature_gradient(self.index, features, grad)

    def random_stream(self) -> AbstractContextManager[None]:
        """The scope in which torch's global generators draw the member's own stream."""
        return self._population.interventions.random_stream(self.index)


class _MemberOptimizer:
    """The parts of ``torch.optim.Optimizer`` that interventions read: ``state``, ``param_groups``."""

    def __init__(self, state: MemberAdamState, param_groups: list[dict[str, Any]]) -> None:
        self.state = state
        self.param_groups = param_groups


class Population:
    """S DQN members with stacked networks, trained in lock-step in one process.

    Args:
        policy: ``"MlpPolicy"`` or ``"CnnPolicy"`` (or a DQN policy class), as for SB3's DQN.
        env: an env id (made per member with :func:`rlplast.envs.make_env`), one env factory
            for all members, or one factory per member.
        seeds: one seed per member (its network init, env seeding and random streams).
        env_kwargs: keyword arguments for an env id.
        env_import: module to import before making an env id.
        policy_kwargs: SB3 ``policy_kwargs`` as PlasticDQN takes them (``net_arch``,
            ``activation_fn`` — CReLU included —, ``layer_norm``, ``features_extractor_class``,
            ``normalize_images``; ``optimizer_class`` Adam, AdamW, ``TRACAdam`` or ``TRACAdamW``
            and ``optimizer_kwargs`` with their ``betas``, ``eps``, ``fused``, AdamW's
            ``weight_decay`` and TRAC's ``trac_betas``, ``trac_s_init``, ``trac_eps``).
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` or a torch device.
        interventions: the members' interventions (:mod:`rlplast.population.interventions`): a
            list of config entries (``{"name": "redo"}``) or fresh instances that every member gets
            (built or copied per member), or one such list per member (members may differ in
            intervention parameters). Available as :attr:`interventions`.
        **hyperparameters: :class:`DQNSettings` fields (SB3's names and defaults).

    Raises:
        UserError: no members, a negative seed, bad hyperparameters, an env the engine cannot
            run, replay buffers larger than the available memory, or an intervention that is
            invalid or cannot run per member (checked before anything is built).
    """

    def __init__(
        self,
        policy: str | type,
        env: EnvSource,
        seeds: Sequence[int],
        *,
        env_kwargs: Mapping[str, Any] | None = None,
        env_import: str | None = None,
        policy_kwargs: Mapping[str, Any] | None = None,
        device: torch.device | str = "auto",
        interventions: Sequence[Any] | None = None,
        **hyperparameters: Any,
    ) -> None:
        seeds = [int(s) for s in seeds]
        if len(seeds) < 1:
            raise UserError(f"population: needs at least 1 member (seed), got {len(seeds)}")
        if any(s < 0 for s in seeds):
            raise UserError(f"population: seeds must be >= 0, got {seeds}")
        valid = {f.name for f in fields(DQNSettings)}
        unknown = sorted(set(hyperparameters) - valid)
        if unknown:
            raise UserError(
                f"population: unknown hyperparameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}"
            )
        self.settings = DQNSettings(**hyperparameters)
        member_interventions = build_member_interventions(interventions, len(seeds))
        self.seeds = seeds
        self.n_members = len(seeds)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        s = self.settings

        self.envs = make_member_envs(env, self.n_members, env_kwargs, env_import)
        try:
            obs_space = self.envs.single_observation_space
            action_space = self.envs.single_action_space
            assert isinstance(action_space, gym.spaces.Discrete)
            self.observation_space, self.action_space = obs_space, action_space
            self.n_actions = int(action_space.n)
            obs_shape = tuple(obs_space.shape or ())
            obs_dtype = np.dtype(obs_space.dtype) if obs_space.dtype is not None else np.dtype(np.float32)
            check_replay_fits(obs_shape, obs_dtype, s.buffer_size, self.n_members, self.device)

            kwargs = dict(policy_kwargs or {})
            adam_kwargs, trac_kwargs = _optimizer_kwargs(
                kwargs.get("optimizer_class"), kwargs.get("optimizer_kwargs")
            )
            members = build_member_networks(policy, obs_space, action_space, kwargs, seeds)
            self.net = StackedQNetwork(members, self.device)
            self.init_params = [p.detach().clone() for p in self.net.params]
            trac = None if trac_kwargs is None else StackedTRAC(self.net.params, **trac_kwargs)
            self.optimizer = StackedAdam(self.net.params, s.learning_rate, trac=trac, **adam_kwargs)
            self.replay = StackedReplayBuffer(
                self.n_members,
                s.buffer_size,
                obs_shape,
                torch.from_numpy(np.zeros(0, dtype=obs_dtype)).dtype,
                self.device,
                n_steps=s.n_steps,
                gamma=s.gamma,
            )
        except BaseException:
            self.envs.close()
            raise
        block = max(16, min(1024, 2**20 // (self.n_members * s.batch_size)))
        self._explore = BlockStream(seeds, EXPLORATION, self._exploration_draw, 1024, self.device)
        self._replay_rng = BlockStream(seeds, REPLAY, self._replay_draw, block, self.device)
        self.tracker = EpisodeTracker(self.n_members)
        # Reward, done, timeout of a step, written in place and copied into the replay at once.
        self._flags = np.zeros((3, self.n_members), dtype=np.float32)
        #: Extra loss terms added to the TD loss of every update (see :data:`LossTerm`).
        self.loss_terms: list[LossTerm] = []
        #: Called after every update with the update count (interventions' ``after_update``).
        self.after_update_hooks: list[Callable[[int], None]] = []
        #: Called with ``(member, task_id)`` when a member's env reports a new task (not the first).
        self.task_switch_hooks: list[Callable[[int, int], None]] = []

        self.num_timesteps = 0
        self.n_updates = 0
        self.exploration_rate = 0.0  # SB3 starts at 0 and sets it after every env step
        self._n_calls = 0
        self._total_timesteps = 0
        self._obs: Tensor | None = None
        self._first_reset = True
        self.last_step: StepResult | None = None
        #: Per-member TD loss and pre-clipping gradient norm of the last update, ``(S,)`` on the device.
        self.last_losses: Tensor | None = None
        self.last_grad_norms: Tensor | None = None
        self._loss_sum = torch.zeros(self.n_members, dtype=torch.float64, device=self.device)
        self._grad_norm_sum = torch.zeros_like(self._loss_sum)
        self._stat_count = 0
        self._views: dict[int, MemberView] = {}
        #: The members' interventions, run through the seams above (see :class:`PopulationInterventions`).
        self.interventions = PopulationInterventions(self, member_interventions)
        try:
            self.interventions.setup()
        except BaseException:
            self.envs.close()
            raise
        #: Members whose own code failed (see :meth:`fail_member`), by index.
        self.failures: dict[int, MemberFailure] = {}

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_config(
        cls,
        cfg: Config,
        seeds: Sequence[int],
        device: str | None = None,
        env: EnvSource | None = None,
        interventions: Sequence[Any] | None = None,
    ) -> Population:
        """A population of ``cfg``'s agent and env (``train.seed`` is replaced by ``seeds``).

        Args:
            cfg: a validated rlplast config.
            seeds: one seed per member.
            device: overrides ``cfg.train.device``.
            env: overrides the env made from ``cfg.env``.
            interventions: overrides ``cfg.interventions`` (e.g. one list per member, for a sweep
                over intervention parameters in one population).
        """
        from rlplast.train import policy_kwargs, resolve_device

        a = cfg.agent
        hyper = {f.name: getattr(a, f.name) for f in fields(DQNSettings)}
        return cls(
            a.policy,
            env if env is not None else cfg.env.id,
            seeds,
            env_kwargs=cfg.env.kwargs,
            env_import=cfg.env.import_module,
            # The single run's own policy_kwargs: an option the stacked networks cannot take is
            # refused (UserError), never silently dropped.
            policy_kwargs=policy_kwargs(cfg),
            device=resolve_device(device or cfg.train.device),
            interventions=cfg.interventions if interventions is None else interventions,
            **hyper,
        )

    def _exploration_draw(self, g: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
        return g.random(n), g.integers(0, self.n_actions, size=n)

    def _replay_draw(self, g: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
        return (g.integers(0, RAW_HIGH, size=(n, self.settings.batch_size)),)

    def _to_device(self, array: np.ndarray) -> Tensor:
        t = torch.from_numpy(array)
        return t if self.device.type == "cpu" else t.to(self.device, non_blocking=True)

    # ------------------------------------------------------------------ views
    def member(self, index: int) -> MemberView:
        """Member ``index`` as one agent (see :class:`MemberView`); made once and kept."""
        view = self._views.get(index)
        if view is None:
            if not 0 <= index < self.n_members:
                raise IndexError(f"member {index} out of range for a population of {self.n_members}")
            view = self._views[index] = MemberView(self, index)
        return view

    # ------------------------------------------------------------------ the training loop
    def learn(
        self,
        total_timesteps: int,
        callback: PopulationCallback | None = None,
        reset_num_timesteps: bool = True,
    ) -> Population:
        """Train every member for ``total_timesteps`` env steps (SB3's ``learn`` semantics).

        As in SB3, training proceeds in iterations of ``train_freq`` env steps, so the last
        iteration may pass ``total_timesteps``; the exploration schedule runs over
        ``total_timesteps``.
        """
        cb = callback or PopulationCallback()
        if reset_num_timesteps:
            self.num_timesteps = 0
        self._total_timesteps = int(total_timesteps) + self.num_timesteps
        if reset_num_timesteps or self._obs is None:
            self._reset_envs()
        cb.on_training_start(self)
        s = self.settings
        gradient_steps = s.gradient_steps if s.gradient_steps > 0 else s.train_freq
        while self.num_timesteps < self._total_timesteps:
            if not self.collect(cb):
                break
            if self.num_timesteps > 0 and self.num_timesteps > s.learning_starts:
                self.train(gradient_steps)
            if cb.on_iteration_end(self) is False:
                break
        cb.on_training_end(self)
        return self

    def _reset_envs(self) -> None:
        seeds: list[int | None] | None = list(self.seeds) if self._first_reset else None
        obs, _ = self.envs.reset(seed=seeds)  # type: ignore[arg-type]
        self._first_reset = False
        self._obs = self._to_device(obs)

    def collect(self, callback: PopulationCallback) -> bool:
        """``train_freq`` env steps of every member; False when the callback stopped training."""
        return all(self.step(callback) for _ in range(self.settings.train_freq))

    def step(self, callback: PopulationCallback) -> bool:
        """One env step of every member (SB3's ``collect_rollouts`` body); False to stop."""
        s = self.settings
        obs = self._obs
        assert obs is not None, "call learn() (it resets the envs) before step()"
        explore_u, random_actions = self._explore.take()
        if self.num_timesteps < s.learning_starts:
            actions = random_actions
        else:
            q = self.net.forward(obs.unsqueeze(1), self.net.online)  # detached views: no graph
            actions = torch.where(
                explore_u < self.exploration_rate, random_actions, q.squeeze(1).argmax(dim=1)
            )
        host_actions = actions.cpu().numpy()  # the step's only device-to-host transfer
        next_obs, rewards, terminated, truncated, infos = self.envs.step(host_actions)
        self.num_timesteps += 1
        self.last_step = StepResult(host_actions, rewards, terminated, truncated, infos)
        done = terminated | truncated
        # Episodes and tasks are accounted before the callback, as SB3's Monitor records an
        # episode inside env.step: a callback sees the episodes that ended at this step.
        switches = len(self.tracker.switches)
        self.tracker.update(self.num_timesteps, rewards, done, infos)
        if len(self.tracker.switches) > switches:
            for switch in self.tracker.switches[switches:]:
                for on_switch in self.task_switch_hooks:
                    on_switch(switch.member, switch.task_id)
        if callback.on_step(self) is False:
            return False

        # Store: TimeLimit truncation is an episode end but no terminal (SB3's timeouts).
        flags = self._flags
        flags[0], flags[1] = rewards, done
        np.logical_and(truncated, ~terminated, out=flags[2], casting="unsafe")
        next_t = self._to_device(next_obs)
        pos = self.replay.add(obs, next_t, actions, self._to_device(flags))
        if done.any():
            # The vector env has reset these members: their true last observation is in the info.
            ended = np.flatnonzero(done)
            final = np.stack([np.asarray(o) for o in infos["final_obs"][ended]])
            self.replay.next_observations[self._to_device(ended), pos] = self._to_device(final)
        self._obs = next_t

        # SB3's DQN._on_step: target update every target_update_interval calls, then ε.
        self._n_calls += 1
        if self._n_calls % s.target_update_interval == 0:
            self.net.copy_to_target(s.tau)
        progress_remaining = 1.0 - float(self.num_timesteps) / float(self._total_timesteps)
        self.exploration_rate = s.exploration_rate(progress_remaining)
        return True

    def train(self, gradient_steps: int) -> None:
        """``gradient_steps`` updates of every member, each on its own replay batch."""
        for _ in range(gradient_steps):
            (raw,) = self._replay_rng.take()
            self.update(self.replay.sample(self.replay.indices(raw)))

    def update(self, batch: ReplaySamples) -> Tensor:
        """One DQN gradient step of every member on ``batch`` (SB3's ``DQN.train`` body).

        Returns:
            The members' TD losses ``(S,)`` (device tensor; no host synchronisation).
        """
        s = self.settings
        net = self.net
        target_q_values = self.td_target(batch)

        features, all_q_values = net.features_and_q(batch.observations, net.prepare(net.params))
        current_q_values = torch.gather(all_q_values, dim=2, index=batch.actions)
        losses = F.smooth_l1_loss(current_q_values, target_q_values, reduction="none").mean(dim=(1, 2))
        loss = losses.sum()  # members' parameters are disjoint: each gets its own gradient
        for term in self.loss_terms:
            extra = term(batch, features, all_q_values)
            if extra is not None:
                loss = loss + extra.sum()

        self.optimizer.zero_grad()
        loss.backward()
        grad_norms = self.optimizer.clip_grad_norms(s.max_grad_norm)
        self.optimizer.step()

        losses = losses.detach()
        self.last_losses, self.last_grad_norms = losses, grad_norms
        self._loss_sum += losses
        self._grad_norm_sum += grad_norms
        self._stat_count += 1
        self.n_updates += 1
        for hook in self.after_update_hooks:
            hook(self.n_updates)
        return losses

    @torch.no_grad()
    def td_target(self, batch: ReplaySamples) -> Tensor:
        """The members' TD targets ``(S, B, 1)`` of a batch (no gradient), as PlasticDQN's ``td_target``.

        ``y = r + (1 − d) · γⁿ · Q_target(s', a*)`` with ``a* = argmax_a' Q_target(s', a')`` (DQN,
        SB3) or, with ``double_dqn``, ``a* = argmax_a' Q_online(s', a')`` (Double DQN: the online
        network selects, the target network evaluates). ``γⁿ`` is the batch's discounts (n-step
        replay) or ``gamma``.
        """
        s = self.settings
        net = self.net
        discounts = batch.discounts if batch.discounts is not None else s.gamma
        next_q_values = net.forward(batch.next_observations, net.target)
        if s.double_dqn:
            next_actions = net.forward(batch.next_observations, net.online).argmax(dim=2, keepdim=True)
            next_q_values = torch.gather(next_q_values, dim=2, index=next_actions)
        else:
            next_q_values, _ = next_q_values.max(dim=2)
            next_q_values = next_q_values.unsqueeze(-1)
        return batch.rewards + (1 - batch.dones) * discounts * next_q_values

    # ------------------------------------------------------------------ statistics
    def pop_train_stats(self) -> dict[str, np.ndarray]:
        """Per-member mean TD loss and gradient norm since the last call (NaN without updates),
        and with TRAC each member's current scale ``train/trac_scale`` (as PlasticDQN logs its
        optimizer's ``log_values()``); one host transfer."""
        trac = self.optimizer.trac
        rows = [self._loss_sum, self._grad_norm_sum]
        if trac is not None:
            rows.append(trac.scale)
        values = torch.stack(rows).cpu().numpy()
        if self._stat_count:
            values[:2] /= self._stat_count
        else:
            values[:2] = math.nan
        self._loss_sum.zero_()
        self._grad_norm_sum.zero_()
        self._stat_count = 0
        stats = {"train/loss": values[0], "train/grad_norm": values[1]}
        if trac is not None:
            stats["train/trac_scale"] = values[2]
        return stats

    def close(self) -> None:
        """Close the members' envs."""
        self.envs.close()

    # ------------------------------------------------------------------ member failures
    def fail_member(self, index: int, error: BaseException | str) -> None:
        """Record that member ``index`` failed in code of its own (an intervention, a metric, ...).

        The member keeps training in the stack — its slices never mix with the others' (per-member
        losses, gradients, clipping and Adam), so a NaN there stays there — but whoever writes its
        results discards them. The first failure of a member is kept.

        Args:
            index: the member.
            error: the exception (its traceback is kept) or a one-line reason.
        """
        if index not in self.failures:
            self.failures[index] = MemberFailure.of(error)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The whole training state at an iteration end, for exact resume (host copies of tensors).

        Stacked online, target and initial parameters, the Adam state, the replay contents, the
        random streams, the members' envs (the vector env object itself, with its envs' task
        schedules and RNGs), the episode tracker, the counters and the statistics since the last
        :meth:`pop_train_stats`. Interventions keep their own state.
        """
        return {
            "seeds": list(self.seeds),
            "params": [p.detach().cpu().clone() for p in self.net.params],
            "target_params": [p.cpu().clone() for p in self.net.target_params],
            "init_params": [p.cpu().clone() for p in self.init_params],
            "optimizer": {k: _to_cpu(v) for k, v in self.optimizer.state_dict().items()},
            "replay": self.replay.state_dict(),
            "explore": self._explore.state_dict(),
            "replay_rng": self._replay_rng.state_dict(),
            "envs": self.envs,
            "tracker": self.tracker,
            "obs": None if self._obs is None else self._obs.cpu(),
            "counters": {
                "num_timesteps": self.num_timesteps,
                "n_updates": self.n_updates,
                "exploration_rate": self.exploration_rate,
                "n_calls": self._n_calls,
                "total_timesteps": self._total_timesteps,
                "first_reset": self._first_reset,
                "stat_count": self._stat_count,
            },
            "loss_sum": self._loss_sum.cpu(),
            "grad_norm_sum": self._grad_norm_sum.cpu(),
            "failures": dict(self.failures),
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` into this population (built with the same settings and seeds).

        Tensors are copied in place, so member views stay valid; the envs are replaced by the
        checkpoint's (the ones built with the population are closed).

        Raises:
            ValueError: the state is of a population with other seeds.
        """
        if list(state["seeds"]) != list(self.seeds):
            raise ValueError(f"checkpoint of seeds {state['seeds']}, population of seeds {self.seeds}")
        for dst, src in zip(self.net.params, state["params"], strict=True):
            dst.detach().copy_(src)
        for dst, src in zip(self.net.target_params, state["target_params"], strict=True):
            dst.copy_(src)
        for dst, src in zip(self.init_params, state["init_params"], strict=True):
            dst.copy_(src)
        self.optimizer.load_state_dict(state["optimizer"])
        self.replay.load_state_dict(state["replay"])
        self._explore.load_state_dict(state["explore"])
        self._replay_rng.load_state_dict(state["replay_rng"])
        if state["envs"] is not self.envs:
            self.envs.close()
            self.envs = state["envs"]
        self.tracker = state["tracker"]
        self._obs = None if state["obs"] is None else state["obs"].to(self.device)
        c = state["counters"]
        self.num_timesteps, self.n_updates = int(c["num_timesteps"]), int(c["n_updates"])
        self.exploration_rate = float(c["exploration_rate"])
        self._n_calls, self._total_timesteps = int(c["n_calls"]), int(c["total_timesteps"])
        self._first_reset, self._stat_count = bool(c["first_reset"]), int(c["stat_count"])
        self._loss_sum.copy_(state["loss_sum"])
        self._grad_norm_sum.copy_(state["grad_norm_sum"])
        self.failures = dict(state["failures"])


@dataclass(frozen=True)
class MemberFailure:
    """Why a member failed: one line, and the traceback when there was an exception."""

    error: str
    traceback: str = ""

    @classmethod
    def of(cls, error: BaseException | str) -> MemberFailure:
        """The failure of an exception (with its traceback) or of a one-line reason."""
        if isinstance(error, str):
            return cls(error.splitlines()[0] if error else "failed")
        text = f"{type(error).__name__}: {error}".splitlines()[0] if str(error) else type(error).__name__
        return cls(text, "".join(traceback.format_exception(type(error), error, error.__traceback__)))


def _to_cpu(value: Any) -> Any:
    """Tensors (also inside lists, tuples and dicts) moved to the host; anything else as it is."""
    if isinstance(value, Tensor):
        return value.cpu()
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    return value


#: TRAC's own keyword arguments (``rlplast.agents.trac.TRACMixin``) → :class:`StackedTRAC`'s.
_TRAC_KWARGS = {"trac_betas": "betas", "trac_s_init": "s_init", "trac_eps": "eps"}


def _optimizer_kwargs(
    optimizer_class: Any, optimizer_kwargs: Mapping[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The stacked optimizer of SB3's ``optimizer_class`` / ``optimizer_kwargs``, as PlasticDQN builds them.

    ``torch.optim.Adam`` (SB3's default) or ``AdamW`` — decoupled weight decay, torch's default
    0.01 unless ``weight_decay`` is given —, or TRAC around either (``TRACAdam``, ``TRACAdamW``);
    ``betas``, ``eps`` and the implementation (``fused=True`` → torch's fused kernel, else the
    foreach arithmetic). Anything else is refused.

    Returns:
        :class:`StackedAdam`'s keyword arguments, and :class:`StackedTRAC`'s (None without TRAC).

    Raises:
        UserError: another optimizer class, Adam's (coupled, L2) ``weight_decay``, or an option the
            stacked optimizer does not implement.
    """
    from rlplast.agents.trac import TRACAdam, TRACAdamW

    classes: dict[Any, tuple[bool, bool]] = {  # class -> (decoupled weight decay, TRAC)
        None: (False, False),
        torch.optim.Adam: (False, False),
        torch.optim.AdamW: (True, False),
        TRACAdam: (False, True),
        TRACAdamW: (True, True),
    }
    if optimizer_class not in classes:
        name = getattr(optimizer_class, "__name__", repr(optimizer_class))
        raise UserError(
            f"population: optimizer_class {name} is not supported by the stacked optimizer; valid: "
            "Adam, AdamW, TRACAdam, TRACAdamW"
        )
    decoupled, use_trac = classes[optimizer_class]
    out: dict[str, Any] = {"weight_decay": 0.01 if decoupled else 0.0}  # torch's defaults
    trac: dict[str, Any] | None = {} if use_trac else None
    for key, value in dict(optimizer_kwargs or {}).items():
        if key in ("betas", "eps"):
            out[key] = value
        elif key == "fused":
            out["impl"] = "fused" if value else "foreach"
        elif key == "weight_decay":
            if value and not decoupled:
                raise UserError(
                    "population: Adam's (L2) weight_decay is not supported by the stacked optimizer; "
                    "use AdamW's decoupled weight decay (agent.weight_decay)"
                )
            out[key] = float(value)
        elif key in _TRAC_KWARGS and trac is not None:
            trac[_TRAC_KWARGS[key]] = value
        elif key not in ("foreach", "capturable", "differentiable"):
            valid = "betas, eps, fused" + (", weight_decay" if decoupled else "")
            valid += ", " + ", ".join(_TRAC_KWARGS) if trac is not None else ""
            raise UserError(
                f"population: optimizer option '{key}' is not supported by the stacked optimizer; "
                f"valid: {valid}"
            )
    return out, trac
