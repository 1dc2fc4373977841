"""Population runs: S members trained in one process, each writing an ordinary run directory.

:func:`run_population` trains the members of one config (they differ only in ``train.seed``) as
one :class:`~rlplast.population.Population` and writes, for each member, what ``rlplast train``
writes: ``config.yaml`` (with the member's seed), ``metrics.csv``, ``episodes.csv``, ``tb/``,
``summary.json`` and a ``model.zip`` that ``PlasticDQN.load`` opens. The files are written by the
single run's own callbacks (:class:`~rlplast.callbacks.EpisodeLog`,
:class:`~rlplast.callbacks.LogRows`, :class:`~rlplast.callbacks.Metrics`,
:class:`~rlplast.callbacks.NonFiniteGuard`) and summary (:func:`rlplast.train.run_summary`), each
given a :class:`MemberModel`: the member seen as the PlasticDQN those callbacks read.

The population's own state — the stacked networks, Adam, replay, random streams, envs, the
members' callback states — lives in a **population directory** beside the members' run
directories: ``population.json`` (the members) and ``checkpoints/ckpt-<step>.pkl``, written at
iteration ends every ``checkpoint.every_steps`` and on SIGTERM/SIGINT, atomically, with a
checksum and signed with this user's checkpoint key (:mod:`rlplast.checkpoint`: tensors, arrays and
plain values in the state part; the envs, the episode tracker and the interventions' pickled
attributes in the objects part, loaded only from checkpoints this user wrote).
:func:`resume_population` continues from the latest valid one exactly (on the CPU, even after
SIGKILL).

A member whose own code fails — non-finite values with ``train.on_nonfinite: stop``, an exception
in its metrics or interventions — is marked failed (``error.txt`` in its run directory) while the
others train on; its slices keep training in the stack, unread.

Example:
    >>> from rlplast.config import load_config
    >>> cfg = load_config("configs/quickstart.yaml")
    >>> cfgs = [load_config("configs/quickstart.yaml", [f"train.seed={s}"]) for s in range(4)]
    >>> result = run_population(cfgs, [f"runs/q-s{s}" for s in range(4)], "runs/q-population")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import json
import signal
import sys
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import torch

from rlplast.config import Config, dump_config, first_difference
from rlplast.errors import TrainingStopped, UserError
from rlplast.io import atomic_write_json, atomic_write_text
from rlplast.population.engine import MemberFailure, Population, PopulationCallback
from rlplast.population.replay import check_replay_fits

if TYPE_CHECKING:
    from stable_baselines3.dqn.policies import QNetwork

    from rlplast.callbacks import EpisodeLog, LogRows, MetricsProbe, StepRecord, StopRequest
    from rlplast.runlog import RunLogger

__all__ = [
    "POPULATION_FILE",
    "MemberModel",
    "MemberResult",
    "PopulationResult",
    "check_population",
    "population_resumable",
    "resume_population",
    "run_population",
]

#: The file in a population directory that names its members.
POPULATION_FILE = "population.json"


# ------------------------------------------------------------------------------------ checks
def _shared_part(cfg: Config) -> dict[str, Any]:
    """What the members of a population share: the config apart from the seed and interventions."""
    data = cfg.to_dict()
    data["train"].pop("seed", None)
    data.pop("interventions", None)
    return data


def check_population(cfgs: Sequence[Config]) -> tuple[int, torch.device] | None:
    """Refuse members the population engine cannot train together, before anything is written.

    Checks what ``rlplast train`` checks (:class:`rlplast.train.Preflight`) on every distinct
    member config, then what the engine needs: at least one member, configs that differ only in
    ``train.seed`` and ``interventions`` (each member has its own), agent settings the engine
    honours, a network it can stack, interventions it can run per member, and replay buffers that
    fit in the available memory (estimated before anything is allocated).

    Returns:
        The replay buffers' bytes and the device they go to, or None when the env could not be
        made to tell (its constructor raised: the population reports that as its failure).

    Raises:
        UserError: one line saying what is wrong.
    """
    from rlplast.population.nets import StackedQNetwork, build_member_networks
    from rlplast.train import Preflight, make_env, policy_kwargs, resolve_device

    if len(cfgs) < 1:
        raise UserError(f"population: needs at least 1 member, got {len(cfgs)}")
    first = _shared_part(cfgs[0])
    for i, cfg in enumerate(cfgs[1:], start=1):
        difference = first_difference(_shared_part(cfg), first)
        if difference is not None:
            where, now, then = difference
            raise UserError(
                f"population: member {i} (seed {cfg.train.seed}) differs from member 0 at {where}: "
                f"{now!r} vs {then!r}; a population's members differ only in train.seed and interventions"
            )
    checks = Preflight()  # each distinct setting checked once
    for cfg in cfgs:
        checks(cfg)
        check_interventions(cfg)
    cfg = cfgs[0]
    check_agent_options(cfg)
    try:
        env = make_env(cfg)
    except UserError:
        raise
    except Exception:  # noqa: BLE001 - not bad input: the population reports it as a failure
        return None
    try:
        obs_space, action_space = env.observation_space, env.action_space
    finally:
        env.close()
    device = resolve_device(cfg.train.device)
    shape = tuple(obs_space.shape or ())
    dtype = np.dtype(obs_space.dtype) if obs_space.dtype is not None else np.dtype(np.float32)
    need = check_replay_fits(shape, dtype, cfg.agent.buffer_size, len(cfgs), device)
    # The network: a layer the stacked operations cannot take is refused here (one member, CPU).
    nets = build_member_networks(cfg.agent.policy, obs_space, action_space, policy_kwargs(cfg), [0])
    StackedQNetwork(nets, "cpu")
    return need, torch.device(device)


#: Agent settings the population engine honours; any other agent key must keep its default.
ENGINE_AGENT_KEYS = frozenset(
    {
        "policy",
        "learning_rate",
        "buffer_size",
        "learning_starts",
        "batch_size",
        "tau",
        "gamma",
        "train_freq",
        "gradient_steps",
        "n_steps",
        "target_update_interval",
        "exploration_fraction",
        "exploration_initial_eps",
        "exploration_final_eps",
        "max_grad_norm",
        "stats_window_size",
        "net_arch",
        "activation",
        "features_extractor",
        "optimizer_impl",
        "layer_norm",
        "weight_decay",
        "optimizer",
        "double_dqn",
    }
)


def check_agent_options(cfg: Config) -> None:
    """Refuse an ``agent`` setting the population engine would ignore (it keeps its default).

    Raises:
        UserError: an agent key outside :data:`ENGINE_AGENT_KEYS` with a non-default value.
    """
    from rlplast.config import AgentConfig

    default = dataclasses.asdict(AgentConfig())
    for f in dataclasses.fields(cfg.agent):
        value = getattr(cfg.agent, f.name)
        if f.name not in ENGINE_AGENT_KEYS and value != default.get(f.name):
            raise UserError(
                f"agent.{f.name}: the population engine does not support this option yet (got {value!r}); "
                "use train.engine: single for this config"
            )


def check_interventions(cfg: Config) -> None:
    """Refuse interventions the population engine cannot run per member.

    Raises:
        UserError: an intervention that cannot run per member (or per-member interventions not
            available in this version).
    """
    if not cfg.interventions:
        return
    hooks = _intervention_module()
    if hooks is None:
        names = ", ".join(str(spec.get("name")) for spec in cfg.interventions)
        raise UserError(
            f"interventions ({names}): this version of the population engine runs no interventions "
            "per member; use train.engine: single"
        )
    hooks.build_member_interventions([dict(spec) for spec in cfg.interventions], 1)


def _intervention_module() -> Any:
    """:mod:`rlplast.population.interventions` when it exists (interventions per member)."""
    try:
        return importlib.import_module("rlplast.population.interventions")
    except ModuleNotFoundError:
        return None


# ------------------------------------------------------------------------------------ one member
class MemberModel:
    """Member ``index`` of a population as the PlasticDQN that a run's callbacks read.

    The callbacks of ``rlplast train`` (episodes, rows, metrics, the non-finite guard) read a
    handful of PlasticDQN accessors; this gives them for one member: its networks (a
    :class:`~rlplast.population.MemberView`), the population's counters, the member's slice of the
    replay buffer and its training statistics of the current logging row (set by the population
    run before the row is written, from one :meth:`Population.pop_train_stats` for all members).

    Args:
        population: the population.
        index: the member.
        stats_window_size: episodes the rollout means average over (``agent.stats_window_size``).
    """

    def __init__(self, population: Population, index: int, stats_window_size: int) -> None:
        self.population = population
        self.index = index
        self.view = population.member(index)
        self.q_net: QNetwork = self.view.q_net
        self.q_net_target: QNetwork = self.view.q_net_target
        self.device = population.device
        self.stats_window_size = stats_window_size
        self.schedule_timesteps: int | None = None
        self.logger: Any = None
        #: This member's ``train/…`` values (and intervention log values) for the next row.
        self.row_stats: dict[str, float] = {}

    @property
    def policy(self) -> MemberModel:
        """The model itself (``policy.q_net``, ``policy.optimizer``, ``policy.training``), as
        PlasticDQN's code reads ``model.policy``."""
        return self

    @property
    def optimizer(self) -> Any:
        """The member's Adam state (``policy.optimizer``)."""
        return self.view.optimizer

    @property
    def training(self) -> bool:
        """Whether the online network is in training mode (``policy.training``)."""
        return bool(self.q_net.training)

    def set_training_mode(self, mode: bool) -> None:
        """Put the online network in training or evaluation mode (SB3's ``policy.set_training_mode``)."""
        self.q_net.train(mode)

    @torch.no_grad()
    def predict(
        self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = False
    ) -> tuple[np.ndarray, Any]:
        """The member's actions, as SB3's ``DQN.predict``: greedy with ``deterministic=True``;
        otherwise ε-greedy with the population's current ε (:attr:`exploration_rate`), drawing as
        SB3 does from the global NumPy generator and the action space (one random action per
        observation of a batch, all or none). Training's own acting does not go through here.
        """
        obs = torch.as_tensor(np.asarray(observation), device=self.device)
        single = obs.dim() == len(self.q_net.observation_space.shape or ())
        if not deterministic and np.random.rand() < self.exploration_rate:
            space = self.q_net.action_space
            if single:
                return np.array(space.sample()), state
            return np.array([space.sample() for _ in range(obs.shape[0])]), state
        q_values = self.q_net(obs.unsqueeze(0) if single else obs)
        actions = q_values.argmax(dim=1).reshape(-1).cpu().numpy()
        return (actions[0] if single else actions), state

    @property
    def num_timesteps(self) -> int:
        """Env steps so far (every member's)."""
        return self.population.num_timesteps

    @property
    def n_updates(self) -> int:
        """Gradient updates so far (every member's)."""
        return self.population.n_updates

    @property
    def exploration_rate(self) -> float:
        """The current ε (every member's)."""
        return self.population.exploration_rate

    def get_env(self) -> None:
        """No SB3 env: the member's env lives in the population's vector env."""
        return None

    def replay_size(self) -> int:
        """Transitions stored in the member's replay buffer (the view's)."""
        return self.view.replay_size()

    def replay_states(self, indices: np.ndarray, env_indices: Any = 0, normalize: bool = False) -> Any:
        """The member's stored observations at ``indices`` and the actions taken in them (the view's)."""
        return self.view.replay_states(indices, env_indices, normalize)

    def replay_sample(self, batch_size: int, seed: int) -> Any:
        """A minibatch of the member's replay, drawn as PlasticDQN draws one (the view's)."""
        return self.view.replay_sample(batch_size, seed)

    def td_target(self, replay_data: Any) -> torch.Tensor:
        """The member's TD targets of a batch (the view's; DQN or Double DQN as configured)."""
        return self.view.td_target(replay_data)

    def pop_train_stats(self) -> dict[str, float]:
        """The member's values for the current row (see :attr:`row_stats`)."""
        return dict(self.row_stats)


