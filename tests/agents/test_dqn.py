from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import DQN

from rlplast.agents import PlasticDQN
from rlplast.interventions.base import Intervention

KW = dict(
    learning_starts=100,
    train_freq=4,
    gradient_steps=2,
    target_update_interval=50,
    batch_size=32,
    policy_kwargs=dict(net_arch=[16, 16]),
)


def _params(model):
    return [p.detach().clone() for p in model.q_net.parameters()]


@pytest.mark.parametrize("seed", [0, 5])
def test_matches_sb3_dqn_bitwise(seed):
    """With no interventions, PlasticDQN's updates are exactly SB3's."""
    torch.set_num_threads(1)
    ref = DQN("MlpPolicy", "CartPole-v1", seed=seed, **KW).learn(800)
    ours = PlasticDQN("MlpPolicy", "CartPole-v1", seed=seed, **KW).learn(800)
    assert ours.n_updates == ref._n_updates > 0
    for a, b in zip(_params(ref), _params(ours), strict=True):
        assert torch.equal(a, b)
    assert type(ours.replay_buffer).__name__ == "LeanReplayBuffer"  # lean add() and sampling exercised
    assert ours.policy.optimizer.param_groups[0]["foreach"] is True  # multi-tensor Adam exercised
    for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
        np.testing.assert_array_equal(getattr(ours.replay_buffer, name), getattr(ref.replay_buffer, name))


@pytest.mark.parametrize("timeouts", [False, True])
def test_lean_replay_samples_equal_sb3s(timeouts):
    """Same random draws, same values, dtypes and shapes as SB3's ReplayBuffer.sample."""
    from gymnasium import spaces
    from stable_baselines3.common.buffers import ReplayBuffer

    from rlplast.agents.speed import LeanReplayBuffer

    obs_space = spaces.Box(-1, 1, (3, 2), np.float32)
    kw = dict(device="cpu", n_envs=2, handle_timeout_termination=timeouts)
    ref = ReplayBuffer(50, obs_space, spaces.Discrete(4), **kw)
    lean = LeanReplayBuffer(50, obs_space, spaces.Discrete(4), **kw)
    rng = np.random.default_rng(0)
    for _ in range(70):  # wraps around: the full-buffer branch is sampled too
        obs, nxt = rng.normal(size=(2, 2, 3, 2)).astype(np.float32)
        args = (obs, nxt, rng.integers(4, size=2), rng.normal(size=2), rng.random(2) < 0.3)
        infos = [{"TimeLimit.truncated": bool(rng.random() < 0.5)} for _ in range(2)]
        ref.add(*args, infos)
        lean.add(*args, infos)
    np.random.seed(3)
    expected = ref.sample(64)
    state = np.random.get_state()
    np.random.seed(3)
    got = lean.sample(64)
    assert np.random.get_state()[1].tolist() == state[1].tolist()  # the same draws were consumed
    assert got.discounts is None and expected.discounts is None
    for name in ("observations", "actions", "next_observations", "dones", "rewards"):
        a, b = getattr(expected, name), getattr(got, name)
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), name
    # With timeout handling some stored dones are masked out: the masking path was compared too.
    assert bool((ref.dones * ref.timeouts).any()) is timeouts


def test_differs_from_sb3_when_an_intervention_adds_loss():
    """The equivalence test above can fail: an extra loss term changes the parameters."""

    class Pull(Intervention):
        def loss(self, batch, features, q_values):
            return 0.1 * features.pow(2).mean()

    ref = DQN("MlpPolicy", "CartPole-v1", seed=0, **KW).learn(400)
    ours = PlasticDQN("MlpPolicy", "CartPole-v1", seed=0, interventions=[Pull()], **KW).learn(400)
    assert any(not torch.equal(a, b) for a, b in zip(_params(ref), _params(ours), strict=True))


def test_loss_hook_sees_penultimate_features_and_q_values():
    seen = {}

    class Spy(Intervention):
        def setup(self, model):
            super().setup(model)
            seen["setup"] = True

        def loss(self, batch, features, q_values):
            seen["shapes"] = (tuple(features.shape), tuple(q_values.shape), tuple(batch.actions.shape))
            last = self.model.q_net.q_net[-1]
            seen["consistent"] = torch.allclose(last(features), q_values)
            seen["grad"] = features.requires_grad
            return None

        def after_update(self, n_updates, num_timesteps):
            seen["updates"] = n_updates

    model = PlasticDQN("MlpPolicy", "CartPole-v1", seed=0, interventions=[Spy()], **KW).learn(300)
    assert seen["setup"] and seen["consistent"] and seen["grad"]
    assert seen["shapes"] == ((32, 16), (32, 2), (32, 1))
    assert seen["updates"] == model.n_updates


