"""CartPoleBatch: S CartPole-v1 envs stepped as arrays, each bitwise Gymnasium's ``CartPoleEnv``.

A population on CartPole spends much of its time in S Python ``CartPoleEnv.step`` calls per
lock-step. :class:`CartPoleBatch` is a Gymnasium vector env that holds the S states as float64
arrays and runs the same dynamics with NumPy array operations, in the same order as
``CartPoleEnv.step`` (NumPy's ``cos``/``sin`` give the same bits on an array as on a scalar), so
every member sees exactly the observations, rewards, terminations and truncations of its own
``gym.make("CartPole-v1")`` — tested against ``SyncVectorEnv`` step by step.

Each env keeps its own random generator, seeded as ``CartPoleEnv.reset(seed=...)`` seeds it
(``gymnasium.utils.seeding.np_random``); a reset draws the initial state from it as
``CartPoleEnv.reset`` does. The time limit is ``gym.make``'s ``TimeLimit`` (``spec.max_episode_steps``).
Autoreset is ``SAME_STEP``, as the population's ``SyncVectorEnv`` does it: an env that ends an
episode is reset within the same ``step``, its last observation in ``infos["final_obs"]``.

:func:`batch_cartpoles` builds one from already made envs when every one of them is a plain
CartPole (``CartPoleEnv`` under only the wrappers ``gym.make`` adds, no render mode, equal
physics), and returns None otherwise — the caller then steps the envs themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from gymnasium.utils import seeding
from gymnasium.vector.utils import batch_space
from gymnasium.wrappers import OrderEnforcing, PassiveEnvChecker, TimeLimit

__all__ = ["CartPoleBatch", "batch_cartpoles"]

#: The wrappers ``gym.make`` puts around a registered env (env checker, order enforcing, time limit).
MAKE_WRAPPERS = (TimeLimit, OrderEnforcing, PassiveEnvChecker)

#: ``CartPoleEnv``'s physics attributes; a batch needs them equal in every env.
PHYSICS = (
    "gravity",
    "masscart",
    "masspole",
    "total_mass",
    "length",
    "polemass_length",
    "force_mag",
    "tau",
    "kinematics_integrator",
    "theta_threshold_radians",
    "x_threshold",
)


def _plain_cartpole(env: gym.Env) -> dict[str, Any] | None:
    """The physics, time limit and reward option of a plain CartPole, or None for anything else."""
    inner: gym.Env = env
    while isinstance(inner, gym.Wrapper):
        if type(inner) not in MAKE_WRAPPERS:
            return None
        inner = inner.env
    spec = env.spec
    if type(inner) is not CartPoleEnv or env.render_mode is not None or spec is None:
        return None
    if spec.max_episode_steps is None or not isinstance(env, TimeLimit):
        return None
    options = dict(spec.kwargs)
    options.pop("render_mode", None)
    sutton_barto = bool(options.pop("sutton_barto_reward", False))
    if options:  # kwargs this batch does not know
        return None
    found = {name: getattr(inner, name) for name in PHYSICS}
    found["max_episode_steps"] = int(spec.max_episode_steps)
    found["sutton_barto_reward"] = sutton_barto
    return found


def batch_cartpoles(envs: Sequence[gym.Env]) -> CartPoleBatch | None:
    """A :class:`CartPoleBatch` twin of ``envs`` (not yet reset), or None unless every env is a plain
    CartPole with the same physics, time limit and reward option. The envs are left as they are
    (the caller closes them)."""
    if not envs:
        return None
    settings = [_plain_cartpole(e) for e in envs]
    first = settings[0]
    if first is None or any(s != first for s in settings[1:]):
        return None
    return CartPoleBatch(len(envs), **first)


class CartPoleBatch(gym.vector.VectorEnv):
    """``num_envs`` CartPoles (Gymnasium's ``CartPoleEnv`` under a ``TimeLimit``) as one vector env.

    Args:
        num_envs: the number of envs.
        max_episode_steps: the time limit (500 for CartPole-v1).
        sutton_barto_reward: ``CartPoleEnv``'s reward option.
        **physics: ``CartPoleEnv``'s physics attributes (:data:`PHYSICS`); defaults are CartPoleEnv's.
    """

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}

    # The physics (set from ``physics`` or CartPoleEnv's defaults).
    gravity: float
    masscart: float
    masspole: float
    total_mass: float
    length: float
    polemass_length: float
    force_mag: float
    tau: float
    kinematics_integrator: str
    theta_threshold_radians: float
    x_threshold: float

    def __init__(
        self,
        num_envs: int,
        max_episode_steps: int = 500,
        sutton_barto_reward: bool = False,
        **physics: Any,
    ) -> None:
        reference = CartPoleEnv()
        unknown = set(physics) - set(PHYSICS)
        if unknown:
            raise TypeError(f"unknown CartPole physics {sorted(unknown)}; valid: {', '.join(PHYSICS)}")
        for name in PHYSICS:
            setattr(self, name, physics.get(name, getattr(reference, name)))
        self.num_envs = int(num_envs)
        self.max_episode_steps = int(max_episode_steps)
        self.sutton_barto_reward = bool(sutton_barto_reward)
        self.single_observation_space = reference.observation_space
        self.single_action_space = reference.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        reference.close()
        #: One generator per env (None until that env is first reset).
        self.generators: list[np.random.Generator | None] = [None] * self.num_envs
        #: The states ``(4, S)`` float64: x, x_dot, theta, theta_dot.
        self.state = np.zeros((4, self.num_envs), dtype=np.float64)
        self.elapsed = np.zeros(self.num_envs, dtype=np.int64)
        self._forces = np.array([-self.force_mag, self.force_mag], dtype=np.float64)
        self._needs_reset = True

    # ------------------------------------------------------------------ resets
    def _reset_env(self, i: int, seed: int | None) -> None:
        """``CartPoleEnv.reset(seed=seed)`` of env ``i`` (and ``TimeLimit``'s step count)."""
        if seed is not None or self.generators[i] is None:
            self.generators[i], _ = seeding.np_random(seed)
        generator = self.generators[i]
        assert generator is not None
        self.state[:, i] = generator.uniform(low=-0.05, high=0.05, size=(4,))
        self.elapsed[i] = 0

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every env; ``seed`` as ``SyncVectorEnv.reset`` takes it (an int ``s`` seeds env
        ``i`` with ``s + i``; a list gives one seed per env)."""
        if options:
            raise ValueError("CartPoleBatch.reset takes no options")
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"{len(seeds)} seeds for {self.num_envs} envs")
        for i, s in enumerate(seeds):
            self._reset_env(i, s)
        self._needs_reset = False
        return self.state.T.astype(np.float32), {}

    # ------------------------------------------------------------------ steps
    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """One step of every env (``CartPoleEnv.step`` as arrays, then the time limit, then the
        same-step autoreset of the envs whose episode ended)."""
        if self._needs_reset:
            raise gym.error.ResetNeeded("Cannot call CartPoleBatch.step before reset")
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or actions.dtype.kind not in "iu" or (actions & ~1).any():
            raise ValueError(f"CartPoleBatch.step needs {self.num_envs} actions in {{0, 1}}, got {actions!r}")
        # CartPoleEnv.step, operation by operation, on arrays.
        state = self.state
        x, x_dot, theta, theta_dot = state
        force = self._forces[actions]  # force_mag if action == 1 else -force_mag
        costheta = np.cos(theta)
        sintheta = np.sin(theta)
        temp = (force + self.polemass_length * np.square(theta_dot) * sintheta) / self.total_mass
        thetaacc = (self.gravity * sintheta - costheta * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * np.square(costheta) / self.total_mass)
        )
        xacc = temp - self.polemass_length * thetaacc * costheta / self.total_mass
        if self.kinematics_integrator == "euler":
            x = x + self.tau * x_dot
            x_dot = x_dot + self.tau * xacc
            theta = theta + self.tau * theta_dot
            theta_dot = theta_dot + self.tau * thetaacc
        else:  # semi-implicit euler
            x_dot = x_dot + self.tau * xacc
            x = x + self.tau * x_dot
            theta_dot = theta_dot + self.tau * thetaacc
            theta = theta + self.tau * theta_dot
        state[0], state[1], state[2], state[3] = x, x_dot, theta, theta_dot
        # x < -threshold or x > threshold, exactly (abs is exact; NaN compares false either way).
        terminated = (np.abs(x) > self.x_threshold) | (np.abs(theta) > self.theta_threshold_radians)
        # An episode that ends is reset at once, so a step always follows a live state: the
        # reward is CartPoleEnv's for "not terminated" or "pole just fell".
        if self.sutton_barto_reward:
            rewards = np.where(terminated, -1.0, 0.0)
        else:
            rewards = np.ones(self.num_envs, dtype=np.float64)
        obs = state.T.astype(np.float32)
        # TimeLimit
        self.elapsed += 1
        truncated = self.elapsed >= self.max_episode_steps
        infos: dict[str, Any] = {}
        done = terminated | truncated
        if done.any():  # the same-step autoreset
            ended = np.flatnonzero(done)
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i in ended:
                final_obs[i] = obs[i].copy()
                self._reset_env(int(i), None)
            obs[ended] = self.state[:, ended].T.astype(np.float32)
            infos = {
                "final_obs": final_obs,
                "_final_obs": done.copy(),
                "final_info": {},
                "_final_info": done.copy(),
            }
        return obs, rewards, terminated, truncated, infos

    def close_extras(self, **kwargs: Any) -> None:
        """Nothing to release (no envs, no rendering)."""