class _Member:
    """One member's writers (:class:`~rlplast.callbacks.RunWriters`, as ``rlplast train`` builds
    them) on a :class:`MemberModel`.

    A member that failed before (resumed from a checkpoint that records its failure) gets no
    writers: its run directory stays as it was.
    """

    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        model: MemberModel,
        resume_state: dict[str, Any] | None,
        failure: MemberFailure | None = None,
    ) -> None:
        from rlplast.callbacks import RunWriters, StopRequest
        from rlplast.runlog import RunLogger
        from rlplast.train import make_env, metrics_probe

        self.cfg = cfg
        self.run_dir = run_dir
        self.name = run_dir.name
        self.model = model
        self.failure = failure
        self.callbacks: list[Any] = []
        if failure is not None:
            return
        resume_step = None if resume_state is None else int(resume_state["last_log_step"])
        self.run_logger: RunLogger = RunLogger(
            run_dir, tensorboard=cfg.output.tensorboard, resume_step=resume_step
        )
        self.stop: StopRequest = StopRequest()
        self.probe: MetricsProbe | None = metrics_probe(cfg, quiet=True)
        self.writers = RunWriters.build(
            cfg,
            run_dir,
            self.run_logger,
            cfg.agent.stats_window_size,
            self.probe,
            self.stop,
            make_env=lambda: make_env(cfg),
        )
        self.record: StepRecord = self.writers.record
        self.episodes: EpisodeLog = self.writers.episodes
        self.rows: LogRows = self.writers.rows
        self.callbacks = self.writers.callbacks
        self.on_task_switch = [c.on_task_switch for c in self.callbacks if hasattr(c, "on_task_switch")]
        for callback in self.callbacks:
            callback.init_callback(model)
        if resume_state is not None:
            for part in self.writers.parts:
                part.load_state_dict(resume_state)

    def state_dict(self) -> dict[str, Any]:
        """This member's callback state (the flat dict a single run's checkpoint keeps)."""
        state: dict[str, Any] = {}
        for part in self.writers.parts:
            state.update(part.state_dict())
        return state

    @property
    def active(self) -> bool:
        """Not failed: its files are still written."""
        return self.failure is None

    def close(self) -> None:
        """Close the TensorBoard writer and the evaluation env (a member that failed before has none)."""
        if self.callbacks:
            self.run_logger.close()
            self.writers.close()


