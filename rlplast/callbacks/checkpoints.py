"""Checkpoints: the whole training state, at iteration ends, for exact resume and for continuing.

The file format, and what in it is loaded only from checkpoints this user wrote:
:mod:`rlplast.checkpoint`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlplast.callbacks.base import RunCallback, Stateful, StopRequest

if TYPE_CHECKING:
    from rlplast.agents import PlasticDQN


def checkpoint_due(step: int, last_checkpoint_step: int, every_steps: int, total_steps: int) -> bool:
    """Whether an iteration end at ``step`` is due for a periodic checkpoint.

    Due at the first iteration end at or past each multiple of ``every_steps`` and at the run's
    last one (``step >= total_steps``); never with ``every_steps == 0`` (checkpoints only on a stop).
    """
    if not every_steps:
        return False
    return step // every_steps > last_checkpoint_step // every_steps or step >= total_steps


class Checkpoints(RunCallback):
    """Writes ``checkpoints/ckpt-<step>.pkl`` at the end of collect-and-train iterations.

    A checkpoint is written at the first iteration end at or past each multiple of ``every_steps``,
    at the run's last iteration end (the one that reaches ``total_steps``; a finished run can then
    be continued with a larger budget), and whenever a stop is requested — then training stops
    after it. With ``every_steps == 0`` only a stop writes one. Iteration ends are where no update
    is half done: the agent, the env, the callbacks' ``parts`` and the global RNGs are the whole state.

    Args:
        folder: the run's ``checkpoints/`` folder.
        every_steps: env steps between checkpoints (``checkpoint.every_steps``; 0: only on a stop).
        keep: newest checkpoints kept on disk.
        total_steps: the run's budget (``train.total_steps``).
        config_text: the resolved config as written to ``config.yaml`` (recorded, for resume checks).
        parts: the callbacks (and step record) whose state goes into the checkpoint, besides this one's.
        before_save: called before each checkpoint, e.g. to write buffered ``episodes.csv`` rows.
        stop: the run's stop request.
    """

    model: PlasticDQN

    def __init__(
        self,
        folder: str | Path,
        every_steps: int,
        keep: int,
        total_steps: int,
        config_text: str,
        parts: Sequence[Stateful],
        before_save: Sequence[Callable[[], None]],
        stop: StopRequest,
    ) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.every = every_steps
        self.keep = keep
        self.total_steps = total_steps
        self.config_text = config_text
        self.parts = [*parts, self]
        self.before_save = list(before_save)
        self.stop = stop
        self.last_checkpoint_step = 0

    def on_iteration_end(self) -> bool:
        """Checkpoint when due; ``False`` (stop training) after a requested stop."""
        step = self.model.num_timesteps
        due = checkpoint_due(step, self.last_checkpoint_step, self.every, self.total_steps)
        if due or self.stop.reason is not None:
            self.save(step)
        return self.stop.reason is None

    def save(self, step: int) -> Path:
        """Write the checkpoint of ``step`` now."""
        from rlplast import __version__
        from rlplast.checkpoint import rng_state, save_checkpoint

        for hook in self.before_save:
            hook()
        self.last_checkpoint_step = step
        payload = {
            "step": step,
            "model": self.model,
            "callback": self.callback_state(),
            "rng": rng_state(),
            "rlplast": __version__,
            "config": self.config_text,  # what a resume checks config.yaml against
        }
        return save_checkpoint(self.folder, step, payload, keep=self.keep, names=self.tensor_names())

    def tensor_names(self) -> dict[int, str]:
        """Readable names of the agent's tensors and arrays in the checkpoint's state part.

        ``model/policy/<state_dict key>`` (online and target networks), ``model/optimizer/<parameter
        index>/<key>`` (e.g. Adam's moments) and ``model/replay/<field>`` (the replay buffer's
        arrays); what the checkpoint holds is the same without them (see
        :func:`rlplast.checkpoint.read_state`).
        """
        from rlplast.checkpoint import attribute_tensor_names, module_tensor_names, optimizer_tensor_names

        policy = self.model.policy
        names = module_tensor_names("model/policy", policy)
        names.update(optimizer_tensor_names("model/optimizer", policy.optimizer))
        if self.model.replay_buffer is not None:
            names.update(attribute_tensor_names("model/replay", self.model.replay_buffer))
        return names

    def callback_state(self) -> dict[str, Any]:
        """The ``callback`` dict of a checkpoint: every part's keys."""
        state: dict[str, Any] = {}
        for part in self.parts:
            state.update(part.state_dict())
        return state

    def load_callback_state(self, state: dict[str, Any]) -> None:
        """Restore every part from a checkpoint's ``callback`` dict (resuming a run)."""
        for part in self.parts:
            part.load_state_dict(state)

    def state_dict(self) -> dict[str, Any]:
        return {"last_checkpoint_step": self.last_checkpoint_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_checkpoint_step = state["last_checkpoint_step"]
