"""PlasticDQN as a drop-in for stable-baselines3's DQN: n-step replay, the caller's objects untouched."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import DQN
from stable_baselines3.common.buffers import NStepReplayBuffer
from stable_baselines3.common.envs import SimpleMultiObsEnv
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack

from rlplast.agents import PlasticDQN
from rlplast.agents.speed import LeanDummyVecEnv, LeanNStepReplayBuffer

KW = dict(
    learning_starts=100,
    train_freq=4,
    gradient_steps=2,
    target_update_interval=50,
    batch_size=32,
    policy_kwargs=dict(net_arch=[16, 16]),
)


def _samples(model, seed=11, n=256):
    np.random.seed(seed)
    return model.replay_buffer.sample(n)


@pytest.mark.parametrize("n_steps", [2, 3])
def test_n_step_replay_and_updates_equal_sb3s(n_steps):
    """n_steps > 1 gives SB3's n-step buffer (returns and discounts) and SB3's updates, bitwise."""
    torch.set_num_threads(1)
    # Each model is built and trained before the next: both draw from the global RNGs.
    ref = DQN("MlpPolicy", "CartPole-v1", seed=3, n_steps=n_steps, **KW)
    assert type(ref.replay_buffer) is NStepReplayBuffer
    ref.learn(800)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SB3 warns when n_steps is ignored: that must not happen
        ours = PlasticDQN("MlpPolicy", "CartPole-v1", seed=3, n_steps=n_steps, **KW)
    assert type(ours.replay_buffer) is LeanNStepReplayBuffer and ours.replay_buffer.n_steps == n_steps
    ours.learn(800)
    a, b = _samples(ref), _samples(ours)
    assert b.discounts is not None
    for name in ("observations", "actions", "next_observations", "dones", "rewards", "discounts"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and torch.equal(x, y), name
    # The samples really are n-step ones: discounts below gamma**n only where an episode ended early.
    gamma = ours.gamma
    assert torch.allclose(b.discounts.min(), torch.tensor(gamma**n_steps))
    assert bool((b.discounts > gamma**n_steps * 1.0001).any())  # some cut short at an episode end
    assert ours.n_updates == ref._n_updates > 0
    for p, q in zip(ref.q_net.parameters(), ours.q_net.parameters(), strict=True):
        assert torch.equal(p, q)


def test_n_step_differs_from_one_step():
    """The n-step test can fail: with n_steps=1 the sampled rewards are single-step rewards."""
    one = PlasticDQN("MlpPolicy", "CartPole-v1", seed=3, **KW).learn(400)
    three = PlasticDQN("MlpPolicy", "CartPole-v1", seed=3, n_steps=3, **KW).learn(400)
    assert _samples(one).discounts is None
    assert float(_samples(three).rewards.max()) > 1.0  # CartPole pays 1 per step


def test_config_n_steps_gives_sb3s_replay_samples():
    """agent.n_steps: 3 in an rlplast config gives the replay samples of SB3's DQN with n_steps=3."""
    from rlplast.config import config_from_dict
    from rlplast.train import build_model, make_env, policy_kwargs

    cfg = config_from_dict(
        {
            "env": {"id": "CartPole-v1"},
            "agent": {"n_steps": 3, "learning_starts": 100, "net_arch": [16], "batch_size": 32},
            "train": {"total_steps": 600, "seed": 4},
        }
    )
    torch.set_num_threads(1)
    a = cfg.agent
    ref = DQN(
        a.policy,
        make_env(cfg),
        learning_rate=a.learning_rate,
        buffer_size=a.buffer_size,
        learning_starts=a.learning_starts,
        batch_size=a.batch_size,
        tau=a.tau,
        gamma=a.gamma,
        train_freq=a.train_freq,
        gradient_steps=a.gradient_steps,
        n_steps=3,
        target_update_interval=a.target_update_interval,
        exploration_fraction=a.exploration_fraction,
        exploration_initial_eps=a.exploration_initial_eps,
        exploration_final_eps=a.exploration_final_eps,
        max_grad_norm=a.max_grad_norm,
        policy_kwargs=policy_kwargs(cfg),
        seed=4,
        device="cpu",
    )
    ref.learn(600)  # built and trained before PlasticDQN is built: both draw from the global RNGs
    ours = build_model(cfg, make_env(cfg), "cpu")
    assert isinstance(ours.replay_buffer, NStepReplayBuffer) and ours.replay_buffer.n_steps == 3
    ours.learn(600)
    x, y = _samples(ref), _samples(ours)
    for name in ("observations", "actions", "next_observations", "dones", "rewards", "discounts"):
        assert torch.equal(getattr(x, name), getattr(y, name)), name