# ------------------------------------------------------------------------------------ results
@dataclasses.dataclass
class MemberResult:
    """How one member ended.

    Attributes:
        name: the run directory's name.
        run_dir: the member's run directory.
        ok: finished, ``summary.json`` written.
        summary: the summary (``ok`` only).
        error: one line saying why it failed (the traceback is in ``error.txt``).
    """

    name: str
    run_dir: Path
    ok: bool
    summary: dict[str, Any] | None = None
    error: str | None = None


@dataclasses.dataclass
class PopulationResult:
    """What :func:`run_population` / :func:`resume_population` did: one result per member, in order."""

    members: list[MemberResult]
    wall_time_s: float = 0.0

    @property
    def failed(self) -> list[MemberResult]:
        """The members that failed."""
        return [m for m in self.members if not m.ok]


# ------------------------------------------------------------------------------------ the run
class _PopulationRun(PopulationCallback):
    """Drives the members' callbacks from the population's loop and writes the population's checkpoints."""

    def __init__(
        self,
        population: Population,
        members: list[_Member],
        population_dir: Path,
        config_texts: list[str],
        interventions: Any,
        stop: StopRequest,
    ) -> None:
        cfg = members[0].cfg
        self.population = population
        self.members = members
        self.folder = population_dir / "checkpoints"
        self.config_texts = config_texts
        self.interventions = interventions
        self.stop = stop
        self.log_every = cfg.train.log_every_steps
        self.every = cfg.checkpoint.every_steps
        self.keep = cfg.checkpoint.keep
        self.total_steps = cfg.train.total_steps
        self.last_row_step = 0
        self.last_checkpoint_step = 0
        #: Each member's task as last seen (-1: none reported yet).
        self.tasks = population.tracker.task.copy()

    # ------------------------------------------------------------------ population events
    def on_training_start(self, population: Population) -> None:
        for member in self.members:
            if member.active:
                for callback in member.callbacks:
                    callback.on_training_start({}, {})

    def on_step(self, population: Population) -> bool:
        tracker = population.tracker
        tasks = tracker.task
        if not np.array_equal(tasks, self.tasks):  # a member's env reported a (new) task
            self.switch_tasks(tasks)
        episodes = tracker.pop_episodes()
        for episode in episodes:
            member = self.members[episode.member]
            if member.active:
                member.episodes.on_episode_end(episode.step, episode.episode_return, episode.length)
        step = population.num_timesteps
        if step // self.log_every > self.last_row_step // self.log_every:
            self.write_rows()
        return True

    def switch_tasks(self, tasks: np.ndarray) -> None:
        """Record each member's new task; a change after its first task is a switch (as
        :class:`~rlplast.callbacks.RunCallbacks` reads it from a single run's ``infos``)."""
        for i in np.flatnonzero((tasks != self.tasks) & (tasks >= 0)):
            member = self.members[i]
            first = self.tasks[i] < 0
            if member.active:
                member.record.task_id = int(tasks[i])
                if not first:
                    for on_switch in member.on_task_switch:
                        self._guarded(member, lambda f=on_switch, t=int(tasks[i]): f(t))
        self.tasks = tasks.copy()

    def on_iteration_end(self, population: Population) -> bool:
        self.collect_failures()
        from rlplast.callbacks import checkpoint_due

        step = population.num_timesteps
        if not any(m.active for m in self.members):
            return False  # nothing left to train
        if checkpoint_due(step, self.last_checkpoint_step, self.every, self.total_steps) or self.stop.reason:
            self.save(step)
        return self.stop.reason is None

    # ------------------------------------------------------------------ rows
    def _set_row_stats(self) -> None:
        population = self.population
        stats = population.pop_train_stats()
        n_updates = float(population.n_updates)
        for member in self.members:
            i = member.model.index
            values = {
                "train/loss": float(stats["train/loss"][i]),
                "train/grad_norm": float(stats["train/grad_norm"][i]),
                "train/n_updates": n_updates,
            }
            if "train/trac_scale" in stats:  # TRAC's S, as PlasticDQN logs its optimizer's values
                values["train/trac_scale"] = float(stats["train/trac_scale"][i])
            if member.active and self.interventions is not None:
                values.update(self.interventions.log_values(i))
            member.model.row_stats = values

    def write_rows(self) -> None:
        """A logging row for every active member (one statistics transfer for all)."""
        self.collect_failures()
        self._set_row_stats()
        for member in self.members:
            if member.active:
                self._guarded(member, member.rows.on_step)
        self.last_row_step = self.population.num_timesteps

    def _guarded(self, member: _Member, fn: Any) -> None:
        """Run one member's callback; its exception or non-finite stop fails that member only."""
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - a member's own failure, isolated
            self.population.fail_member(member.model.index, exc)
        if member.stop.reason is not None and member.model.index not in self.population.failures:
            self.population.fail_member(member.model.index, member.stop.reason)
        self.collect_failures()

    def collect_failures(self) -> None:
        """Mark the members the population recorded as failed: ``error.txt``, no more rows."""
        for index, failure in self.population.failures.items():
            member = self.members[index]
            if member.active:
                member.failure = failure
                text = failure.traceback or failure.error + "\n"
                atomic_write_text(member.run_dir / "error.txt", text)
                member.close()

    # ------------------------------------------------------------------ checkpoints
    def save(self, step: int) -> Path:
        """Write the population's checkpoint of ``step`` (members' ``episodes.csv`` flushed first)."""
        from rlplast import __version__
        from rlplast.checkpoint import Pickled, rng_state, save_checkpoint

        for member in self.members:
            if member.active:
                member.episodes.flush()
        self.last_checkpoint_step = step
        payload = {
            "step": step,
            "population": self.population.state_dict(),
            "interventions": None if self.interventions is None else self.interventions.state_dict(),
            # A pickle (with references of its own): the checkpoint's objects part.
            "intervention_objects": None
            if self.interventions is None
            else Pickled(intervention_objects(self.population)),
            "members": [
                {
                    "name": m.name,
                    "state": m.state_dict() if m.active else None,
                    "failure": None if m.failure is None else dataclasses.asdict(m.failure),
                }
                for m in self.members
            ],
            "run": {"last_row_step": self.last_row_step, "last_checkpoint_step": step},
            "rng": rng_state(),
            "rlplast": __version__,
            "configs": list(self.config_texts),
        }
        return save_checkpoint(self.folder, step, payload, keep=self.keep)

    # ------------------------------------------------------------------ the end
    def finish(self, resumed: bool) -> list[MemberResult]:
        """Final rows, ``model.zip`` and ``summary.json`` of every member still active."""
        from rlplast.train import run_summary

        population = self.population
        if population.num_timesteps != self.last_row_step:
            self.collect_failures()
            self._set_row_stats()
        for member in self.members:
            if member.active:
                for callback in member.callbacks:
                    self._guarded(member, callback.on_training_end)
        cfg = self.members[0].cfg
        active = [m for m in self.members if m.active]
        if cfg.output.save_model and active:
            save_member_models(
                population, [(m.model.index, m.cfg, m.run_dir / "model.zip", m) for m in active]
            )
        results = []
        for member in self.members:
            member.close()
            if not member.active:
                assert member.failure is not None
                results.append(MemberResult(member.name, member.run_dir, False, error=member.failure.error))
                continue
            summary = run_summary(
                member.cfg,
                member.episodes,
                member.rows.elapsed(),
                steps=population.num_timesteps,
                updates=population.n_updates,
                window=member.cfg.agent.stats_window_size,
                device=str(population.device),
                probe=member.probe,
                resumed=resumed,
            )
            summary["engine"] = "population"
            summary["population_size"] = population.n_members
            atomic_write_json(member.run_dir / "summary.json", summary)
            results.append(MemberResult(member.name, member.run_dir, True, summary=summary))
        return results


