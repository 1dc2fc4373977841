from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlplast.agents import PlasticDQN
from rlplast.cli import main
from rlplast.runlog import BASE_COLUMNS, WALL_CLOCK_COLUMNS, read_metrics_csv

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import REPO, tiny_overrides  # noqa: E402


def _train(tmp_path, out: str, extra: list[str] = (), config: str | None = None) -> int:
    args = ["train", config or str(REPO / "configs/cartpole.yaml"), "--out", str(tmp_path / out), "--quiet"]
    for o in [*tiny_overrides(), *extra]:
        args += ["--set", o]
    return main(args)


def test_train_writes_every_output(tmp_path):
    assert _train(tmp_path, "run", ["output.tensorboard=true"]) == 0
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.csv", "summary.json", "model.zip", "episodes.csv"):
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    summary = json.loads((run / "summary.json").read_text())
    for key in ("final_return", "mean_return", "steps", "wall_time_s", "steps_per_s", "versions", "device"):
        assert key in summary
    assert summary["steps"] >= 600 and summary["device"] == "cpu"
    assert set(summary["versions"]) >= {"torch", "stable-baselines3", "gymnasium", "rlplast"}
    rows = read_metrics_csv(run / "metrics.csv")
    assert list(rows[0])[: len(BASE_COLUMNS)] == BASE_COLUMNS
    assert [int(r["step"]) for r in rows][:6] == [100, 200, 300, 400, 500, 600]
    model = PlasticDQN.load(run / "model.zip")
    assert model.q_net.q_net[-1].out_features == 2


def test_tensorboard_scalars_read_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    assert _train(tmp_path, "tb", ["output.tensorboard=true"]) == 0
    acc = EventAccumulator(str(tmp_path / "tb" / "tb"), size_guidance={SCALARS: 0})
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "rollout/ep_return_mean" in tags and "shift/task_id" in tags
    assert [e.step for e in acc.Scalars("train/n_updates")][:2] == [100, 200]


def test_same_seed_gives_identical_metrics_csv(tmp_path):
    extra = ["output.tensorboard=false", "output.save_model=false"]
    assert _train(tmp_path, "a", extra) == 0
    assert _train(tmp_path, "b", extra) == 0
    assert _train(tmp_path, "c", [*extra, "train.seed=1"]) == 0

    def table(name):
        return [
            {k: v for k, v in row.items() if k not in WALL_CLOCK_COLUMNS}
            for row in read_metrics_csv(tmp_path / name / "metrics.csv")
        ]

    assert table("a") == table("b")
    assert table("a") != table("c")  # the comparison can fail


def test_existing_run_dir_is_not_overwritten(tmp_path, capsys):
    run = tmp_path / "keep"
    run.mkdir()
    (run / "precious.txt").write_text("data")
    assert _train(tmp_path, "keep") == 2
    assert "already exists" in capsys.readouterr().err
    assert (run / "precious.txt").read_text() == "data"
    assert _train(tmp_path, "keep", ["output.save_model=false"], None) == 2
    args = ["train", str(REPO / "configs/cartpole.yaml"), "--out", str(run), "--quiet", "--overwrite"]
    for o in tiny_overrides(200):
        args += ["--set", o]
    assert main(args) == 0
    assert not (run / "precious.txt").exists() and (run / "summary.json").exists()


