"""Continual-learning evaluation: greedy returns on every task seen so far, every ``eval.every_steps``.

Semantics (:class:`Evaluation`):

* **When.** At each logging row that crosses a multiple of ``eval.every_steps`` (a multiple of
  ``train.log_every_steps``, so the row of every multiple) and at the row of the budget: the first
  row at or past ``train.total_steps``, so the last evaluation of a run is at its end. An
  evaluation at a task boundary (``steps_per_task`` a multiple of ``every_steps``) sees the task
  that has just ended as the current one: the switch happens at the next step.
* **What.** Every task the training env has reported so far (``info["task_id"]``) and the current
  one, in increasing task order; ``eval.episodes`` episodes each, on a separate copy of the env made
  from the run's env config and set to the task with the wrapper's public
  :meth:`~rlplast.envs.TaskSequenceWrapper.set_task` after its schedule clock is frozen
  (:func:`freeze_task`), so a long evaluation episode never switches task.
* **How.** Greedy actions of the online network (``model.predict(..., deterministic=True)``), with a
  uniformly random action with probability ``eval.epsilon`` (0.001 by default, Dopamine's Atari
  evaluation ε). The ε coin, the random actions and every episode's reset seed come from the
  evaluation's own generator (``numpy.random.default_rng([train.seed, 0xE7A1])``); the global
  Python, NumPy and torch random states are saved before and restored after an evaluation, and
  the policy's training mode too, so training is bit-for-bit the run without evaluation.
* **The random baseline.** The first evaluation that includes task ``k`` also plays
  ``eval.episodes`` episodes with uniformly random actions on it (from the same generator): the
  random-policy return the report normalises with.
* **Logged** (``metrics.csv`` and TensorBoard, in the evaluation's row): ``eval/task_<k>/return``
  (mean greedy return over the episodes), ``eval/task_<k>/random_return`` (once per task) and
  ``eval/mean_return`` (mean of the row's ``eval/task_<k>/return`` values).
* **Resume.** The generator's state, the tasks seen and the tasks whose random return was measured
  are part of checkpoints; the env copy is made again (every episode is reset with a seed from the
  generator, so it holds no state that matters).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from rlplast.callbacks.base import RunCallback, StepRecord

if TYPE_CHECKING:
    from rlplast.agents import PlasticDQN
    from rlplast.config import EvalConfig

__all__ = [
    "EVAL_PREFIX",
    "FROZEN_STEPS_PER_TASK",
    "Evaluation",
    "freeze_task",
    "play_episode",
    "preserved_rng",
]

#: Prefix of every column the evaluation logs.
EVAL_PREFIX = "eval/"
#: ``steps_per_task`` of an evaluation env: its clock never reaches the next block.
FROZEN_STEPS_PER_TASK = 2**62
#: Second word of the evaluation generator's seed (``[train.seed, EVAL_STREAM]``).
EVAL_STREAM = 0xE7A1


def freeze_task(env: gym.Env, task: int) -> None:
    """Make ``env`` run ``task`` from its next reset on, and stay on it whatever its clock says.

    The env's :class:`~rlplast.envs.TaskSequenceWrapper` gets a ``steps_per_task`` its clock never
    reaches (:data:`FROZEN_STEPS_PER_TASK`, so no scheduled switch ever falls due), then
    :meth:`~rlplast.envs.TaskSequenceWrapper.set_task` applies the task (the task's parameters are
    a pure function of the schedule seed and ``task``, as in training).

    Args:
        env: an env made from the run's env config.
        task: the task id.

    Raises:
        UserError: ``task`` is not a task of the env (an env without a shift has only task 0).
    """
    from rlplast.envs import find_task_wrapper
    from rlplast.errors import UserError

    try:
        wrapper = find_task_wrapper(env)
    except UserError:
        if task != 0:
            raise UserError(f"cannot evaluate task {task}: {env} has no task schedule") from None
        return
    wrapper.steps_per_task = FROZEN_STEPS_PER_TASK
    wrapper.set_task(task)


def play_episode(
    env: gym.Env,
    greedy: Callable[[Any], int] | None,
    rng: np.random.Generator,
    epsilon: float,
    max_steps: int | None = None,
) -> float:
    """Play one episode and return its undiscounted return.

    Args:
        env: the env (reset here, with a seed drawn from ``rng``).
        greedy: the greedy action of an observation; ``None`` plays uniformly random actions.
        rng: the generator of the reset seed, the ε coin and the random actions.
        epsilon: probability of a uniformly random action instead of the greedy one.
        max_steps: cut the episode after this many steps (``None``: the env's own limit).
    """
    space = env.action_space
    assert isinstance(space, gym.spaces.Discrete), "evaluation needs a Discrete action space"
    n, start = int(space.n), int(space.start)
    obs, _ = env.reset(seed=int(rng.integers(2**31)))
    total, steps = 0.0, 0
    while True:
        if greedy is None or (epsilon > 0 and rng.random() < epsilon):
            action = start + int(rng.integers(n))
        else:
            action = greedy(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        steps += 1
        if terminated or truncated or (max_steps is not None and steps >= max_steps):
            return total


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore the global Python, NumPy and torch (CUDA too) random states when the block ends."""
    from rlplast.checkpoint import rng_state, set_rng_state

    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


class Evaluation(RunCallback):
    """Greedy returns on every task seen so far, added to the logging rows (see the module docstring).

    Args:
        cfg: the ``eval`` config section.
        make_env: makes a copy of the run's env (called once, at the first evaluation).
        seed: the run's seed (the evaluation generator is seeded with ``[seed, 0xE7A1]``).
        record: the step record (the current task).
        total_steps: the run's budget (``train.total_steps``): its row is evaluated too.
    """

    model: PlasticDQN

    def __init__(
        self,
        cfg: EvalConfig,
        make_env: Callable[[], gym.Env],
        seed: int,
        record: StepRecord,
        total_steps: int,
    ) -> None:
        super().__init__()
        self.every = cfg.every_steps
        self.episodes = cfg.episodes
        self.epsilon = cfg.epsilon
        self.max_steps = cfg.max_episode_steps
        self.make_env = make_env
        self.record = record
        self.total_steps = total_steps
        self.rng = np.random.default_rng([seed, EVAL_STREAM])
        self.seen: set[int] = set()
        self.random_done: set[int] = set()
        self.env: gym.Env | None = None

    def on_task_switch(self, task_id: int) -> None:
        """Remember a task the training env reported (evaluated from the next evaluation on)."""
        self.seen.add(task_id)

    def due(self, step: int, previous_step: int) -> bool:
        """Whether the row of ``step`` (the previous row: ``previous_step``) is evaluated."""
        crossed = step // self.every > previous_step // self.every
        return crossed or previous_step < self.total_steps <= step

    def on_row(self, step: int, previous_step: int, row: dict[str, Any]) -> None:
        """Add the ``eval/…`` columns to the row of ``step`` when an evaluation is due."""
        if self.due(step, previous_step):
            row.update(self.evaluate())

    def evaluate(self) -> dict[str, float]:
        """Evaluate every task seen so far and the current one now; return the ``eval/…`` columns."""
        self.seen.add(self.record.task)
        policy = self.model.policy
        training = policy.training
        out: dict[str, float] = {}
        with preserved_rng():
            try:
                if self.env is None:
                    self.env = self.make_env()
                for task in sorted(self.seen):
                    freeze_task(self.env, task)
                    if task not in self.random_done:
                        out[f"{EVAL_PREFIX}task_{task}/random_return"] = self._mean_return(None)
                        self.random_done.add(task)
                    out[f"{EVAL_PREFIX}task_{task}/return"] = self._mean_return(self._greedy)
            finally:
                policy.set_training_mode(training)
        returns = [v for k, v in out.items() if k.endswith("/return") and "random" not in k]
        out[f"{EVAL_PREFIX}mean_return"] = float(np.mean(returns))
        return out

    def _mean_return(self, greedy: Callable[[Any], int] | None) -> float:
        assert self.env is not None
        returns = [
            play_episode(self.env, greedy, self.rng, self.epsilon, self.max_steps)
            for _ in range(self.episodes)
        ]
        return float(np.mean(returns))

    def _greedy(self, obs: Any) -> int:
        if isinstance(obs, np.ndarray):
            action, _ = self.model.predict(obs[None], deterministic=True)  # batched: the fast path
            return int(np.asarray(action).reshape(-1)[0])
        action, _ = self.model.predict(obs, deterministic=True)
        return int(np.asarray(action).reshape(-1)[0])

    def close(self) -> None:
        """Close the evaluation env (if one was made); called once training has ended (the final
        row, written when training ends, may still be evaluated)."""
        if self.env is not None:
            self.env.close()
            self.env = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "eval_rng": self.rng.bit_generator.state,
            "eval_seen": sorted(self.seen),
            "eval_random_done": sorted(self.random_done),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["eval_rng"]
        self.seen = set(state["eval_seen"])
        self.random_done = set(state["eval_random_done"])