def test_user_vec_env_is_not_modified():
    """A DummyVecEnv the user passes in keeps its class; PlasticDQN's own env is lean."""
    venv = DummyVecEnv([lambda: Monitor(gym.make("CartPole-v1"))])
    model = PlasticDQN("MlpPolicy", venv, seed=0, **KW).learn(300)
    assert type(venv) is DummyVecEnv and model.env is venv
    wrapped = VecFrameStack(DummyVecEnv([lambda: gym.make("CartPole-v1")]), n_stack=2)
    model = PlasticDQN("MlpPolicy", wrapped, seed=0, **KW)
    assert type(wrapped.venv) is DummyVecEnv
    user_env = gym.make("CartPole-v1")
    model = PlasticDQN("MlpPolicy", user_env, seed=0, **KW)
    assert type(model.env) is LeanDummyVecEnv  # created by PlasticDQN: its own, lean
    assert model.env.envs[0].env is user_env  # wrapped in a Monitor, not changed


class KeepsObsEnv(gym.Env):
    """An env that keeps a reference to each observation (and info value) it hands out."""

    def __init__(self, as_dict: bool):
        self.as_dict = as_dict
        box = spaces.Box(-10, 10, (2,), np.float32)
        self.observation_space = spaces.Dict({"a": box, "b": box}) if as_dict else box
        self.action_space = spaces.Discrete(2)
        self.handed_out: list = []
        self.t = 0

    def _obs(self, value):
        arr = np.full(2, value, np.float32)
        obs = {"a": arr, "b": arr.copy()} if self.as_dict else arr
        self.handed_out.append(obs)
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(0.0), {}

    def step(self, action):
        self.t += 1
        obs = self._obs(float(self.t))
        return obs, 1.0, self.t >= 3, False, {"mine": obs}


@pytest.mark.parametrize("as_dict", [False, True])
def test_terminal_observation_and_infos_are_copies(as_dict):
    """As with SB3's deep copy, what the caller gets in infos is not the env's own objects."""
    lean = PlasticDQN._wrap_env(KeepsObsEnv(as_dict), monitor_wrapper=False)
    assert type(lean) is LeanDummyVecEnv
    lean.reset()
    for _ in range(3):
        _, _, dones, infos = lean.step(np.array([0]))
    assert dones[0]
    env = lean.envs[0]
    own = env.handed_out[-2]  # the terminal observation (the last one is the reset's)
    terminal, mine = infos[0]["terminal_observation"], infos[0]["mine"]
    if as_dict:
        assert terminal is not own and terminal["a"] is not own["a"] and mine["a"] is not own["a"]
        np.testing.assert_array_equal(terminal["a"], [3.0, 3.0])
        terminal["a"][:] = -1.0  # what the caller does with it stays with the caller
        terminal["b"] = None
        np.testing.assert_array_equal(own["a"], [3.0, 3.0])
        assert own["b"] is not None
    else:
        assert terminal is not own and mine is not own
        np.testing.assert_array_equal(terminal, [3.0, 3.0])
        terminal[:] = -1.0
        np.testing.assert_array_equal(own, [3.0, 3.0])


def test_vec_frame_stack_dict_observations_then_evaluation():
    """VecFrameStack over Dict observations trains and evaluates (stacked terminal observations must
    not be written into the env's own observation)."""
    env = DummyVecEnv([lambda: SimpleMultiObsEnv(random_start=True)])
    env = VecFrameStack(env, n_stack=2)
    model = PlasticDQN(
        "MultiInputPolicy",
        env,
        seed=0,
        buffer_size=500,
        learning_starts=50,
        policy_kwargs=dict(net_arch=[16]),
    )
    model.learn(300)
    mean, _ = evaluate_policy(model, model.get_env(), n_eval_episodes=3, warn=False)
    assert np.isfinite(mean)
    # The same through a plain env handed to PlasticDQN (its own lean vec env under VecFrameStack).
    own = PlasticDQN._wrap_env(SimpleMultiObsEnv(random_start=True))
    stacked = VecFrameStack(own, n_stack=2)
    model = PlasticDQN(
        "MultiInputPolicy",
        stacked,
        seed=0,
        buffer_size=500,
        learning_starts=50,
        policy_kwargs=dict(net_arch=[16]),
    )
    model.learn(300)
    mean, _ = evaluate_policy(model, stacked, n_eval_episodes=3, warn=False)
    assert np.isfinite(mean)


def test_hot_path_caches_follow_a_changed_network():
    """Layers inserted after the first use are honoured by predict, training mode and the seam."""
    model = PlasticDQN("MlpPolicy", "CartPole-v1", seed=4, policy_kwargs=dict(net_arch=[16]))
    obs = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    model.predict(obs, deterministic=True)  # caches built for the original network
    model.q_features(torch.as_tensor(obs))
    model.q_net.q_net.insert(1, torch.nn.Tanh())
    model.q_net.q_net.insert(2, torch.nn.Dropout(0.5))
    ours, _ = model.predict(obs, deterministic=True)
    assert model.q_net.q_net[2].training is False  # the mode walk ran: the network has a dropout now
    ref, _ = model.policy.predict(obs, deterministic=True)
    assert np.array_equal(ours, ref)
    features, q = model.q_features(torch.as_tensor(obs))
    with torch.no_grad():
        expected = torch.relu(torch.tanh(model.q_net.q_net[0](torch.as_tensor(obs))))  # dropout: eval mode
    assert torch.equal(features, expected) and q.shape == (32, 2)
