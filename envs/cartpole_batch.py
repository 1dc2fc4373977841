"""CartPoleBatch: S CartPole-v1 envs stepped as arrays, each bitwise Gymnasium's ``CartPoleEnv``.

A population on CartPole spends much of its time in S Python ``CartPoleEnv.step`` calls per
lock-step. :class:`CartPoleBatch` is a Gymnasium vector env that holds the S states as float64
arrays and runs the same dynamics with NumPy array operations, in the same order as
``CartPoleEnv.step`` (NumPy's ``cos``/``sin`` give the same bits on an array as on a scalar), so
every env sees exactly the observations, rewards, terminations and truncations of its own
``gym.make("CartPole-v1")`` — tested against ``SyncVectorEnv`` step by step.

Each env keeps its own random generator, seeded as ``CartPoleEnv.reset(seed=...)`` seeds it
(``gymnasium.utils.seeding.np_random``); a reset draws the initial state from it as
``CartPoleEnv.reset`` does. The time limit is ``gym.make``'s ``TimeLimit`` (``spec.max_episode_steps``).
Autoreset is ``SAME_STEP``, as the population's ``SyncVectorEnv`` does it: an env that ends an
episode is reset within the same ``step``, its last observation in ``infos["final_obs"]``.

The shifting CartPoles (``rlplast/PermutedCartPole-v0`` and the other ``rlplast/`` CartPole ids: one
of rlplast's :class:`~rlplast.envs.schedule.TaskSequenceWrapper` shifts around
``gym.make("CartPole-v1")``) batch too:
each env keeps its own task wrapper — its clock, switches, transformations and ``info["task_id"]``
— and the batch calls the wrapper's halves of ``step``/``reset``
(:meth:`~rlplast.envs.schedule.TaskSequenceWrapper.prepare_step` and
:meth:`~rlplast.envs.schedule.TaskSequenceWrapper.finish_step`, ...) around its array step. The
physics are kept per env, re-read from the env's ``CartPoleEnv`` whenever its task changes (what
``ChangeDynamics`` writes there).

:func:`batch_cartpoles` builds one from already made envs when every one of them is a plain CartPole
(``CartPoleEnv`` under only the wrappers ``gym.make`` adds, no render mode) or every one is such a
CartPole inside one of rlplast's shifts, and returns None otherwise — the caller then steps the envs
themselves. A task wrapper of your own batches when you build the :class:`CartPoleBatch` yourself
(``tasks=``), provided it does not read the state of the env it wraps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from gymnasium.envs.registration import EnvSpec
from gymnasium.utils import seeding
from gymnasium.vector.utils import batch_space
from gymnasium.wrappers import OrderEnforcing, PassiveEnvChecker, TimeLimit

from rlplast.envs.registration import SHIFTS, make_shifted
from rlplast.envs.schedule import TaskSequenceWrapper

__all__ = ["CartPoleBatch", "batch_cartpoles"]

#: The entry point Gymnasium registers CartPole-v1 (and v0) with.
CARTPOLE_ENTRY_POINT = "gymnasium.envs.classic_control.cartpole:CartPoleEnv"

#: The wrappers ``gym.make`` puts around a registered env (env checker, order enforcing, time limit).
MAKE_WRAPPERS = (TimeLimit, OrderEnforcing, PassiveEnvChecker)

#: ``CartPoleEnv``'s numeric physics attributes, kept per env.
PHYSICS = (
    "gravity",
    "masscart",
    "masspole",
    "total_mass",
    "length",
    "polemass_length",
    "force_mag",
    "tau",
    "theta_threshold_radians",
    "x_threshold",
)


def _plain_cartpole(env: gym.Env) -> dict[str, Any] | None:
    """The time limit, reward option and integrator of a plain CartPole, or None for anything else."""
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
    options = _cartpole_kwargs(spec)
    if options is None:
        return None
    options.pop("render_mode", None)
    sutton_barto = bool(options.pop("sutton_barto_reward", False))
    if options:  # kwargs this batch does not know
        return None
    return {
        "max_episode_steps": int(spec.max_episode_steps),
        "sutton_barto_reward": sutton_barto,
        "kinematics_integrator": inner.kinematics_integrator,
    }


def _cartpole_kwargs(spec: EnvSpec) -> dict[str, Any] | None:
    """The ``CartPoleEnv`` keyword arguments an env with this spec was made with, or None when the
    spec does not tell. ``gym.make`` of a shifting ``rlplast/`` id gives the inner CartPole the
    outer id's spec; its base env was made by :func:`~rlplast.envs.registration.make_shifted` as
    ``gym.make(base_id)``, with that id's registered kwargs."""
    if spec.entry_point == f"{make_shifted.__module__}:{make_shifted.__name__}":
        base_id = spec.kwargs.get("base_id")
        if not isinstance(base_id, str):
            return None
        spec = gym.spec(base_id)
    if spec.entry_point != CARTPOLE_ENTRY_POINT:
        return None
    return dict(spec.kwargs)


