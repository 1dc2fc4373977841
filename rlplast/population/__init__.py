"""Population engine: many seeds of a DQN trained in lock-step in one process.

S members, each the DQN ``PlasticDQN(policy, env, seed=s)`` would train, share one process:
their network parameters are stacked (member axis first) and updated together, each member with
its own env copy, replay buffer slice, Adam state, gradient clipping and random streams.

Files: :mod:`~rlplast.population.nets` (stacked Q-networks and member views),
:mod:`~rlplast.population.adam` (stacked Adam, per-member clipping),
:mod:`~rlplast.population.replay` (stacked replay, memory estimate),
:mod:`~rlplast.population.rng` (per-member random streams),
:mod:`~rlplast.population.envs` (the members' envs and episodes),
:mod:`~rlplast.population.engine` (the training loop). See ``docs/population.md``.

Example:
    >>> from rlplast.population import Population
    >>> pop = Population("MlpPolicy", "CartPole-v1", seeds=[0, 1, 2, 3], learning_starts=100)
    >>> pop = pop.learn(1_000)
    >>> view = pop.member(2)  # member 2 as an ordinary QNetwork + Adam state
"""

from rlplast.population.adam import MemberAdamState, StackedAdam
from rlplast.population.engine import (
    DQNSettings,
    MemberFailure,
    MemberView,
    Population,
    PopulationCallback,
    StepResult,
)
from rlplast.population.envs import Episode, EpisodeTracker, TaskSwitch, make_member_envs
from rlplast.population.nets import StackedQNetwork, build_member_networks
from rlplast.population.replay import (
    ReplaySamples,
    StackedReplayBuffer,
    available_memory_bytes,
    check_replay_fits,
    replay_bytes,
)

__all__ = [
    "DQNSettings",
    "Episode",
    "EpisodeTracker",
    "MemberAdamState",
    "MemberFailure",
    "MemberView",
    "Population",
    "PopulationCallback",
    "ReplaySamples",
    "StackedAdam",
    "StackedQNetwork",
    "StackedReplayBuffer",
    "StepResult",
    "TaskSwitch",
    "available_memory_bytes",
    "build_member_networks",
    "check_replay_fits",
    "make_member_envs",
    "replay_bytes",
]
