"""Bad input on the training side: one line on stderr, exit code 2, nothing written or changed.

Covers unusable run directories, intervention arguments, envs and policies stable-baselines3
cannot handle, run names that escape ``output.dir``, and resumes of edited or damaged runs.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

from rlplast.checkpoint import list_checkpoints, read_checkpoint, save_checkpoint
from rlplast.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import REPO, tiny_overrides  # noqa: E402

CARTPOLE = str(REPO / "configs/cartpole.yaml")
PERMUTED = str(REPO / "configs/permuted_cartpole.yaml")


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for folders)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


def _fails(argv: list[str], capsys, expect: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("rlplast: error:"), err
    assert "Traceback" not in err and expect in err, err
    return err


def _train_argv(out: Path | None, extra: list[str] = (), config: str = CARTPOLE) -> list[str]:
    argv = ["train", config, "--quiet"]
    if out is not None:
        argv += ["--out", str(out)]
    for o in [*tiny_overrides(200), "output.tensorboard=false", *extra]:
        argv += ["--set", o]
    return argv


# ---------------------------------------------------------------------------------- run directory
@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_out_under_proc_is_a_user_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fails(_train_argv(Path("/proc/x/y")), capsys, "cannot create run directory /proc/x/y:")
    assert not Path("/proc/x").exists() and not list(tmp_path.iterdir())


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_output_dir_under_proc_is_a_user_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fails(_train_argv(None, ["output.dir=/proc/nope"]), capsys, "cannot create run directory /proc/nope/")
    assert not list(tmp_path.iterdir())


def test_out_below_a_file_is_a_user_error_and_the_file_is_kept(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("precious")
    _fails(_train_argv(afile / "sub"), capsys, f"cannot create run directory {afile / 'sub'}: ")
    assert afile.read_text() == "precious" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_uncreatable_run_dir_leaves_no_parent_folders_behind(tmp_path, capsys):
    # The name is too long for the file system: mkdir fails only after its parents were created.
    out = tmp_path / "new" / "deeper" / ("x" * 300)
    _fails(_train_argv(out), capsys, "cannot create run directory")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["../../escape", "a/b", "..", "."])
def test_output_name_cannot_leave_output_dir(tmp_path, capsys, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    _fails(_train_argv(None, ["output.dir=runs", f"output.name={name!r}"]), capsys, "output.name:")
    assert _snapshot(tmp_path) == {"runs": None}


def test_unknown_key_without_out_names_the_nearest_key(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fails(
        _train_argv(None, ["agent.lr=1e-3"]), capsys, "unknown key 'agent.lr' (did you mean 'learning_rate'?)"
    )
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------- interventions
@pytest.mark.parametrize(
    ("spec", "expect"),
    [
        ("{name: redo, seed: -1}", "intervention 'redo': seed must be >= 0, got -1"),
        ("{name: l2_init, coef: .nan}", "intervention 'l2_init': parameter 'coef' must be a finite number"),
        ("{name: nc_regularizer, coef: .inf}", "parameter 'coef' must be a finite number, got inf"),
        ("{name: redo, tau: .nan}", "intervention 'redo': parameter 'tau' must be a finite number"),
    ],
)
def test_bad_intervention_arguments_write_nothing(tmp_path, capsys, spec, expect):
    out = tmp_path / "run"
    _fails(_train_argv(out, [f"interventions=[{spec}]"]), capsys, expect)
    assert not out.exists()


# ---------------------------------------------------------------------------------- envs and policies
def _has_box2d() -> bool:
    try:
        import Box2D  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(_has_box2d(), reason="Box2D is installed, so CarRacing can be made")
def test_env_with_a_missing_dependency(tmp_path, capsys):
    out = tmp_path / "run"
    err = _fails(_train_argv(out, ["env.id=CarRacing-v3"]), capsys, "env 'CarRacing-v3' needs a package")
    assert "Box2D" in err and not out.exists()


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        (["env.id=Blackjack-v1"], "env 'Blackjack-v1' has a Tuple("),
        (["agent.policy=CnnPolicy"], "agent.policy: CnnPolicy needs image observations"),
        (["agent.features_extractor=minatar_cnn"], "agent.features_extractor: minatar_cnn needs a (channels"),
    ],
    ids=["tuple-observations", "cnn-policy-on-cartpole", "minatar-cnn-on-cartpole"],
)
def test_env_or_policy_sb3_cannot_handle(tmp_path, capsys, extra, expect):
    out = tmp_path / "run"
    err = _fails(_train_argv(out, extra), capsys, expect)
    assert "valid:" in err and not out.exists()


# ---------------------------------------------------------------------------------- resume
RESUME_FROM = 300


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """A run that looks killed at step 300: checkpoints up to 300, rows past it, no summary."""
    run = tmp_path_factory.mktemp("interrupted") / "run"
    argv = ["train", PERMUTED, "--out", str(run), "--quiet"]
    for o in [
        *tiny_overrides(600, metrics=True),
        "env.kwargs.steps_per_task=250",
        "env.kwargs.n_tasks=3",
        "checkpoint.every_steps=100",
        "checkpoint.keep=50",
        "output.tensorboard=false",
        "interventions=[{name: l2_init, coef: 0.001}]",
    ]:
        argv += ["--set", o]
    assert main(argv) == 0
    for name in ("summary.json", "model.zip"):
        (run / name).unlink()
    for ckpt in list_checkpoints(run / "checkpoints"):
        if int(ckpt.stem.split("-")[1]) > RESUME_FROM:
            ckpt.unlink()
    return run


@pytest.fixture
def run(interrupted, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(interrupted, copy)
    return copy


def _edit_config(run: Path, edit) -> None:
    data = yaml.safe_load((run / "config.yaml").read_text())
    edit(data)
    (run / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def _resume_fails(run: Path, capsys, expect: str) -> None:
    before = _snapshot(run)
    _fails(["train", "--resume", str(run), "--quiet"], capsys, expect)
    assert _snapshot(run) == before


def test_unchanged_run_resumes(run):
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert (run / "summary.json").is_file()


def test_checkpoints_record_the_config(run):
    payload = read_checkpoint(list_checkpoints(run / "checkpoints")[0])
    assert yaml.safe_load(payload["config"]) == yaml.safe_load((run / "config.yaml").read_text())


@pytest.mark.parametrize(
    ("edit", "expect"),
    [
        (
            lambda d: d["metrics"].update(enabled=False),
            "at metrics.enabled: False (config.yaml) vs True (checkpoint); restore it or start a new run",
        ),
        (
            lambda d: d["env"].update(id="Acrobot-v1"),
            "at env.id: 'Acrobot-v1' (config.yaml) vs 'rlplast/Permuted",
        ),
        (lambda d: d["agent"].update(net_arch=[64, 64]), "at agent.net_arch[0]: 64 (config.yaml) vs 32"),
        (lambda d: d["env"]["kwargs"].update(n_tasks=5), "at env.kwargs.n_tasks: 5 (config.yaml) vs 3"),
        (lambda d: d["train"].update(total_steps=900), "at train.total_steps: 900 (config.yaml) vs 600"),
        (
            lambda d: d["interventions"][0].update(coef=0.5),
            "at interventions[0].coef: 0.5 (config.yaml) vs 0.001",
        ),
    ],
    ids=["metrics-flipped", "env-id", "net-arch", "n-tasks", "total-steps", "intervention"],
)
def test_edited_config_is_refused_and_nothing_changes(run, capsys, edit, expect):
    _edit_config(run, edit)
    _resume_fails(run, capsys, f"config.yaml of {run} differs from its checkpoint {expect}")


def test_emptied_config_is_refused_and_nothing_changes(run, capsys):
    (run / "config.yaml").write_text("")
    _resume_fails(run, capsys, "differs from its checkpoint at env.id: 'CartPole-v1' (config.yaml) vs ")


def _strip_recorded_config(run: Path) -> None:
    """Make every checkpoint look like one written before checkpoints recorded the config."""
    for path in list_checkpoints(run / "checkpoints"):
        payload = read_checkpoint(path)
        del payload["config"]
        save_checkpoint(run / "checkpoints", int(path.stem.split("-")[1]), payload, keep=50)


def test_old_checkpoint_without_recorded_config_still_resumes(run):
    _strip_recorded_config(run)
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert (run / "summary.json").is_file()


def test_old_checkpoint_with_metrics_flipped_is_refused(run, capsys):
    _strip_recorded_config(run)
    _edit_config(run, lambda d: d["metrics"].update(enabled=False))
    _resume_fails(run, capsys, "at metrics.enabled: False (config.yaml) vs True (checkpoint)")


@pytest.mark.parametrize("name", ["episodes.csv", "metrics.csv"])
def test_garbage_csv_line_is_refused_and_nothing_changes(run, capsys, name):
    lines = (run / name).read_text().split("\n")
    lines.insert(3, "garbage,line")
    (run / name).write_text("\n".join(lines))
    _resume_fails(run, capsys, f"{run / name}: line 4 does not start with a step number: 'garbage,line'")


def test_missing_metrics_csv_is_refused(run, capsys):
    (run / "metrics.csv").unlink()
    _resume_fails(run, capsys, "metrics.csv is missing or empty; cannot resume")


# ---------------------------------------------------------------------------------- user code raising
USER_CODE = """
import gymnasium as gym
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