def _task_wrapper(env: gym.Env) -> TaskSequenceWrapper | None:
    """The task wrapper of a shifting CartPole — one of rlplast's shifts (:data:`SHIFTS`, exactly
    that class), under at most ``gym.make``'s checker and order enforcing — or None.

    Only rlplast's own shifts are taken: in a batch the env inside the wrapper is not stepped (the
    batch holds the state), and they never read it; a wrapper of the user's might (its env's
    ``state``, say), so it is stepped as it is unless given to :class:`CartPoleBatch` explicitly.
    """
    inner: gym.Env = env
    while isinstance(inner, gym.Wrapper) and not isinstance(inner, TaskSequenceWrapper):
        if type(inner) not in (OrderEnforcing, PassiveEnvChecker):
            return None
        inner = inner.env
    if type(inner) not in SHIFTS.values():
        return None
    assert isinstance(inner, TaskSequenceWrapper)
    return inner


def batch_cartpoles(envs: Sequence[gym.Env]) -> CartPoleBatch | None:
    """A :class:`CartPoleBatch` twin of ``envs`` (not yet reset), or None unless every env is a plain
    CartPole, or every env a plain CartPole inside one of rlplast's shifts, with the same time limit,
    reward option and integrator. Task wrappers are taken over by the batch; plain envs are left as they
    are (the caller closes them)."""
    if not envs:
        return None
    wrappers = [_task_wrapper(e) for e in envs]
    tasks = [w for w in wrappers if w is not None]
    if not tasks:
        settings = [_plain_cartpole(e) for e in envs]
    elif len(tasks) == len(envs):
        settings = [_plain_cartpole(w.env) for w in tasks]
    else:
        return None
    first = settings[0]
    if first is None or any(s != first for s in settings[1:]):
        return None
    # Plain envs: their physics now; task wrappers: the batch reads them per task.
    physics = [{name: getattr(e.unwrapped, name) for name in PHYSICS} for e in envs] if not tasks else []
    batch = CartPoleBatch(
        len(envs),
        first["max_episode_steps"],
        first["sutton_barto_reward"],
        kinematics_integrator=first["kinematics_integrator"],
        tasks=tasks or None,
        observation_space=envs[0].observation_space,
        action_space=envs[0].action_space,
    )
    for i, values in enumerate(physics):
        batch.set_physics(i, **values)
    return batch


