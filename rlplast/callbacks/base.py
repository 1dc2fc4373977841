"""How a run's callbacks are composed: :class:`RunCallbacks` reads each env step once for all of them.

stable-baselines3 calls ``update_locals`` and ``on_step`` on its callback after every env step, and
a ``CallbackList`` hands both to each child: five calls per child per step. A run's bookkeeping
happens far less often — at a task switch, an episode end, a logging row, an iteration end — so
:class:`RunCallbacks`, a ``CallbackList``, reads the step's ``infos`` once (into the shared
:class:`StepRecord`) and calls a child only for the events it defines:

* ``on_task_switch(task_id)`` — a step reported a ``task_id`` other than the previous one (not for
  the first task);
* ``on_episode_end(step, episode_return, length)`` — an episode finished (Monitor's
  ``info["episode"]``); its task is :attr:`StepRecord.task_id`;
* ``on_step()`` — every step, only for children with ``per_step = True`` (:class:`RunCallback`)
  and for any other SB3 callback, which also gets ``update_locals`` as in a plain ``CallbackList``;
* ``on_iteration_end()`` — after each collect-and-train iteration, called by
  :meth:`rlplast.agents.PlasticDQN.learn` on every callback that defines it; ``False`` stops
  training;
* ``on_training_start()`` / ``on_training_end()`` — SB3's, as in any ``CallbackList``;
  ``on_rollout_start()`` / ``on_rollout_end()`` likewise, for children that define them.

Children are called in list order for every event. A step therefore costs the same few calls
however many callbacks a run has: ``update_locals``, ``on_step``, two ``dict.get`` per env, and
the ``on_step`` of the per-step children.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from stable_baselines3.common.callbacks import BaseCallback, CallbackList


class Stateful(Protocol):
    """A part of a checkpoint: its own keys of the checkpoint's flat ``callback`` dict."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class StepRecord:
    """What the env steps reported so far, read once per step by :class:`RunCallbacks`.

    Attributes:
        task_id: the task of the latest step (``None`` before the first step that reported one).
    """

    def __init__(self) -> None:
        self.task_id: int | None = None

    @property
    def task(self) -> int:
        """:attr:`task_id`, with 0 for envs that report none."""
        return self.task_id if self.task_id is not None else 0

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint keys of the record."""
        return {"task_id": self.task_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.task_id = state["task_id"]


class StopRequest:
    """Why training should stop at the next iteration end (a signal, non-finite values).

    Shared by whatever asks for the stop (a signal handler, :class:`~rlplast.callbacks.NonFiniteGuard`)
    and :class:`~rlplast.callbacks.Checkpoints`, which checkpoints and then stops training.
    """

    def __init__(self) -> None:
        self.reason: str | None = None

    def request(self, reason: str) -> None:
        """Ask for a stop; the first reason is kept."""
        if self.reason is None:
            self.reason = reason


class RunCallback(BaseCallback):
    """Base of a run's single-purpose callbacks (see the module docstring for when each method runs).

    Subclasses define only the events they handle, and :meth:`state_dict` /
    :meth:`load_state_dict` when they hold state a resumed run needs.
    """

    #: Whether :class:`RunCallbacks` calls ``on_step`` on every env step.
    per_step: ClassVar[bool] = False

    def _on_step(self) -> bool:
        return True

    def state_dict(self) -> dict[str, Any]:
        """This callback's keys of a checkpoint (none by default)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` from a checkpoint's ``callback`` dict."""


class RunCallbacks(CallbackList):
    """SB3's ``CallbackList`` that reads each env step's ``infos`` once for all of its children.

    Args:
        callbacks: the children, called in this order for every event.
        record: the step record the children read (updated here before they are called).
    """

    def __init__(self, callbacks: list[BaseCallback], record: StepRecord) -> None:
        super().__init__(callbacks)
        self.record = record
        self._infos: list[dict[str, Any]] = []
        self._on_switch = [cb.on_task_switch for cb in callbacks if hasattr(cb, "on_task_switch")]  # type: ignore[attr-defined]
        self._on_episode_end = [cb.on_episode_end for cb in callbacks if hasattr(cb, "on_episode_end")]  # type: ignore[attr-defined]
        self._sb3 = [cb for cb in callbacks if not isinstance(cb, RunCallback)]
        self._stepped = [cb for cb in callbacks if not isinstance(cb, RunCallback) or cb.per_step]
        self._rollouts = [cb for cb in callbacks if not isinstance(cb, RunCallback) or _handles_rollouts(cb)]

    def _on_rollout_start(self) -> None:
        for callback in self._rollouts:
            callback.on_rollout_start()

    def _on_rollout_end(self) -> None:
        for callback in self._rollouts:
            callback.on_rollout_end()

    def update_locals(self, locals_: dict[str, Any]) -> None:
        self._infos = locals_["infos"]
        for callback in self._sb3:
            callback.update_locals(locals_)

    def _on_step(self) -> bool:
        record = self.record
        for info in self._infos:
            task = info.get("task_id")
            if task is not None and task != record.task_id:
                first = record.task_id is None
                record.task_id = int(task)
                if not first:
                    for on_switch in self._on_switch:
                        on_switch(record.task_id)
            episode = info.get("episode")
            if episode is not None:
                for on_end in self._on_episode_end:
                    on_end(self.num_timesteps, float(episode["r"]), int(episode["l"]))
        go_on = True
        for callback in self._stepped:
            go_on = callback.on_step() and go_on
        return go_on


def _handles_rollouts(callback: BaseCallback) -> bool:
    """Whether a callback overrides SB3's (empty) rollout start or end hooks."""
    kind = type(callback)
    return (
        kind._on_rollout_start is not BaseCallback._on_rollout_start
        or kind._on_rollout_end is not BaseCallback._on_rollout_end
    )