def save_member_models(population: Population, members: Sequence[tuple[int, Config, Path, Any]]) -> None:
    """Write each member's ``model.zip``: a PlasticDQN of its config holding its networks.

    One PlasticDQN is built (with the env of the first member's config), then for each member its
    online and target parameters and its Adam state are copied in, its seed, step count, ε and
    last episodes set, and the model saved, so ``PlasticDQN.load`` gives an agent that acts as the
    member and can be trained on as an ordinary stable-baselines3 model.

    Args:
        population: the population.
        members: ``(index, config, path, member)`` of each model to write; ``member`` is the
            member's writers (its recent episodes go into the model's ``ep_info_buffer``) or None.
    """
    from rlplast.checkpoint import rng_state, set_rng_state
    from rlplast.train import build_model, make_env, resolve_device

    if not members:
        return
    cfg = members[0][1]
    saved = rng_state()  # building a PlasticDQN seeds the global generators
    env = make_env(cfg)
    try:
        model = build_model(cfg, env, resolve_device(cfg.train.device))
        for index, member_cfg, path, writers in members:
            _load_member_into(model, population, index)
            model.seed = member_cfg.train.seed
            model.num_timesteps = population.num_timesteps
            model.exploration_rate = population.exploration_rate
            if writers is not None:
                model.ep_info_buffer = deque(
                    ({"r": r, "l": n, "t": 0.0} for r, n in writers.episodes.window),
                    maxlen=member_cfg.agent.stats_window_size,
                )
            model.save(path)
    finally:
        env.close()
        set_rng_state(saved)


