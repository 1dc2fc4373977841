"""Agents: PlasticDQN, a stable-baselines3 DQN with intervention seams."""

from rlplast.agents.dqn import PlasticDQN

__all__ = ["PlasticDQN"]