from rlplast.interventions.base import Intervention, register


class FailingStep(CartPoleEnv):
    calls = 0

    def step(self, action):
        FailingStep.calls += 1
        if FailingStep.calls > 150:
            raise RuntimeError("the pole broke")
        return super().step(action)


gym.register("usercode/FailingStep-v0", entry_point=FailingStep, max_episode_steps=500)


@register("usercode_failing_loss")
class FailingLoss(Intervention):
    def loss(self, batch, features, q_values):
        if self.model.n_updates >= 5:
            raise KeyError("no such feature")
        return None
"""


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        (
            ["env.id=usercode/FailingStep-v0", "env.import=usercode_mod"],
            "your code raised RuntimeError: the pole broke (in step, ",
        ),
        (
            [
                "plugins=[usercode_mod]",
                "interventions=[{name: usercode_failing_loss}]",
                "agent.learning_starts=50",
            ],
            "your code raised KeyError: 'no such feature' (in loss, ",
        ),
    ],
    ids=["env", "intervention"],
)
def test_an_exception_in_the_users_code_is_one_line_and_keeps_the_run_files(
    tmp_path, capsys, monkeypatch, extra, expect
):
    """An env or intervention of the user's that raises mid-training: one line naming the exception
    and where in the user's file it was raised, exit 2, and the run directory keeps what it wrote."""
    (tmp_path / "usercode_mod.py").write_text(USER_CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    err = _fails(_train_argv(out, ["metrics.enabled=false", *extra]), capsys, expect)
    assert "usercode_mod.py:" in err and f"rlplast train --resume {out}" in err
    assert (out / "config.yaml").is_file() and (out / "metrics.csv").stat().st_size > 0


def test_a_bug_outside_the_users_code_keeps_its_traceback(tmp_path, monkeypatch):
    """An exception with none of the user's code on its stack is not bad input: it propagates.
    (Simulated with a builtin in place of PlasticDQN.train: called with SB3's keyword arguments
    it raises a TypeError from C, below rlplast's and SB3's frames only.)"""
    import operator

    from rlplast.agents import PlasticDQN

    monkeypatch.setattr(PlasticDQN, "train", operator.truediv)
    with pytest.raises(TypeError, match="keyword arguments"):
        main(_train_argv(tmp_path / "run", ["agent.learning_starts=50"]))