@torch.no_grad()
def _load_member_into(model: Any, population: Population, index: int) -> None:
    """Copy member ``index``'s online and target parameters and optimizer state (Adam's, and
    TRAC's ``θ_ref``, ``θ_base`` and tuner) into ``model``."""
    online = list(model.q_net.parameters())
    for dst, src in zip(online, population.net.params, strict=True):
        dst.copy_(src.detach()[index])
    for dst, src in zip(model.q_net_target.parameters(), population.net.target_params, strict=True):
        dst.copy_(src[index])
    optimizer = model.policy.optimizer
    fused = bool(optimizer.defaults.get("fused"))
    adam = population.optimizer
    for k, p in enumerate(online):
        step = float(adam.steps[k, index])
        if step == 0:
            optimizer.state.pop(p, None)
            continue
        optimizer.state[p] = {
            "step": torch.tensor(step, dtype=torch.float32, device=p.device if fused else "cpu"),
            "exp_avg": adam.exp_avg[k][index].detach().clone().to(p.device),
            "exp_avg_sq": adam.exp_avg_sq[k][index].detach().clone().to(p.device),
        }
        if adam.trac is not None:
            optimizer.state[p]["trac_ref"] = adam.trac.refs[k][index].clone().to(p.device)
            optimizer.state[p]["trac_base"] = adam.trac.bases[k][index].clone().to(p.device)
    trac = adam.trac
    if trac is not None:  # TRAC's optimizer-wide entry (rlplast.agents.trac), the member's row
        device = online[0].device
        optimizer.state["trac"] = {
            "betas": trac.betas.clone().to(device),
            "v": trac.v[index].clone().to(device),
            "sigma": trac.sigma[index].clone().to(device),
            "s": trac.s[index].clone().to(device),
            "scale": trac.scale[index].clone().to(device),
        }


