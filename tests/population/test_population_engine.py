"""The training loop: SB3's schedule of updates, target copies and ε; env seeding and storage;
determinism; member independence; callbacks; configs; bad input."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import LinearSchedule

from rlplast.config import config_from_dict
from rlplast.errors import UserError
from rlplast.population import DQNSettings, Population, PopulationCallback


@pytest.mark.parametrize("initial, final, fraction", [(1.0, 0.05, 0.1), (0.5, 0.1, 0.37), (1.0, 1.0, 0.5)])
def test_exploration_schedule_equals_sb3s(initial, final, fraction):
    settings = DQNSettings(
        exploration_initial_eps=initial, exploration_final_eps=final, exploration_fraction=fraction
    )
    ref = LinearSchedule(initial, final, fraction)
    for progress_remaining in np.linspace(1.0, 0.0, 97):
        assert settings.exploration_rate(float(progress_remaining)) == ref(float(progress_remaining))


class _Record(PopulationCallback):
    def __init__(self) -> None:
        self.eps: list[float] = []

    def on_step(self, population: Population) -> bool:
        self.eps.append(population.exploration_rate)  # the ε this step's action was drawn with
        return True


class _RecordSB3(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.eps: list[float] = []

    def _on_step(self) -> bool:
        self.eps.append(self.model.exploration_rate)
        return True


def test_loop_schedule_equals_plastic_dqn(make_population, make_dqn, monkeypatch):
    """When updates happen (after each train_freq steps, once num_timesteps > learning_starts), how
    many, when the target is copied (every target_update_interval env steps), the ε each step
    acts with (0 before the first step's update, then SB3's schedule), and the overshoot of a budget
    that is not a multiple of train_freq: all as in PlasticDQN (= SB3's DQN)."""
    kw = dict(learning_starts=30, train_freq=3, gradient_steps=2, target_update_interval=7)
    kw.update(exploration_fraction=0.5, batch_size=8)
    events: dict[str, list[tuple[str, int]]] = {"ours": [], "theirs": []}

    model = make_dqn(0, **kw)
    train = model.train

    def logged_train(*args, **kwargs):
        events["theirs"].append(("train", model.num_timesteps))
        return train(*args, **kwargs)

    monkeypatch.setattr(model, "train", logged_train)
    import stable_baselines3.dqn.dqn as sb3_dqn

    polyak = sb3_dqn.polyak_update

    def logged_polyak(params, targets, tau):
        params = list(params)
        if params:  # SB3 calls it a second time for batch-norm statistics (none here)
            events["theirs"].append(("target", model.num_timesteps))
        return polyak(params, targets, tau)

    monkeypatch.setattr(sb3_dqn, "polyak_update", logged_polyak)
    sb3_record = _RecordSB3()
    model.learn(100, callback=sb3_record)

    pop = make_population([0, 1], **kw)
    monkeypatch.setattr(
        pop.net, "copy_to_target", lambda tau: events["ours"].append(("target", pop.num_timesteps))
    )
    pop_train = pop.train

    def logged_pop_train(gradient_steps):
        events["ours"].append(("train", pop.num_timesteps))
        return pop_train(gradient_steps)

    monkeypatch.setattr(pop, "train", logged_pop_train)
    record = _Record()
    pop.learn(100, callback=record)

    assert events["ours"] == events["theirs"]
    assert record.eps == sb3_record.eps and record.eps[0] == 0.0
    assert pop.num_timesteps == model.num_timesteps == 102
    assert pop.n_updates == model.pop_train_stats()["train/n_updates"] > 0


def test_envs_are_seeded_as_single_runs(make_population, make_dqn):
    """Member i's first observation is the one PlasticDQN(seed=seeds[i]) starts from."""
    seeds = [5, 9]
    pop = make_population(seeds, learning_starts=1000)
    pop.learn(4)
    for i, seed in enumerate(seeds):
        model = make_dqn(seed, learning_starts=1000)
        model.learn(4)
        first = torch.as_tensor(model.replay_buffer.observations[0, 0])
        assert torch.equal(pop.replay.observations[i, 0], first)


def test_stored_transitions_follow_sb3s_timeout_semantics(make_population):
    """Consecutive transitions chain (next obs = following obs) except where an episode ended;
    there the stored next obs is the true last one; a time-limit end is a timeout (bootstraps), a
    termination is not."""
    pop = make_population(
        [0, 1, 2], env=lambda: gym.make("CartPole-v1", max_episode_steps=15), learning_starts=400
    )
    pop.learn(400)
    r = pop.replay
    n = r.pos
    obs, nxt = r.observations[:, :n], r.next_observations[:, :n]
    dones, timeouts = r.dones[:, :n].bool(), r.timeouts[:, :n].bool()
    chained = torch.all(nxt[:, :-1] == obs[:, 1:], dim=-1)
    assert torch.equal(chained | dones[:, :-1], torch.ones_like(chained))
    assert bool((~chained & dones[:, :-1]).any())  # resets happened, and were not chained
    terminated = dones & ~timeouts
    assert bool(timeouts.any()) and bool(terminated.any())
    # CartPole terminates only outside its bounds (|x| > 2.4 or |angle| > 12 degrees).
    out = (nxt[..., 0].abs() > 2.4) | (nxt[..., 2].abs() > 0.2094)
    assert torch.equal(out[terminated], torch.ones_like(out[terminated]))
    # Episodes: CartPole pays 1 per step, time limit 15.
    episodes = pop.tracker.pop_episodes()
    assert episodes and all(e.episode_return == e.length <= 15 for e in episodes)
    assert sum(int(d) for d in dones.sum(dim=1)) == len(episodes)


def _snapshot(pop: Population, member: int) -> dict:
    view = pop.member(member)
    return {
        "params": [p.detach().clone() for p in view.q_net.parameters()],
        "target": [p.detach().clone() for p in view.q_net_target.parameters()],
        "obs": pop.replay.observations[member].clone(),
        "actions": pop.replay.actions[member].clone(),
        "episodes": [
            (e.step, e.episode_return, e.length) for e in pop.tracker.episodes if e.member == member
        ],
        "exp_avg_sq": [t[member].clone() for t in pop.optimizer.exp_avg_sq],
    }


def _assert_same(a: dict, b: dict) -> None:
    assert a["episodes"] == b["episodes"]
    for key in ("params", "target", "exp_avg_sq"):
        for x, y in zip(a[key], b[key], strict=True):
            assert torch.equal(x, y), key
    assert torch.equal(a["obs"], b["obs"]) and torch.equal(a["actions"], b["actions"])


def test_same_seeds_give_identical_runs(make_population):
    runs = []
    for _ in range(2):
        pop = make_population([0, 1], learning_starts=50)
        pop.learn(400)
        runs.append([_snapshot(pop, i) for i in range(2)])
    for a, b in zip(*runs, strict=True):
        _assert_same(a, b)
    assert not torch.equal(runs[0][0]["params"][0], runs[0][1]["params"][0])


def test_a_member_trains_as_a_population_of_one(make_population):
    """Member 1 of a population with seeds [0, 1, 2] equals member 0 of a population with seed [1]:
    the same env, exploration, replay draws and updates (bitwise)."""
    big = make_population([0, 1, 2], learning_starts=50)
    big.learn(500)
    small = make_population([1], learning_starts=50)
    small.learn(500)
    _assert_same(_snapshot(big, 1), _snapshot(small, 0))
    assert big.n_updates == small.n_updates > 100


def test_callbacks_can_stop_training(make_population):
    class StopAt(PopulationCallback):
        def __init__(self, step: int) -> None:
            self.step, self.started, self.ended, self.iterations = step, False, False, 0

        def on_training_start(self, population: Population) -> None:
            self.started = True

        def on_step(self, population: Population) -> bool:
            assert population.last_step is not None and population.last_step.rewards.shape == (2,)
            return population.num_timesteps < self.step

        def on_iteration_end(self, population: Population) -> bool:
            self.iterations += 1
            return True

        def on_training_end(self, population: Population) -> None:
            self.ended = True

    pop = make_population([0, 1], learning_starts=10)
    cb = StopAt(22)
    pop.learn(100, callback=cb)
    assert cb.started and cb.ended and pop.num_timesteps == 22 and cb.iterations == 5
    assert pop.replay.pos == 21  # the stopping step is not stored, as in SB3

    class StopIterating(PopulationCallback):
        def on_iteration_end(self, population: Population) -> bool:
            return population.num_timesteps < 12

    pop = make_population([0, 1], learning_starts=10)
    pop.learn(100, callback=StopIterating())
    assert pop.num_timesteps == 12 and pop.n_updates == 1


def test_shifting_env_reports_tasks_per_member(make_population):
    pop = make_population(
        [0, 1],
        env="rlplast/PermutedCartPole-v0",
        env_kwargs={"steps_per_task": 60, "n_tasks": 3},
        learning_starts=10,
    )
    pop.learn(200)
    switches = pop.tracker.pop_switches()
    # 3 tasks of 60 steps, then the sequence starts over (after_last: cycle).
    assert [(s.member, s.step, s.task_id) for s in switches] == [
        (m, step, task) for step, task in ((61, 1), (121, 2), (181, 0)) for m in (0, 1)
    ]
    tasks = {e.task_id for e in pop.tracker.pop_episodes()}
    assert tasks == {0, 1, 2}
    assert pop.tracker.task.tolist() == [0, 0]  # after_last: cycle


def test_from_config_and_minatar_cnn():
    """A MinAtar config (uint8 grids, the conv extractor) builds and trains; observations stay uint8;
    member 0 starts as PlasticDQN with that config's seed would."""
    pytest.importorskip("minatar")
    from rlplast.agents import PlasticDQN
    from rlplast.agents.minatar_cnn import MinAtarCNN

    cfg = config_from_dict(
        {
            "env": {"id": "rlplast/MinAtarSequence-v0", "kwargs": {"steps_per_task": 100, "n_tasks": 2}},
            "agent": {
                "policy": "CnnPolicy",
                "features_extractor": "minatar_cnn",
                "net_arch": [],
                "buffer_size": 500,
                "learning_starts": 40,
                "batch_size": 8,
                "target_update_interval": 20,
            },
            "train": {"device": "cpu"},
        }
    )
    pop = Population.from_config(cfg, seeds=[3, 4])
    assert pop.replay.observations.dtype == torch.uint8
    model = PlasticDQN(
        "CnnPolicy",
        "rlplast/MinAtarSequence-v0",
        seed=3,
        buffer_size=10,
        policy_kwargs={"net_arch": [], "features_extractor_class": MinAtarCNN, "normalize_images": False},
    )
    for a, b in zip(pop.member(0).q_net.parameters(), model.q_net.parameters(), strict=True):
        assert torch.equal(a, b)
    pop.learn(80)
    assert pop.n_updates == 10 and np.isfinite(pop.pop_train_stats()["train/loss"]).all()
    obs = pop.replay.observations[:, :8]
    stacked = pop.net.forward(obs, pop.net.online)
    for i in range(2):
        with torch.no_grad():
            single = pop.member(i).q_net(obs[i])
        torch.testing.assert_close(stacked[i], single, rtol=1e-5, atol=1e-6)
    pop.close()


def test_bad_input_is_a_user_error(make_population):
    with pytest.raises(UserError, match="at least 1 member"):
        make_population([])
    with pytest.raises(UserError, match="seeds must be >= 0"):
        make_population([0, -1])
    with pytest.raises(UserError, match="unknown hyperparameter"):
        make_population([0], gama=0.9)
    with pytest.raises(UserError, match="Discrete action space"):
        make_population([0], env="Pendulum-v1")
    with pytest.raises(UserError, match="unknown env id"):
        make_population([0], env="NoSuchEnv-v0")
    with pytest.raises(UserError, match="observation space .* differs"):
        make_population([0, 1], env=[lambda: gym.make("CartPole-v1"), lambda: gym.make("Acrobot-v1")])
    with pytest.raises(UserError, match="replay buffers of 2 members need"):
        make_population([0, 1], buffer_size=10**13)
    with pytest.raises(UserError, match="gradient_steps"):
        make_population([0], gradient_steps=0)
