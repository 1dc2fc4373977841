"""GameSequence: a sequence of MinAtar games behind one observation and action interface.

MinAtar is an optional extra (``pip install 'rlplast[minatar]'``) and is imported only when a
:class:`MinAtarGames` env is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rlplast.envs.schedule import TaskSequenceWrapper
from rlplast.errors import UserError, unknown

#: MinAtar's full action set, shared by every game: index → meaning.
ACTIONS = ("noop", "left", "up", "right", "down", "fire")
#: Games MinAtar 1.0.15 ships (its module names).
GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")
#: Observation channels after padding (Seaquest has the most, 10).
N_CHANNELS = 10


def import_minatar() -> Any:
    """Import MinAtar, or raise :class:`UserError` saying how to install it."""
    try:
        import minatar
    except ImportError as e:
        raise UserError(
            "MinAtar environments need the minatar package: pip install 'rlplast[minatar]'"
        ) from e
    return minatar


class MinAtarGames(gym.Env):
    """Several MinAtar games behind one Gymnasium interface; :meth:`set_game` picks the next one.

    Observations are ``uint8`` arrays of shape ``(10, 10, 10)``, channel-first, values in {0, 1}
    (a quarter of float32's replay memory; SB3's preprocessing casts them to float, and as the
    bounds are not 0..255 they are not treated as images, so nothing is rescaled or transposed):
    a game's ``C`` channels fill channels ``0..C-1`` and the rest stay 0 (SpaceInvaders 6,
    Asterix 4, Seaquest 10, Breakout 4, Freeway 7). Actions are ``Discrete(6)`` over :data:`ACTIONS`;
    an action outside a game's minimal action set is run as ``noop`` (e.g. ``up``/``down`` in
    SpaceInvaders, ``fire`` in Asterix), which is also what MinAtar itself does with it, so every
    shared action is valid in every game. ``reset(seed=...)`` reseeds the game (its spawns and its
    sticky actions) from the env's ``np_random``, so seeded resets are reproducible.

    Example:
        >>> from rlplast.envs.game_sequence import MinAtarGames
        >>> env = MinAtarGames(games=("breakout", "freeway"))
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape, obs.dtype, info["game"]
        ((10, 10, 10), dtype('uint8'), 'breakout')

    Args:
        games: MinAtar game names (module names, e.g. ``"space_invaders"``), in task order.
        sticky_action_prob: Probability that the previous action repeats (MinAtar's default 0.1).
        difficulty_ramping: Whether games speed up over an episode (MinAtar's default True).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        games: Sequence[str] = ("space_invaders", "asterix", "seaquest"),
        sticky_action_prob: float = 0.1,
        difficulty_ramping: bool = True,
    ) -> None:
        if isinstance(games, str) or len(games) == 0:
            raise UserError(f"games must be a non-empty list of MinAtar games ({', '.join(GAMES)})")
        for game in games:
            if game not in GAMES:
                raise unknown("MinAtar game", str(game), GAMES)
        if not 0.0 <= float(sticky_action_prob) <= 1.0:
            raise UserError(f"sticky_action_prob must be in [0, 1], got {sticky_action_prob!r}")
        minatar = import_minatar()
        self.games = tuple(games)
        self._envs = [
            minatar.Environment(
                g, sticky_action_prob=float(sticky_action_prob), difficulty_ramping=bool(difficulty_ramping)
            )
            for g in self.games
        ]
        self._n_channels = [int(e.state_shape()[2]) for e in self._envs]
        # shared action index -> the game's own action index (noop where the game ignores it)
        self._action_maps = [
            np.array([a if a in e.minimal_action_set() else 0 for a in range(len(ACTIONS))])
            for e in self._envs
        ]
        self.observation_space = spaces.Box(0, 1, shape=(N_CHANNELS, 10, 10), dtype=np.uint8)
        self.action_space = spaces.Discrete(len(ACTIONS))
        self.game_index = 0
        self._next_game = 0

    @property
    def game(self) -> str:
        """Name of the game being played."""
        return self.games[self.game_index]

    def set_game(self, index: int) -> None:
        """Play ``games[index % len(games)]`` from the next :meth:`reset` on."""
        self._next_game = int(index) % len(self.games)

    def _obs(self) -> np.ndarray:
        state = self._envs[self.game_index].state()
        obs = np.zeros((N_CHANNELS, 10, 10), dtype=np.uint8)
        obs[: state.shape[2]] = np.moveaxis(state, 2, 0)
        return obs

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode of the selected game."""
        super().reset(seed=seed)
        self.game_index = self._next_game
        env = self._envs[self.game_index]
        env.seed(int(self.np_random.integers(2**31 - 1)))
        env.last_action = 0
        env.reset()
        return self._obs(), {"game": self.game}

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """Run one shared action in the current game."""
        reward, done = self._envs[self.game_index].act(int(self._action_maps[self.game_index][int(action)]))
        return self._obs(), float(reward), bool(done), False, {"game": self.game}


class GameSequence(TaskSequenceWrapper):
    """Switch between the games of a :class:`MinAtarGames` env, task ``k`` playing game ``k % len(games)``.

    Games change only at episode boundaries, so ``switch_at`` must be ``"episode"`` (the default):
    a due switch (and a manual :meth:`set_task`) takes effect at the next ``reset()``.

    Example:
        >>> from rlplast.envs.game_sequence import GameSequence, MinAtarGames
        >>> env = GameSequence(MinAtarGames(games=("breakout", "freeway")), steps_per_task=1, n_tasks=2)
        >>> _, info = env.reset(seed=0)
        >>> _ = env.step(0)
        >>> _, info = env.reset()
        >>> info["task_id"], info["game"]
        (1, 'freeway')

    Args:
        env: A :class:`MinAtarGames` env (possibly wrapped).
        steps_per_task: Steps of the clock per game.
        n_tasks: Number of tasks; defaults to the number of games.
        seed: Schedule seed (the game order does not depend on it).
        switch_at: Must be ``"episode"``.
        after_last: ``"cycle"`` or ``"hold"``.
    """

    def __init__(
        self,
        env: gym.Env,
        steps_per_task: int = 100_000,
        n_tasks: int | None = None,
        seed: int = 0,
        switch_at: str = "episode",
        after_last: str = "cycle",
    ) -> None:
        games = env.unwrapped
        if not isinstance(games, MinAtarGames):
            raise UserError(f"GameSequence needs a MinAtarGames env, got {type(games).__name__}")
        if switch_at != "episode":
            raise UserError(
                f"GameSequence switches games between episodes: switch_at must be episode, got {switch_at!r}"
            )
        n = len(games.games) if n_tasks is None else n_tasks
        super().__init__(
            env,
            steps_per_task=steps_per_task,
            n_tasks=n,
            seed=seed,
            switch_at=switch_at,
            after_last=after_last,
        )
        self._games = games

    def apply_task(self, task: int) -> None:
        """Select game ``task % len(games)`` for the next episode."""
        self._games.set_game(task)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Start an episode of the current task's game; its steps report that task."""
        obs, info = super().reset(seed=seed, options=options)
        self._episode_task = self._task
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step the game of this episode; ``task_id`` is the task it was started under (a manual
        :meth:`set_task` mid-episode only takes effect at the next reset)."""
        obs, reward, terminated, truncated, info = super().step(action)
        info["task_id"] = self.__dict__.get("_episode_task", self._task)
        return obs, reward, terminated, truncated, info