# ------------------------------------------------------------------------------------ entry points
def _config_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _members_record(config_texts: Sequence[str], run_dirs: Sequence[Path]) -> list[dict[str, Any]]:
    return [
        {"name": d.name, "run_dir": str(d), "config_hash": _config_hash(t)}
        for t, d in zip(config_texts, run_dirs, strict=True)
    ]


def population_resumable(
    population_dir: str | Path, config_texts: Sequence[str], run_dirs: Sequence[str | Path]
) -> bool:
    """Whether ``population_dir`` holds checkpoints of exactly these members and configs.

    A population continues from its checkpoint only when its members (run directory names) and
    their resolved configs are the ones recorded in its ``population.json``, and no member has
    finished yet.
    """
    from rlplast.checkpoint import list_checkpoints

    folder = Path(population_dir)
    dirs = [Path(d) for d in run_dirs]
    if not (folder / "checkpoints").is_dir() or not list_checkpoints(folder / "checkpoints"):
        return False
    try:
        recorded = json.loads((folder / POPULATION_FILE).read_text())
    except (OSError, ValueError):
        return False
    want = [{k: m[k] for k in ("name", "config_hash")} for m in _members_record(config_texts, dirs)]
    have = [
        {k: m.get(k) for k in ("name", "config_hash")}
        for m in recorded.get("members", [])
        if isinstance(m, dict)
    ]
    if want != have:
        return False
    return not any((d / "summary.json").exists() for d in dirs)


def run_population(
    cfgs: Sequence[Config],
    run_dirs: Sequence[str | Path],
    population_dir: str | Path,
    overwrite: bool = False,
    quiet: bool = False,
) -> PopulationResult:
    """Train the members ``cfgs`` as one population; write their run directories and checkpoints.

    Args:
        cfgs: one validated config per member, differing only in ``train.seed``.
        run_dirs: each member's run directory (created; as ``rlplast train --out``).
        population_dir: the population's directory (``population.json`` and ``checkpoints/``).
        overwrite: replace existing run directories and the population's checkpoints.
        quiet: no messages on stderr.

    Returns:
        One :class:`MemberResult` per member.

    Raises:
        UserError: bad input (nothing is written): see :func:`check_population`, and run
            directories that exist (without ``overwrite``).
        TrainingStopped: SIGTERM/SIGINT stopped training after a checkpoint (exit code 143/130).
    """
    from rlplast.checkpoint import checkpoint_key
    from rlplast.threads import set_cpu_threads
    from rlplast.train import check_run_dir, prepare_run_dir

    dirs = [Path(d) for d in run_dirs]
    if len(dirs) != len(cfgs):
        raise UserError(f"population: {len(cfgs)} configs for {len(dirs)} run directories")
    if len({d.resolve() for d in dirs}) != len(dirs):
        raise UserError("population: members need distinct run directories")
    folder = Path(population_dir)
    for d in dirs:
        check_run_dir(d, overwrite)
    check_run_dir(folder, overwrite)
    check_population(cfgs)
    cfg = cfgs[0]
    set_cpu_threads(cfg.train.torch_threads)
    checkpoint_key()  # checkpoints are signed with it: an unusable key fails before anything is written
    population = _build(cfgs)
    try:
        interventions = _interventions_of(population, cfgs)
        # Only now touch the file system.
        for d in dirs:
            prepare_run_dir(d, overwrite)
        prepare_run_dir(folder, overwrite)
        texts = [dump_config(c) for c in cfgs]
        for d, text in zip(dirs, texts, strict=True):
            atomic_write_text(d / "config.yaml", text)
        atomic_write_json(folder / POPULATION_FILE, {"members": _members_record(texts, dirs)})
        members = [
            _Member(c, d, MemberModel(population, i, c.agent.stats_window_size), None)
            for i, (c, d) in enumerate(zip(cfgs, dirs, strict=True))
        ]
        return _train(population, members, folder, texts, interventions, resumed=False, quiet=quiet)
    finally:
        population.close()