class CartPoleBatch(gym.vector.VectorEnv):
    """``num_envs`` CartPoles (Gymnasium's ``CartPoleEnv`` under a ``TimeLimit``), optionally each in
    its own task wrapper, as one vector env.

    Args:
        num_envs: the number of envs.
        max_episode_steps: the time limit (500 for CartPole-v1).
        sutton_barto_reward: ``CartPoleEnv``'s reward option.
        kinematics_integrator: ``CartPoleEnv``'s integrator (``"euler"`` or semi-implicit).
        tasks: one task wrapper per env around a plain CartPole (see the module docstring), or
            None; the physics then come from each wrapper's ``CartPoleEnv``. The wrappers must not
            override ``step``/``reset`` (their halves are called instead) nor read the state of
            the env they wrap (the batch holds it; the wrapped env is not stepped).
        observation_space: one env's observation space (default: CartPole's).
        action_space: one env's action space (default: CartPole's).

    Attributes:
        state: ``(4, S)`` float64: x, x_dot, theta, theta_dot of every env.
        gravity, masscart, ...: the physics (:data:`PHYSICS`), ``(S,)`` float64 each (CartPoleEnv's
            defaults unless set with :meth:`set_physics` or read from the task wrappers' envs).
    """

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}

    gravity: np.ndarray
    masscart: np.ndarray
    masspole: np.ndarray
    total_mass: np.ndarray
    length: np.ndarray
    polemass_length: np.ndarray
    force_mag: np.ndarray
    tau: np.ndarray
    theta_threshold_radians: np.ndarray
    x_threshold: np.ndarray

    def __init__(
        self,
        num_envs: int,
        max_episode_steps: int = 500,
        sutton_barto_reward: bool = False,
        kinematics_integrator: str = "euler",
        tasks: Sequence[TaskSequenceWrapper] | None = None,
        observation_space: gym.Space | None = None,
        action_space: gym.Space | None = None,
    ) -> None:
        reference = CartPoleEnv()
        self.num_envs = int(num_envs)
        for name in PHYSICS:
            setattr(self, name, np.full(self.num_envs, getattr(reference, name), dtype=np.float64))
        self.kinematics_integrator = kinematics_integrator
        self.max_episode_steps = int(max_episode_steps)
        self.sutton_barto_reward = bool(sutton_barto_reward)
        self.single_observation_space = observation_space or reference.observation_space
        self.single_action_space = action_space or reference.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        reference.close()
        self.tasks = None if tasks is None else list(tasks)
        if self.tasks is not None:
            if len(self.tasks) != self.num_envs:
                raise ValueError(f"{len(self.tasks)} task wrappers for {self.num_envs} envs")
            for wrapper in self.tasks:
                kind = type(wrapper)
                if kind.step is not TaskSequenceWrapper.step or kind.reset is not TaskSequenceWrapper.reset:
                    raise ValueError(
                        f"{kind.__name__} overrides step() or reset(); a CartPoleBatch calls their halves"
                    )
        #: The task each env's physics were last read under (task wrappers only).
        self._physics_task = [-1] * self.num_envs
        #: One generator per env (None until that env is first reset).
        self.generators: list[np.random.Generator | None] = [None] * self.num_envs
        self.state = np.zeros((4, self.num_envs), dtype=np.float64)
        self.elapsed = np.zeros(self.num_envs, dtype=np.int64)
        self._needs_reset = True
        for i in range(self.num_envs):
            self._follow_task(i)

    def set_physics(self, i: int, **values: float) -> None:
        """Set physics attributes (:data:`PHYSICS`) of env ``i``."""
        for name, value in values.items():
            if name not in PHYSICS:
                raise TypeError(f"unknown CartPole physics {name!r}; valid: {', '.join(PHYSICS)}")
            getattr(self, name)[i] = value

    def _follow_task(self, i: int) -> None:
        """Re-read env ``i``'s physics from its wrapped ``CartPoleEnv`` if its task changed."""
        if self.tasks is None:
            return
        wrapper = self.tasks[i]
        if wrapper.task_id == self._physics_task[i]:
            return
        base = wrapper.unwrapped
        if base.kinematics_integrator != self.kinematics_integrator:  # type: ignore[attr-defined]
            raise ValueError(f"env {i}'s task changed the CartPole integrator; a batch has one")
        self.set_physics(i, **{name: getattr(base, name) for name in PHYSICS})
        self._physics_task[i] = wrapper.task_id

    # ------------------------------------------------------------------ resets
    def _reset_env(self, i: int, seed: int | None) -> np.ndarray:
        """``CartPoleEnv.reset(seed=seed)`` of env ``i`` (and ``TimeLimit``'s step count): its
        observation, float32 ``(4,)``."""
        if seed is not None or self.generators[i] is None:
            self.generators[i], _ = seeding.np_random(seed)
        generator = self.generators[i]
        assert generator is not None
        self.state[:, i] = generator.uniform(low=-0.05, high=0.05, size=(4,))
        self.elapsed[i] = 0
        return self.state[:, i].astype(np.float32)

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
        self._needs_reset = False
        if self.tasks is None:
            for i, s in enumerate(seeds):
                self._reset_env(i, s)
            return self.state.T.astype(np.float32), {}
        obs = self._empty_obs()
        infos: dict[str, Any] = {}
        for i, s in enumerate(seeds):
            obs[i], info = self._reset_task_env(i, s)
            infos = self._add_info(infos, info, i)
        return obs, infos

    def _reset_task_env(self, i: int, seed: int | None) -> tuple[Any, dict[str, Any]]:
        """``reset()`` of env ``i``'s task wrapper, with the batch as its wrapped env."""
        assert self.tasks is not None
        wrapper = self.tasks[i]
        wrapper.prepare_reset()
        self._follow_task(i)
        return wrapper.finish_reset(self._reset_env(i, seed), {})

    def _empty_obs(self) -> np.ndarray:
        space = self.single_observation_space
        return np.empty((self.num_envs, *space.shape), dtype=space.dtype)  # type: ignore[misc]

    # ------------------------------------------------------------------ steps
    def _dynamics(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``CartPoleEnv.step`` of every env as arrays, operation by operation, then ``TimeLimit``:
        observations float32 ``(S, 4)``, rewards, terminations, truncations."""
        if actions.shape != (self.num_envs,) or actions.dtype.kind not in "iu" or (actions & ~1).any():
            raise ValueError(f"CartPoleBatch.step needs {self.num_envs} actions in {{0, 1}}, got {actions!r}")
        state = self.state
        x, x_dot, theta, theta_dot = state
        force = np.where(actions == 1, self.force_mag, -self.force_mag)
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
        self.elapsed += 1  # TimeLimit
        truncated = self.elapsed >= self.max_episode_steps
        return state.T.astype(np.float32), rewards, terminated, truncated

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """One step of every env (task wrappers' ``prepare_step``, the CartPole step as arrays, the
        time limit, ``finish_step``), then the same-step autoreset of the envs whose episode ended."""
        if self._needs_reset:
            raise gym.error.ResetNeeded("Cannot call CartPoleBatch.step before reset")
        actions = np.asarray(actions)
        if self.tasks is not None:
            return self._step_tasks(actions)
        obs, rewards, terminated, truncated = self._dynamics(actions)
        infos: dict[str, Any] = {}
        for i in np.flatnonzero(terminated | truncated):  # the same-step autoreset
            infos = self._add_info(infos, {"final_obs": obs[i].copy(), "final_info": {}}, int(i))
            obs[i] = self._reset_env(int(i), None)
        return obs, rewards, terminated, truncated, infos

    def _step_tasks(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """:meth:`step` with task wrappers: each env's wrapper around the array step, and its info
        merged as ``SyncVectorEnv`` merges it."""
        assert self.tasks is not None
        if actions.shape != (self.num_envs,):
            raise ValueError(f"CartPoleBatch.step needs {self.num_envs} actions, got {actions!r}")
        base_actions = np.empty(self.num_envs, dtype=np.int64)
        for i, wrapper in enumerate(self.tasks):
            base_actions[i] = wrapper.prepare_step(actions[i])
            self._follow_task(i)
        base_obs, base_rewards, terminated, truncated = self._dynamics(base_actions)
        obs = self._empty_obs()
        rewards = np.empty(self.num_envs, dtype=np.float64)
        infos: dict[str, Any] = {}
        env_infos = []
        for i, wrapper in enumerate(self.tasks):
            ended_by = bool(terminated[i]), bool(truncated[i])
            out, reward, _, _, info = wrapper.finish_step(base_obs[i], float(base_rewards[i]), *ended_by, {})
            rewards[i] = reward
            if ended_by[0] or ended_by[1]:
                infos = self._add_info(infos, {"final_obs": out, "final_info": info}, i)
                out, info = self._reset_task_env(i, None)
            obs[i] = out
            env_infos.append(info)
        if all(len(info) == 1 and type(info.get("task_id")) is int for info in env_infos):
            # Every env's info is just its task id: the arrays _add_info would build, at once.
            infos["task_id"] = np.array([info["task_id"] for info in env_infos], dtype=int)
            infos["_task_id"] = np.ones(self.num_envs, dtype=np.bool_)
        else:
            for i, info in enumerate(env_infos):
                infos = self._add_info(infos, info, i)
        return obs, rewards, terminated, truncated, infos

    def close_extras(self, **kwargs: Any) -> None:
        """Close the task wrappers (and the envs inside them)."""
        for wrapper in self.tasks or ():
            wrapper.close()
