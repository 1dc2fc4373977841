"""A reward shift (docs/environments.md): CartPole whose reward is scaled per task."""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym

from rlplast.envs import TaskSequenceWrapper, task_rng


class ScaleReward(TaskSequenceWrapper):
    """Multiply rewards by a per-task factor drawn from [low, high] (task 0: 1)."""

    def __init__(self, env: gym.Env, low: float = 0.5, high: float = 2.0, **schedule: Any) -> None:
        super().__init__(env, **schedule)
        if not 0 < low <= high:
            raise ValueError(f"need 0 < low <= high, got low={low}, high={high}")
        self.low, self.high = float(low), float(high)
        self.scale = 1.0

    def apply_task(self, task: int) -> None:
        rng = task_rng(self.task_seed, task)
        self.scale = 1.0 if task == 0 else float(rng.uniform(self.low, self.high))

    def reward(self, reward: SupportsFloat) -> float:
        return float(reward) * self.scale


def make(render_mode: str | None = None, **kwargs: Any) -> ScaleReward:
    return ScaleReward(gym.make("CartPole-v1", render_mode=render_mode), **kwargs)


gym.register(id="plastlab/RewardScaledCartPole-v0", entry_point=make, kwargs={"steps_per_task": 20_000})