def resume_population(
    cfgs: Sequence[Config],
    run_dirs: Sequence[str | Path],
    population_dir: str | Path,
    quiet: bool = False,
    trust_checkpoint: bool = False,
) -> PopulationResult:
    """Continue a population from its latest valid checkpoint, exactly as if it had never stopped.

    The members' ``metrics.csv`` and ``episodes.csv`` continue from the checkpoint's step without
    duplicated or missing rows; members that had failed stay failed.

    Args:
        cfgs: the members' configs, as the population was started with.
        run_dirs: the members' run directories.
        population_dir: the population's directory.
        quiet: no messages on stderr.
        trust_checkpoint: load the checkpoint even when this user's key did not sign it (it holds
            pickled objects; see :mod:`rlplast.checkpoint`): only for populations you trust.

    Raises:
        UserError: no valid checkpoint, a checkpoint not signed with this user's key (without
            ``trust_checkpoint``), a checkpoint of other members or configs, or a member's
            ``metrics.csv`` / ``episodes.csv`` missing (nothing is touched).
    """
    from rlplast.checkpoint import Pickled, checkpoint_key, load_latest, set_rng_state
    from rlplast.io import csv_rows_through, truncate_csv_rows
    from rlplast.threads import set_cpu_threads

    dirs = [Path(d) for d in run_dirs]
    folder = Path(population_dir)
    texts = [dump_config(c) for c in cfgs]
    payload, path = load_latest(folder / "checkpoints", trust=trust_checkpoint)
    names = [m["name"] for m in payload["members"]]
    if names != [d.name for d in dirs] or payload["configs"] != texts:
        raise UserError(f"the checkpoints in {folder} are of other members or configs; cannot resume")
    step = int(payload["step"])
    states = [m["state"] for m in payload["members"]]
    for d, state in zip(dirs, states, strict=True):
        if state is None:
            continue  # a failed member: its files stay as they are
        for name, through in (("episodes.csv", step), ("metrics.csv", int(state["last_log_step"]))):
            if csv_rows_through(d / name, through) is None:
                raise UserError(f"{d / name} is missing or empty; cannot resume the population in {folder}")
    cfg = cfgs[0]
    set_cpu_threads(cfg.train.torch_threads)
    checkpoint_key()  # the population's next checkpoints are signed with it
    population = _build(cfgs)
    try:
        interventions = _interventions_of(population, cfgs)
        population.load_state_dict(payload["population"])
        if interventions is not None:
            interventions.load_state_dict(payload["interventions"])
            pickled = payload["intervention_objects"]  # bytes in checkpoints of the previous format
            restore_intervention_objects(
                population, pickled.data if isinstance(pickled, Pickled) else pickled
            )
        members = []
        for i, (c, d, entry) in enumerate(zip(cfgs, dirs, payload["members"], strict=True)):
            failure = entry["failure"]  # a MemberFailure in checkpoints of the previous format
            if isinstance(failure, dict):
                failure = MemberFailure(**failure)
            if failure is None:
                truncate_csv_rows(d / "episodes.csv", step)
            model = MemberModel(population, i, c.agent.stats_window_size)
            members.append(_Member(c, d, model, entry["state"], failure))
        if not quiet:
            print(
                f"rlplast: resuming the population {folder} from {path.name} (step {step})", file=sys.stderr
            )
        set_rng_state(payload["rng"])
        return _train(
            population,
            members,
            folder,
            texts,
            interventions,
            resumed=True,
            quiet=quiet,
            run_state=payload["run"],
        )
    finally:
        population.close()


# ------------------------------------------------------------------------------------ interventions
def _named_objects(population: Population) -> list[tuple[tuple[Any, ...], Any]]:
    """The population's objects that interventions may refer to, each with a key that names it.

    The key of an object is the same in every population built from the same config and seeds, so
    references pickled from one are found again in another (see :func:`intervention_objects`).
    """
    named: list[tuple[tuple[Any, ...], Any]] = [
        (("population",), population),
        (("net",), population.net),
        (("adam",), population.optimizer),
        (("replay",), population.replay),
    ]
    interventions = getattr(population, "interventions", None)
    if interventions is not None:
        named.append((("interventions",), interventions))
    for i in range(population.n_members):
        view = population.member(i)
        named += [
            (("view", i), view),
            (("member_adam", i), view.optimizer),
            (("member_adam_state", i), view.optimizer.state),
            (("member_param_groups", i), view.optimizer.param_groups),
        ]
        named += [(("init", i, k), t) for k, t in enumerate(view.init_params)]
        for which, net in (("online", view.q_net), ("target", view.q_net_target)):
            named += [((which, i, "module", n), m) for n, m in net.named_modules()]
            named += [((which, i, "param", n), p) for n, p in net.named_parameters()]
    return named