def _write(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("missing", "config file not found"),
        ("yaml", "invalid YAML"),
        ("unknown_key", "unknown key 'agent.learnin_rate'"),
        ("wrong_type", "train.total_steps: expected an integer"),
        ("negative_steps", "train.total_steps: must be >= 1"),
        ("env_id", "NoSuchEnv-v0"),
        ("continuous", "Discrete action space"),
        ("bad_flag", "unrecognized arguments"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, case, expect):
    cfg = {
        "missing": str(tmp_path / "nope.yaml"),
        "yaml": _write(tmp_path, "a.yaml", "agent: {learning_rate: [\n"),
        "unknown_key": _write(tmp_path, "b.yaml", "agent:\n  learnin_rate: 0.1\n"),
        "wrong_type": _write(tmp_path, "c.yaml", "train:\n  total_steps: lots\n"),
        "negative_steps": _write(tmp_path, "d.yaml", "train:\n  total_steps: -10\n"),
        "env_id": _write(tmp_path, "e.yaml", "env:\n  id: NoSuchEnv-v0\n"),
        "continuous": _write(tmp_path, "f.yaml", "env:\n  id: Pendulum-v1\n"),
        "bad_flag": _write(tmp_path, "g.yaml", "{}\n"),
    }[case]
    out = tmp_path / "out"
    argv = ["train", cfg, "--out", str(out), "--quiet"]
    if case == "bad_flag":
        argv.append("--bogus")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("rlplast: error:") and expect in err, err
    assert not out.exists()


def test_console_script_reports_without_traceback(tmp_path):
    bad = _write(tmp_path, "x.yaml", "agent:\n  gama: 0.9\n")
    proc = subprocess.run(
        [sys.executable, "-m", "rlplast.cli", "train", bad, "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        "rlplast: error: unknown key 'agent.gama' (did you mean 'gamma'?); valid keys: "
        + ", ".join(
            [
                "policy",
                "learning_rate",
                "buffer_size",
                "learning_starts",
                "batch_size",
                "tau",
                "gamma",
                "train_freq",
                "gradient_steps",
                "n_steps",
                "target_update_interval",
                "exploration_fraction",
                "exploration_initial_eps",
                "exploration_final_eps",
                "max_grad_norm",
                "stats_window_size",
                "net_arch",
                "activation",
                "layer_norm",
                "weight_decay",
                "optimizer",
                "double_dqn",
                "features_extractor",
                "optimizer_impl",
            ]
        )
    )


def test_version(capsys):
    from rlplast import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"rlplast {__version__}"


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["train", "CFG", "--set", "agent.gamma", "0.9"], "write --set agent.gamma=0.9"),
        (["train", "--set", "agent.gamma", "0.9", "CFG"], "write --set agent.gamma=0.9"),
        (["train", "CFG", "--set", "train.seed", "-1", "--quiet"], "write --set train.seed=-1"),
        (["compare", "CFG", "--set", "agent.gamma", "0.9"], "write --set agent.gamma=0.9"),
    ],
)
def test_set_with_a_space_for_the_equals_sign_says_what_to_write(tmp_path, capsys, monkeypatch, argv, expect):
    monkeypatch.chdir(tmp_path)
    argv = [str(REPO / "configs/cartpole.yaml") if a == "CFG" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"rlplast: error: --set takes KEY=VALUE with '=': {expect}"
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["bogus"], "rlplast: error: argument command: invalid choice: 'bogus'"),
        ([], "rlplast: error: the following arguments are required: command"),
        (["train", "--device", "gpu"], "rlplast: error: train: argument --device: invalid choice: 'gpu'"),
        (["train", "x.yaml", "--bogus"], "rlplast: error: unrecognized arguments: --bogus"),
    ],
)
def test_usage_errors_have_one_prefix(capsys, argv, expect):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(expect) and err.count("rlplast") == 1, err


def test_default_run_dir_names_the_config_method_and_seed_and_out_is_the_run_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["train", str(REPO / "configs/cartpole.yaml"), "--method", "reset", "--seed", "3", "--quiet"]
    for o in [*tiny_overrides(200), "output.tensorboard=false"]:
        argv += ["--set", o]
    assert main(argv) == 0
    assert (tmp_path / "runs" / "cartpole-reset-s3" / "summary.json").is_file()
    assert main([*argv, "--out", "mine"]) == 0
    assert (tmp_path / "mine" / "summary.json").is_file()  # --out is the run directory itself


def test_cells_not_computed_are_empty(tmp_path):
    # Rows every 5 steps: before the first episode ends and before learning starts (step 100).
    assert (
        _train(tmp_path, "run", ["train.log_every_steps=5", "metrics.enabled=true", "metrics.every_steps=50"])
        == 0
    )
    rows = {int(r["step"]): r for r in read_metrics_csv(tmp_path / "run" / "metrics.csv")}
    first = rows[5]
    assert first["rollout/episodes"] == "0" and first["rollout/ep_return_mean"] == ""
    assert first["rollout/ep_len_mean"] == "" and first["train/loss"] == first["train/grad_norm"] == ""
    assert first["collapse/nc1_taken"] == ""  # metrics run every 50 steps
    assert rows[50]["collapse/nc1_taken"] != ""
    assert rows[100]["train/loss"] == "" and rows[100]["train/n_updates"] == "0.0"
    assert float(rows[105]["train/loss"]) > 0 and float(rows[105]["train/grad_norm"]) > 0
    assert all("nan" not in (r[k] for k in ("train/loss", "rollout/ep_return_mean")) for r in rows.values())
    # The comparison can fail: once an episode ended, the mean return is there.
    assert next(r for r in rows.values() if r["rollout/episodes"] != "0")["rollout/ep_return_mean"] != ""


@pytest.mark.parametrize("command", ["train", "compare"])
def test_method_overlay_as_main_config_is_refused_with_a_hint(tmp_path, capsys, command):
    """A method overlay passed as CONFIG would silently train the defaults: refused, exit 2."""
    code = main([command, str(REPO / "configs/methods/reset.yaml"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "method overlay" in err[0] and "reset" in err[0] and "quickstart.yaml" in err[0]
    assert not (tmp_path / "out").exists()
