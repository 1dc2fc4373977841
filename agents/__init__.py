"""Agents: PlasticDQN, a stable-baselines3 DQN with intervention seams."""
