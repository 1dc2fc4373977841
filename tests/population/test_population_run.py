"""Population runs: one ordinary run directory per member, checkpoints, resume and failure isolation."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rlplast.agents import PlasticDQN
from rlplast.config import Config, dump_config, load_config
from rlplast.errors import UserError
from rlplast.interventions.base import INTERVENTIONS, Intervention
from rlplast.population import Population
from rlplast.population.run import MemberModel, check_population, resume_population, run_population
from rlplast.runlog import WALL_CLOCK_COLUMNS, read_metrics_csv
from rlplast.train import run_training

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import REPO, tiny_overrides  # noqa: E402

STEPS = 1600
BASE = [
    *tiny_overrides(STEPS, metrics=True),
    "env.kwargs.steps_per_task=500",
    "env.kwargs.n_tasks=4",
    "checkpoint.every_steps=100",
    "checkpoint.keep=50",
    "output.tensorboard=false",
]


def _configs(seeds, extra=()) -> list[Config]:
    path = REPO / "configs/permuted_cartpole.yaml"
    return [load_config(path, [*BASE, *extra, f"train.seed={s}"]) for s in seeds]


def _dirs(root: Path, seeds) -> list[Path]:
    return [root / f"m-s{s}" for s in seeds]


def _rows(run: Path) -> list[dict[str, str]]:
    return [
        {k: v for k, v in r.items() if k not in WALL_CLOCK_COLUMNS}
        for r in read_metrics_csv(run / "metrics.csv")
    ]


def _assert_same_member(a: Path, b: Path) -> None:
    ra, rb = _rows(a), _rows(b)
    assert [r["step"] for r in ra] == [r["step"] for r in rb]  # nothing duplicated or missing
    assert ra == rb
    assert (a / "episodes.csv").read_text() == (b / "episodes.csv").read_text()


def _need_interventions() -> None:
    """Interventions per member live in rlplast.population.interventions (its own change)."""
    pytest.importorskip("rlplast.population.interventions")


# ------------------------------------------------------------------------------ outputs
def test_members_write_what_rlplast_train_writes(tmp_path):
    """config.yaml with the member's seed, metrics.csv with a single run's columns, episodes.csv,
    tb/, summary.json and a model.zip that PlasticDQN.load opens and that acts as the member."""
    extra = ["output.tensorboard=true", "train.total_steps=600"]
    cfgs = _configs([0, 1], extra)
    dirs = _dirs(tmp_path, [0, 1])
    result = run_population(cfgs, dirs, tmp_path / "pop", quiet=True)
    assert [m.ok for m in result.members] == [True, True]
    single = tmp_path / "single"
    run_training(cfgs[1], single, quiet=True)
    for cfg, d in zip(cfgs, dirs, strict=True):
        assert (d / "config.yaml").read_text() == dump_config(cfg)
        assert load_config(d / "config.yaml").train.seed == cfg.train.seed
        assert (d / "metrics.csv").read_text().splitlines()[0] == (
            single / "metrics.csv"
        ).read_text().splitlines()[0]
        assert (d / "episodes.csv").read_text().splitlines()[
            0
        ] == "step,episode_return,episode_length,task_id"
        assert list((d / "tb").glob("events.*"))
        summary = json.loads((d / "summary.json").read_text())
        assert set(json.loads((single / "summary.json").read_text())) <= set(summary)
        assert summary["seed"] == cfg.train.seed and summary["engine"] == "population"
        assert summary["steps"] == 600 and not summary["resumed"]
    # Same semantics as a single run's rows: the row steps, and the episode means over the episodes
    # episodes.csv lists up to each row.
    rows = read_metrics_csv(dirs[1] / "metrics.csv")
    assert [r["step"] for r in rows] == [r["step"] for r in read_metrics_csv(single / "metrics.csv")]
    episodes = np.loadtxt(dirs[1] / "episodes.csv", delimiter=",", skiprows=1)
    for row in rows:
        done = episodes[episodes[:, 0] <= int(row["step"])]
        assert int(row["rollout/episodes"]) == len(done)
        if len(done):
            assert float(row["rollout/ep_return_mean"]) == pytest.approx(done[-100:, 1].mean())
    assert rows[0]["train/loss"] == ""  # no update before learning_starts: empty, as in a single run
    assert rows[-1]["collapse/nc1_greedy"] != "" and rows[-1]["shift/task_id"] == "1"


def test_model_zip_acts_as_the_member(tmp_path):
    cfgs = _configs([3, 4], ["train.total_steps=400"])
    dirs = _dirs(tmp_path, [3, 4])
    pop = Population.from_config(cfgs[0], [3, 4])
    pop.learn(400)
    from rlplast.population.run import save_member_models

    save_member_models(
        pop, [(i, c, d.with_suffix(".zip"), None) for i, (c, d) in enumerate(zip(cfgs, dirs, strict=True))]
    )
    obs = pop.replay.observations[:, :200]
    for i, d in enumerate(dirs):
        model = PlasticDQN.load(d.with_suffix(".zip"), device="cpu")
        actions, _ = model.predict(obs[i].numpy(), deterministic=True)
        with torch.no_grad():
            expected = pop.member(i).q_net(obs[i]).argmax(dim=1).numpy()
        assert np.array_equal(actions, expected)
        assert model.seed == cfgs[i].train.seed and model.num_timesteps == pop.num_timesteps
        for p, q in zip(
            model.q_net_target.parameters(), pop.member(i).q_net_target.parameters(), strict=True
        ):
            assert torch.equal(p, q)
        # The Adam state travels too: the member can be trained on as an ordinary SB3 model.
        state = model.policy.optimizer.state
        first = next(iter(model.q_net.parameters()))
        assert torch.equal(state[first]["exp_avg"], pop.optimizer.exp_avg[0][i])
        assert float(state[first]["step"]) == float(pop.optimizer.steps[0, i])
    pop.close()


def test_member_metrics_equal_a_single_runs_on_the_same_network_and_replay(tmp_path):
    """A member's metric values are what MetricsProbe computes for a PlasticDQN with the same
    network, the same replay contents and the same seed (its probe's generators are the run's)."""
    from rlplast.callbacks import MetricsProbe

    cfg = _configs([5], ["train.total_steps=600"])[0]
    pop = Population.from_config(cfg, [5])
    pop.learn(600)
    member = MemberModel(pop, 0, cfg.agent.stats_window_size)
    model = PlasticDQN(
        "MlpPolicy", "CartPole-v1", seed=5, buffer_size=600, policy_kwargs={"net_arch": [32, 32]}
    )
    with torch.no_grad():
        for p, q in zip(model.q_net.parameters(), member.q_net.parameters(), strict=True):
            p.copy_(q)
    buffer = model.replay_buffer
    n = pop.replay.size()
    buffer.observations[:n, 0] = pop.replay.observations[0, :n].numpy()
    buffer.actions[:n, 0, 0] = pop.replay.actions[0, :n].numpy()
    buffer.pos, buffer.full = n % buffer.buffer_size, n == buffer.buffer_size
    for with_probe in (False, True):
        ours, theirs = (
            MetricsProbe(cfg.metrics, seed=5, echo=False),
            MetricsProbe(cfg.metrics, seed=5, echo=False),
        )
        ours.init_params = [p.clone() for p in member.view.init_params]
        theirs.init_params = [p.clone() for p in member.view.init_params]
        a, b = ours.compute(member, with_probe), theirs.compute(model, with_probe)
        assert len(a) > 20 and a.keys() == b.keys()
        assert all((math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a), [
            k for k in a if a[k] != b[k] and not (math.isnan(a[k]) and math.isnan(b[k]))
        ]
    pop.close()


# ------------------------------------------------------------------------------ determinism
def test_same_config_and_seeds_give_identical_files_and_members_depend_only_on_their_seed(tmp_path):
    cfgs = _configs([0, 1, 2])
    a, b, alone = tmp_path / "a", tmp_path / "b", tmp_path / "alone"
    run_population(cfgs, _dirs(a, [0, 1, 2]), a / "pop", quiet=True)
    run_population(cfgs, _dirs(b, [0, 1, 2]), b / "pop", quiet=True)
    run_population(cfgs[1:2], _dirs(alone, [1]), alone / "pop", quiet=True)
    for s in (0, 1, 2):
        _assert_same_member(a / f"m-s{s}", b / f"m-s{s}")
    _assert_same_member(a / "m-s1", alone / "m-s1")  # member 1 of [0, 1, 2] is the population [1]


def test_interventions_run_per_member_and_are_logged(tmp_path):
    _need_interventions()
    extra = [
        "interventions=[{name: reset_last_layers, every_steps: 400}, {name: nc_regularizer, coef: 0.05}]"
    ]
    cfgs = _configs([0, 1], extra)
    run_population(cfgs, _dirs(tmp_path / "both", [0, 1]), tmp_path / "both" / "pop", quiet=True)
    run_population(cfgs[1:], _dirs(tmp_path / "one", [1]), tmp_path / "one" / "pop", quiet=True)
    rows = read_metrics_csv(tmp_path / "both" / "m-s0" / "metrics.csv")
    assert rows[-1]["intervention/resets"] == "3.0" and rows[-1]["train/nc_reg_loss"] != ""
    _assert_same_member(tmp_path / "both" / "m-s1", tmp_path / "one" / "m-s1")
    # Members with different interventions (two methods) share a population; each trains as alone.
    mixed = [_configs([0])[0], cfgs[1]]
    run_population(
        mixed, [tmp_path / "mixed" / "plain-s0", tmp_path / "mixed" / "m-s1"], tmp_path / "mixed" / "pop"
    )
    _assert_same_member(tmp_path / "mixed" / "m-s1", tmp_path / "one" / "m-s1")
    assert "intervention/resets" not in read_metrics_csv(tmp_path / "mixed" / "plain-s0" / "metrics.csv")[0]


# ------------------------------------------------------------------------------ failure isolation
class NanAfter(Intervention):
    """Test-only: from update 60 on, member (or run) with seed 1 gets a NaN loss term."""

    name = "test_population_nan"

    def loss(self, batch, features, q_values):
        model = self.model
        if getattr(model, "seed", None) == 1 and model.n_updates >= 60:
            return features.sum() * float("nan")
        return None


@pytest.fixture
def nan_intervention(monkeypatch):
    monkeypatch.setitem(INTERVENTIONS._items, NanAfter.name, NanAfter)


def test_a_member_with_non_finite_values_fails_alone(tmp_path, nan_intervention):
    _need_interventions()
    cfgs = _configs([0, 1, 2], ["interventions=[{name: test_population_nan}]"])
    result = run_population(cfgs, _dirs(tmp_path / "p", [0, 1, 2]), tmp_path / "p" / "pop", quiet=True)
    assert [m.ok for m in result.members] == [True, False, True]
    failed = result.members[1]
    assert failed.error.startswith("non-finite values at step") and "train/loss=nan" in failed.error
    assert (tmp_path / "p" / "m-s1" / "error.txt").is_file()
    assert not (tmp_path / "p" / "m-s1" / "summary.json").exists()
    # The others trained exactly as in a population without the failing member.
    run_population([cfgs[0], cfgs[2]], _dirs(tmp_path / "q", [0, 2]), tmp_path / "q" / "pop", quiet=True)
    for s in (0, 2):
        _assert_same_member(tmp_path / "p" / f"m-s{s}", tmp_path / "q" / f"m-s{s}")


def test_a_member_whose_metric_raises_fails_alone(tmp_path, monkeypatch):
    from rlplast.callbacks import MetricsProbe

    real = MetricsProbe.compute

    def compute(self, model, with_probe):
        if getattr(model, "index", None) == 0 and model.num_timesteps >= 400:
            raise RuntimeError("injected metric failure")
        return real(self, model, with_probe)

    monkeypatch.setattr(MetricsProbe, "compute", compute)
    result = run_population(_configs([0, 1]), _dirs(tmp_path, [0, 1]), tmp_path / "pop", quiet=True)
    assert [m.ok for m in result.members] == [False, True]
    assert result.members[0].error == "RuntimeError: injected metric failure"
    assert "Traceback" in (tmp_path / "m-s0" / "error.txt").read_text()
    assert json.loads((tmp_path / "m-s1" / "summary.json").read_text())["steps"] == STEPS


# ------------------------------------------------------------------------------ checkpoints and resume
SCRIPT = textwrap.dedent(
    """
    import json, sys
    from rlplast.config import config_from_dict
    from rlplast.errors import TrainingStopped
    from rlplast.population.run import run_population
    import yaml
    spec = json.load(open(sys.argv[1]))
    cfgs = [config_from_dict(yaml.safe_load(t)) for t in spec["configs"]]
    try:
        run_population(cfgs, spec["dirs"], spec["pop"], quiet=True)
    except TrainingStopped as exc:
        print(exc, file=sys.stderr)
        sys.exit(exc.exit_code)
    """
)


def _start(tmp_path: Path, cfgs: list[Config], root: Path) -> subprocess.Popen:
    spec = tmp_path / f"{root.name}.json"
    dirs = [str(d) for d in _dirs(root, [c.train.seed for c in cfgs])]
    spec.write_text(
        json.dumps({"configs": [dump_config(c) for c in cfgs], "dirs": dirs, "pop": str(root / "pop")})
    )
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(spec)], stderr=subprocess.PIPE, text=True)


def _checkpoints(root: Path) -> list[int]:
    folder = root / "pop" / "checkpoints"
    return sorted(int(p.stem.split("-")[1]) for p in folder.glob("ckpt-*.pkl")) if folder.is_dir() else []


@pytest.fixture(scope="module")
def resume_configs() -> list[Config]:
    extra = []
    try:
        import rlplast.population.interventions  # noqa: F401

        extra = [
            "interventions=[{name: reset_last_layers, every_steps: 700}, {name: nc_regularizer, coef: 0.05}]"
        ]
    except ImportError:
        pass
    return _configs([0, 1, 2], extra)


@pytest.fixture(scope="module")
def reference(resume_configs, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reference")
    run_population(resume_configs, _dirs(root, [0, 1, 2]), root / "pop", quiet=True)
    return root


@pytest.mark.parametrize("seed", [0, 1])
def test_sigkill_at_a_random_point_then_resume_is_exact(reference, resume_configs, tmp_path, seed):
    """Killed (SIGKILL) once a checkpoint past a random step exists, resumed: every member's
    metrics.csv and episodes.csv equal the uninterrupted population's (even a kill that lands
    while a checkpoint or a row is being written)."""
    root = tmp_path / "killed"
    kill_after = int(np.random.default_rng(seed).integers(100, STEPS - 300))
    proc = _start(tmp_path, resume_configs, root)
    deadline = time.monotonic() + 120
    try:
        while not _checkpoints(root) or _checkpoints(root)[-1] < kill_after:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert _checkpoints(root)[-1] < STEPS
    result = resume_population(resume_configs, _dirs(root, [0, 1, 2]), root / "pop", quiet=True)
    assert all(m.ok and m.summary["resumed"] for m in result.members)
    for s in (0, 1, 2):
        _assert_same_member(reference / f"m-s{s}", root / f"m-s{s}")


def test_sigterm_checkpoints_and_exits_143_then_resumes(reference, resume_configs, tmp_path):
    root = tmp_path / "terminated"
    proc = _start(tmp_path, resume_configs, root)
    metrics = root / "m-s0" / "metrics.csv"
    deadline = time.monotonic() + 120
    while not metrics.exists() or len(metrics.read_text().splitlines()) < 5:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "received SIGTERM; checkpoint saved at step" in err
    step = _checkpoints(root)[-1]
    assert step < STEPS and not (root / "m-s0" / "summary.json").exists()
    resume_population(resume_configs, _dirs(root, [0, 1, 2]), root / "pop", quiet=True)
    for s in (0, 1, 2):
        _assert_same_member(reference / f"m-s{s}", root / f"m-s{s}")


def test_resume_refuses_other_members(reference, resume_configs, tmp_path):
    with pytest.raises(UserError, match="other members or configs"):
        resume_population(resume_configs[:2], _dirs(reference, [0, 1]), reference / "pop")


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("empty", "needs at least 1 member"),
        ("differ", r"member 1 \(seed 1\) differs from member 0 at agent.gamma"),
        ("memory", "the replay buffers of 2 members need"),
        ("per member", "cannot run per member"),
    ],
)
def test_bad_input_is_one_user_error_and_writes_nothing(tmp_path, case, message):
    cfgs = _configs([0, 1])
    if case == "empty":
        cfgs = []
    elif case == "differ":
        cfgs[1] = load_config(
            REPO / "configs/permuted_cartpole.yaml", [*BASE, "train.seed=1", "agent.gamma=0.9"]
        )
    elif case == "memory":
        cfgs = _configs([0, 1], ["agent.buffer_size=100000000000"])
    elif case == "per member":
        _need_interventions()
        cfgs = _configs([0, 1], ["interventions=[{name: from_scratch}]"])
    dirs = _dirs(tmp_path / "runs", range(len(cfgs)))
    with pytest.raises(UserError, match=message) as info:
        run_population(cfgs, dirs, tmp_path / "pop")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "pop").exists()


def test_members_whose_envs_disagree_on_spaces_are_refused():
    import gymnasium as gym

    with pytest.raises(UserError, match="observation space .* differs"):
        Population("MlpPolicy", [lambda: gym.make("CartPole-v1"), lambda: gym.make("Acrobot-v1")], [0, 1])


def test_the_engine_honours_every_agent_option():
    """No agent key is refused (the method pack's options run in the population, see
    test_population_options.py); a key added to the agent section later is refused until the
    engine honours it (check_agent_options)."""
    import dataclasses

    from rlplast.config import AgentConfig
    from rlplast.population.run import ENGINE_AGENT_KEYS

    assert {f.name for f in dataclasses.fields(AgentConfig)} <= ENGINE_AGENT_KEYS
    for override in (
        ["agent.layer_norm=true", "agent.weight_decay=0.1"],
        ["agent.double_dqn=true", "agent.activation=crelu"],
        ["agent.optimizer=trac"],
    ):
        check_population(_configs([0], override))


def test_run_dirs_that_exist_are_refused_without_overwrite(tmp_path):
    dirs = _dirs(tmp_path, [0])
    dirs[0].mkdir(parents=True)
    (dirs[0] / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="already exists"):
        run_population(_configs([0]), dirs, tmp_path / "pop")
    assert (dirs[0] / "keep.txt").read_text() == "x"


def test_member_predict_is_epsilon_greedy_like_sb3():
    """deterministic=False: all-random actions with probability ε (the population's), else greedy."""
    from rlplast.population.run import MemberModel

    cfgs = _configs([3], ["train.total_steps=400"])
    pop = Population.from_config(cfgs[0], [3])
    pop.learn(400)
    model = MemberModel(pop, 0, 100)
    obs = pop.replay.observations[0, :64]
    greedy, _ = model.predict(obs.numpy(), deterministic=True)
    pop.exploration_rate = 0.0
    assert np.array_equal(model.predict(obs.numpy())[0], greedy)
    pop.exploration_rate = 1.0
    np.random.seed(0)
    draws = [model.predict(obs.numpy())[0] for _ in range(5)]
    n_actions = int(model.q_net.action_space.n)
    assert all(a.shape == greedy.shape and ((a >= 0) & (a < n_actions)).all() for a in draws)
    assert any(not np.array_equal(a, greedy) for a in draws)
    single, _ = model.predict(obs[0].numpy())
    assert np.ndim(single) == 0 and 0 <= int(single) < n_actions
    pop.close()
