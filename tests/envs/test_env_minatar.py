"""MinAtar game sequence: interface, switching, missing extra, and an SB3 DQN smoke run."""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import pytest

import rlplast.envs  # noqa: F401  (registers the ids)
from rlplast.errors import UserError

pytest.importorskip("minatar")

from rlplast.envs.game_sequence import GameSequence, MinAtarGames  # noqa: E402


def test_observation_and_action_interface():
    env = gym.make("rlplast/MinAtarSequence-v0")
    assert env.observation_space == gym.spaces.Box(0, 1, (10, 10, 10), np.uint8)
    assert env.action_space == gym.spaces.Discrete(6)
    obs, info = env.reset(seed=0)
    assert obs.shape == (10, 10, 10) and obs.dtype == np.uint8
    assert info["task_id"] == 0 and info["game"] == "space_invaders"
    assert set(np.unique(obs)) <= {0.0, 1.0}
    assert not obs[6:].any()  # SpaceInvaders has 6 channels, the rest is padding


def test_every_shared_action_is_valid_in_every_game():
    env = MinAtarGames(games=("space_invaders", "asterix", "seaquest"), sticky_action_prob=0.0)
    for g in range(3):
        env.set_game(g)
        env.reset(seed=g)
        for a in range(6):
            obs, reward, *_ = env.step(a)
            assert obs in env.observation_space
    # actions outside a game's minimal set run as noop
    assert list(env._action_maps[0]) == [0, 1, 0, 3, 0, 5]  # SpaceInvaders: n, l, r, f
    assert list(env._action_maps[1]) == [0, 1, 2, 3, 4, 0]  # Asterix: n, l, u, r, d
    assert list(env._action_maps[2]) == [0, 1, 2, 3, 4, 5]  # Seaquest: all six


def test_games_switch_in_order_at_episode_boundaries():
    env = GameSequence(MinAtarGames(), steps_per_task=3, n_tasks=3)
    games = []
    _, info = env.reset(seed=0)
    for _ in range(4):
        games.append(info["game"])
        for _ in range(3):
            _, _, _, _, step_info = env.step(0)
            assert step_info["game"] == info["game"]
        _, info = env.reset()
    assert games == ["space_invaders", "asterix", "seaquest", "space_invaders"]


def test_task_id_is_the_task_of_the_game_being_played():
    """A manual set_task mid-episode changes the game only at the next reset; until then the steps
    keep reporting the task they are played under."""
    env = GameSequence(MinAtarGames(games=("breakout", "freeway")), steps_per_task=10_000, n_tasks=2)
    _, info = env.reset(seed=0)
    assert (info["task_id"], info["game"]) == (0, "breakout")
    env.set_task(1)
    _, _, _, _, step_info = env.step(0)
    assert (step_info["task_id"], step_info["game"]) == (0, "breakout")
    _, info = env.reset()
    _, _, _, _, step_info = env.step(0)
    assert (info["task_id"], info["game"]) == (1, "freeway")
    assert (step_info["task_id"], step_info["game"]) == (1, "freeway")


def test_seeded_resets_are_reproducible():
    a = gym.make("rlplast/MinAtarSequence-v0")
    b = gym.make("rlplast/MinAtarSequence-v0")
    for env in (a, b):
        env.reset(seed=11)
    for t in range(30):
        oa, ra, *_ = a.step(t % 6)
        ob, rb, *_ = b.step(t % 6)
        np.testing.assert_array_equal(oa, ob)
        assert ra == rb


def test_bad_input_raises_user_error():
    with pytest.raises(UserError, match="switch_at"):
        gym.make("rlplast/MinAtarSequence-v0", switch_at="step")
    with pytest.raises(UserError, match="pong"):
        MinAtarGames(games=("pong",))


def test_missing_minatar_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "minatar", None)
    with pytest.raises(UserError, match=r"pip install 'rlplast\[minatar\]'"):
        MinAtarGames()


def test_minatar_cnn_trains_dqn_on_the_sequence():
    from stable_baselines3 import DQN
    from stable_baselines3.common.vec_env import VecTransposeImage

    from rlplast.agents.minatar_cnn import MinAtarCNN

    env = gym.make("rlplast/MinAtarSequence-v0", steps_per_task=100)
    model = DQN(
        "CnnPolicy",
        env,
        learning_starts=64,
        buffer_size=1_000,
        batch_size=32,
        learning_rate=3e-4,
        train_freq=4,
        seed=0,
        policy_kwargs=dict(features_extractor_class=MinAtarCNN, normalize_images=False, net_arch=[]),
    )
    assert not isinstance(model.get_env(), VecTransposeImage)
    assert model.observation_space.shape == (10, 10, 10)
    before = [p.detach().clone() for p in model.q_net.parameters()]
    model.learn(300)
    assert any(not np.allclose(b, p.detach()) for b, p in zip(before, model.q_net.parameters(), strict=True))
    extractor = model.q_net.features_extractor
    assert isinstance(extractor, MinAtarCNN) and extractor.features_dim == 128
    assert model.get_env().env_method("schedule_state")[0]["step"] == 300


def test_uint8_observations_train_exactly_like_float32_ones():
    """The compact observations change memory only: the same run with float32 copies of them gives
    bitwise-identical parameters, and the replay buffer is a quarter of the size."""
    import torch

    from rlplast.agents import PlasticDQN
    from rlplast.agents.minatar_cnn import MinAtarCNN

    def run(as_float: bool) -> PlasticDQN:
        env = gym.make("rlplast/MinAtarSequence-v0", steps_per_task=150)
        if as_float:
            space = gym.spaces.Box(0.0, 1.0, (10, 10, 10), np.float32)
            env = gym.wrappers.TransformObservation(env, lambda o: o.astype(np.float32), space)
        model = PlasticDQN(
            "CnnPolicy",
            env,
            learning_starts=64,
            buffer_size=1_000,
            batch_size=32,
            train_freq=4,
            seed=1,
            policy_kwargs=dict(features_extractor_class=MinAtarCNN, normalize_images=False, net_arch=[32]),
        )
        return model.learn(400)

    compact, wide = run(False), run(True)
    assert compact.replay_buffer.observations.dtype == np.uint8
    assert wide.replay_buffer.observations.dtype == np.float32
    assert compact.replay_buffer.observations.nbytes * 4 == wide.replay_buffer.observations.nbytes
    np.testing.assert_array_equal(compact.replay_buffer.observations, wide.replay_buffer.observations)
    assert compact._n_updates == wide._n_updates > 0
    for a, b in zip(compact.q_net.parameters(), wide.q_net.parameters(), strict=True):
        assert torch.equal(a, b)