def test_records_grad_norm_from_clipping():
    model = PlasticDQN("MlpPolicy", "CartPole-v1", seed=1, **KW).learn(400)
    stats = model.pop_train_stats()
    assert math.isfinite(stats["train/grad_norm"]) and stats["train/grad_norm"] > 0
    assert math.isfinite(stats["train/loss"])
    assert float(model.last_grad_norm) > 0
    again = model.pop_train_stats()  # the window restarts after each read
    assert math.isnan(again["train/grad_norm"])


def test_save_and_load_round_trip(tmp_path):
    model = PlasticDQN("MlpPolicy", "CartPole-v1", seed=2, **KW).learn(300)
    model.save(tmp_path / "model.zip")
    loaded = PlasticDQN.load(tmp_path / "model.zip")
    assert isinstance(loaded, PlasticDQN) and loaded.interventions == []
    for a, b in zip(_params(model), _params(loaded), strict=True):
        assert torch.equal(a, b)
    obs = np.zeros(4, dtype=np.float32)
    assert model.predict(obs, deterministic=True)[0] == loaded.predict(obs, deterministic=True)[0]
    loaded.set_env(gym.make("CartPole-v1"))
    loaded.learn(200)  # keeps training after a load


def test_training_mode_walk_skipped_only_when_no_module_depends_on_it():
    model = PlasticDQN("MlpPolicy", "CartPole-v1", policy_kwargs=dict(net_arch=[8]))
    model.q_net.train(True)
    model.policy.set_training_mode(False)
    assert model.policy.training is False
    assert model.q_net.training is True  # mode-free net: the walk was skipped

    with_dropout = PlasticDQN("MlpPolicy", "CartPole-v1", policy_kwargs=dict(net_arch=[8]))
    with_dropout.q_net.q_net.insert(1, torch.nn.Dropout(0.5))
    with_dropout.policy.set_training_mode(True)
    with_dropout.policy.set_training_mode(False)
    assert with_dropout.q_net.q_net[1].training is False
    with_dropout.policy.set_training_mode(True)
    assert with_dropout.q_net.q_net[1].training is True


@pytest.mark.parametrize("act", [torch.nn.ReLU, torch.nn.Tanh])
def test_greedy_predict_matches_sb3_policy_predict(act):
    model = PlasticDQN(
        "MlpPolicy", "CartPole-v1", seed=4, policy_kwargs=dict(net_arch=[16], activation_fn=act)
    )
    obs = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    ours, _ = model.predict(obs, deterministic=True)
    ref, _ = model.policy.predict(obs, deterministic=True)
    assert ours.dtype == ref.dtype and ours.shape == ref.shape == (64,)
    assert np.array_equal(ours, ref)
    single, _ = model.predict(obs[0], deterministic=True)  # non-vectorized: SB3's own path
    assert single.shape == () and single == ref[0]
    assert model._direct_layers() is not None  # the layer-by-layer path was the one taken


def test_greedy_predict_honours_forward_hooks():
    model = PlasticDQN("MlpPolicy", "CartPole-v1", seed=4, policy_kwargs=dict(net_arch=[16]))
    obs = np.random.default_rng(1).normal(size=(8, 4)).astype(np.float32)
    seen = []
    handle = model.q_net.q_net[0].register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    assert model._direct_layers() is None
    ours, _ = model.predict(obs, deterministic=True)
    assert seen == [(8, 16)]
    handle.remove()
    assert model._direct_layers() is not None
    assert np.array_equal(ours, model.predict(obs, deterministic=True)[0])


def test_lean_vec_env_steps_exactly_like_dummy_vec_env():
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from rlplast.agents.speed import LeanDummyVecEnv

    lean = PlasticDQN._wrap_env(gym.make("CartPole-v1"))
    assert type(lean) is LeanDummyVecEnv
    plain = DummyVecEnv([lambda: Monitor(gym.make("CartPole-v1"))])
    lean.seed(3)
    plain.seed(3)
    np.testing.assert_array_equal(lean.reset(), plain.reset())
    rng = np.random.default_rng(0)
    ends = 0
    for _ in range(300):
        actions = rng.integers(0, 2, size=1)
        obs_a, rew_a, done_a, infos_a = lean.step(actions)
        obs_b, rew_b, done_b, infos_b = plain.step(actions)
        np.testing.assert_array_equal(obs_a, obs_b)
        np.testing.assert_array_equal(rew_a, rew_b)
        np.testing.assert_array_equal(done_a, done_b)
        assert infos_a[0].keys() == infos_b[0].keys()
        if done_a[0]:
            ends += 1
            np.testing.assert_array_equal(
                infos_a[0]["terminal_observation"], infos_b[0]["terminal_observation"]
            )
            assert infos_a[0]["episode"]["r"] == infos_b[0]["episode"]["r"]
        # What the caller got stays as it was after the next step (no aliasing of buffers or dicts).
        held_obs, held_info = obs_a.copy(), dict(infos_a[0])
        lean.step(actions)
        plain.step(actions)
        np.testing.assert_array_equal(obs_a, held_obs)
        assert infos_a[0] == held_info
    assert ends >= 5