def intervention_objects(population: Population) -> bytes:
    """Every member's intervention objects as they are, pickled, with their references to the
    population (member views, their modules and parameters, Adam states, θ₀) kept as names.

    A single run's checkpoint pickles its interventions whole (every attribute: counters,
    schedules, running log values); this gives a population member the same, where an
    intervention's ``state_dict()`` alone might leave something out.
    """
    import io

    import cloudpickle

    refs = {id(obj): key for key, obj in _named_objects(population)}

    class _Pickler(cloudpickle.CloudPickler):
        def persistent_id(self, obj: Any) -> Any:
            return refs.get(id(obj))

    buffer = io.BytesIO()
    _Pickler(buffer, protocol=5).dump(population.interventions.members)  # type: ignore[attr-defined]
    return buffer.getvalue()


def restore_intervention_objects(population: Population, data: bytes) -> None:
    """Give every member's (set-up) interventions the attributes pickled by :func:`intervention_objects`,
    their references resolved to this population's objects.

    Raises:
        ValueError: the pickled interventions are not this population's (other names or counts).
    """
    import io
    import pickle

    objects = dict(_named_objects(population))

    class _Unpickler(pickle.Unpickler):
        def persistent_load(self, pid: Any) -> Any:
            return objects[tuple(pid)]

    loaded = _Unpickler(io.BytesIO(data)).load()
    live = population.interventions.members  # type: ignore[attr-defined]
    if [[iv.name for iv in m] for m in loaded] != [[iv.name for iv in m] for m in live]:
        raise ValueError("the checkpoint's interventions are not this population's")
    for live_member, loaded_member in zip(live, loaded, strict=True):
        for intervention, state in zip(live_member, loaded_member, strict=True):
            intervention.__dict__.update(state.__dict__)


class _Interventions(Protocol):
    """What the runner needs of the members' interventions (``Population.interventions``)."""

    def __len__(self) -> int: ...

    def log_values(self, member: int) -> dict[str, float]: ...

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> None: ...


def _build(cfgs: Sequence[Config]) -> Population:
    """The population of the members ``cfgs``: the first's settings, every member's seed and interventions."""
    seeds = [c.train.seed for c in cfgs]
    if all(c.interventions == cfgs[0].interventions for c in cfgs):
        return Population.from_config(cfgs[0], seeds)
    if importlib.util.find_spec("rlplast.population.interventions") is None:
        check_interventions(cfgs[0] if cfgs[0].interventions else cfgs[-1])
    per_member = [[dict(spec) for spec in c.interventions] for c in cfgs]
    return Population.from_config(cfgs[0], seeds, interventions=per_member)  # type: ignore[call-arg]


def _interventions_of(population: Population, cfgs: Sequence[Config]) -> _Interventions | None:
    """The members' interventions, set up by the population from the config (None when none).

    Raises:
        UserError: the config lists interventions and this population runs none per member.
    """
    interventions = getattr(population, "interventions", None)
    if interventions is not None and len(interventions):
        return cast("_Interventions", interventions)
    if any(c.interventions for c in cfgs):
        check_interventions(cfgs[0])  # raises the one-line refusal when none can run
        raise UserError("population: the members' interventions were not set up")
    return None


def _train(
    population: Population,
    members: list[_Member],
    folder: Path,
    texts: list[str],
    interventions: _Interventions | None,
    resumed: bool,
    quiet: bool,
    run_state: dict[str, Any] | None = None,
) -> PopulationResult:
    from rlplast.callbacks import StopRequest
    from rlplast.train import SIGNAL_EXIT_CODES, stop_on_signals

    cfg = members[0].cfg
    stop = StopRequest()
    run = _PopulationRun(population, members, folder, texts, interventions, stop)
    if run_state is not None:
        run.last_row_step = int(run_state["last_row_step"])
        run.last_checkpoint_step = int(run_state["last_checkpoint_step"])
    try:
        with stop_on_signals(stop) as received:
            population.learn(
                cfg.train.total_steps - population.num_timesteps,
                callback=run,
                reset_num_timesteps=not resumed,
            )
        if stop.reason is not None:
            for member in members:
                member.stop.request(stop.reason)  # no final rows: the members continue from the checkpoint
            code = SIGNAL_EXIT_CODES.get(signal.Signals(received[0]), 1) if received else 1
            raise TrainingStopped(
                f"{stop.reason}; checkpoint saved at step {population.num_timesteps}; "
                f"the population continues from {folder / 'checkpoints'}",
                exit_code=code,
            )
        results = run.finish(resumed)
    finally:
        for member in members:
            member.close()
    wall = max((m.rows.elapsed() for m in members if m.callbacks), default=0.0)
    return PopulationResult(results, wall)