def test_sb3_logger_gets_the_same_train_loss_as_sb3():
    from stable_baselines3.common.logger import KVWriter, Logger

    class Collect(KVWriter):
        def __init__(self):
            self.rows = []

        def write(self, key_values, key_excluded, step=0):
            self.rows.append((step, key_values.get("train/loss")))

    def dumped(cls):
        torch.set_num_threads(1)
        model = cls("MlpPolicy", "CartPole-v1", seed=2, **KW)
        writer = Collect()
        model.set_logger(Logger(folder=None, output_formats=[writer]))
        model.learn(600, log_interval=1)
        return [(step, loss) for step, loss in writer.rows if loss is not None]

    ref, ours = dumped(DQN), dumped(PlasticDQN)
    assert len(ref) > 5
    assert [step for step, _ in ours] == [step for step, _ in ref]
    for (_, a), (_, b) in zip(ref, ours, strict=True):
        assert b == pytest.approx(a, rel=1e-6)


def test_public_accessors_read_the_agent():
    model = PlasticDQN("MlpPolicy", "CartPole-v1", seed=3, stats_window_size=7, **KW).learn(300)
    assert model.n_updates == model._n_updates > 0
    assert model.stats_window_size == 7
    buffer = model.replay_buffer
    assert model.replay_size() == buffer.size() == 300
    idx = np.array([0, 5, 299, 5])
    obs, actions = model.replay_states(idx)
    assert obs.device == model.device and actions.dtype == torch.long and actions.shape == (4,)
    np.testing.assert_array_equal(obs.numpy(), buffer.observations[idx, 0])
    np.testing.assert_array_equal(actions.numpy(), buffer.actions[idx, 0].reshape(-1))
    obs[:] = 1e6  # a copy: the buffer is untouched
    assert float(np.abs(buffer.observations[idx, 0]).max()) < 1e6


def test_replay_states_of_dict_observations():
    from stable_baselines3.common.envs import SimpleMultiObsEnv

    model = PlasticDQN(
        "MultiInputPolicy", SimpleMultiObsEnv(), seed=0, buffer_size=200, learning_starts=50
    ).learn(60)
    obs, actions = model.replay_states(np.arange(10), np.zeros(10, dtype=int))
    assert set(obs) == set(model.replay_buffer.observations) and actions.shape == (10,)
    for key, value in obs.items():
        np.testing.assert_array_equal(value.numpy(), model.replay_buffer.observations[key][:10, 0])


def test_schedule_timesteps_keeps_a_continued_run_on_its_original_schedule():
    from stable_baselines3.common.callbacks import BaseCallback

    class Rates(BaseCallback):
        def __init__(self):
            super().__init__()
            self.rates = []

        def _on_step(self):
            self.rates.append(self.model.exploration_rate)
            return True

    def continued(schedule: int | None) -> list[float]:
        model = PlasticDQN(
            "MlpPolicy", "CartPole-v1", seed=0, exploration_fraction=1.0, learning_starts=10_000
        ).learn(200)
        assert model.exploration_rate == pytest.approx(model.exploration_final_eps)
        model.schedule_timesteps = schedule
        rates = Rates()
        model.learn(200, callback=rates, reset_num_timesteps=False)
        return rates.rates[1:]  # the rate each step acted with (SB3 updates it after the step)

    assert set(continued(200)) == {0.05}  # past the original budget: the final epsilon
    assert max(continued(None)) > 0.5  # SB3's default: the schedule spans the new total, epsilon rises


def test_replay_states_as_the_networks_see_them_under_vec_normalize():
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    env = VecNormalize(DummyVecEnv([lambda: gym.make("CartPole-v1")]), norm_reward=False)
    model = PlasticDQN("MlpPolicy", env, seed=0, learning_starts=1000).learn(200)
    idx = np.arange(50)
    raw, _ = model.replay_states(idx)
    seen, _ = model.replay_states(idx, normalize=True)
    np.testing.assert_array_equal(raw.numpy(), model.replay_buffer.observations[idx, 0])
    np.testing.assert_allclose(seen.numpy(), env.normalize_obs(raw.numpy()))
    assert not torch.allclose(raw, seen)  # the comparison can fail: normalizing changed them
