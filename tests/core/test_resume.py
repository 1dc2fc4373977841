"""Exact resume: killed runs continue to the same parameters and the same metrics.csv rows."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rlplast.agents import PlasticDQN
from rlplast.cli import main
from rlplast.config import load_config
from rlplast.errors import TrainingStopped
from rlplast.interventions.base import INTERVENTIONS, Intervention
from rlplast.runlog import WALL_CLOCK_COLUMNS, read_metrics_csv
from rlplast.train import run_training

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import REPO, tiny_overrides  # noqa: E402

STEPS = 2400
OVERRIDES = [
    *tiny_overrides(STEPS, metrics=True),
    "env.kwargs.steps_per_task=700",
    "env.kwargs.n_tasks=4",
    "checkpoint.every_steps=100",
    "checkpoint.keep=50",
    "output.tensorboard=false",
    "interventions=[{name: reset_last_layers, every_steps: 900}, {name: nc_regularizer, coef: 0.05}]",
]


def _args(out: Path) -> list[str]:
    args = ["train", str(REPO / "configs/permuted_cartpole.yaml"), "--out", str(out), "--quiet"]
    for o in OVERRIDES:
        args += ["--set", o]
    return args


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main(_args(out)) == 0
    return out


def _assert_same_run(a: Path, b: Path) -> None:
    pa = PlasticDQN.load(a / "model.zip").q_net.parameters()
    pb = PlasticDQN.load(b / "model.zip").q_net.parameters()
    for p, q in zip(pa, pb, strict=True):
        assert torch.equal(p, q)

    def rows(run: Path) -> list[dict[str, str]]:
        return [
            {k: v for k, v in r.items() if k not in WALL_CLOCK_COLUMNS}
            for r in read_metrics_csv(run / "metrics.csv")
        ]

    ra, rb = rows(a), rows(b)
    assert [r["step"] for r in ra] == [r["step"] for r in rb]  # nothing duplicated or missing
    assert ra == rb
    assert (a / "episodes.csv").read_text() == (b / "episodes.csv").read_text()


def _kill_after_checkpoint(out: Path, min_step: int) -> int:
    """Start a training process, SIGKILL it as soon as a checkpoint at >= min_step exists."""
    proc = subprocess.Popen([sys.executable, "-m", "rlplast.cli", *_args(out)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ckpts = sorted((out / "checkpoints").glob("ckpt-*.pkl")) if (out / "checkpoints").is_dir() else []
            if ckpts and int(ckpts[-1].stem.split("-")[1]) >= min_step:
                proc.send_signal(signal.SIGKILL)
                break
            if proc.poll() is not None:
                pytest.fail(f"training ended before the kill point: {proc.stderr.read().decode()}")
            time.sleep(0.005)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists()
    return int(sorted((out / "checkpoints").glob("ckpt-*.pkl"))[-1].stem.split("-")[1])


@pytest.mark.parametrize(
    "kill_after",
    [700, 900],  # just after the first task switch; just after the first last-layer reset
    ids=["after-task-switch", "after-reset"],
)
def test_sigkill_then_resume_is_exact(reference, tmp_path, kill_after):
    out = tmp_path / "run"
    last = _kill_after_checkpoint(out, kill_after)
    assert last < STEPS
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    _assert_same_run(reference, out)


def test_corrupt_latest_checkpoint_falls_back_to_previous(reference, tmp_path, capsys):
    out = tmp_path / "run"
    _kill_after_checkpoint(out, 1000)
    ckpts = sorted((out / "checkpoints").glob("ckpt-*.pkl"))
    data = ckpts[-1].read_bytes()
    ckpts[-1].write_bytes(data[: len(data) // 2])  # a truncated write
    with open(out / "metrics.csv", "a") as fh:
        fh.write("99999,0.1,")  # and a partial CSV line from the kill
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert f"skipping corrupt checkpoint {ckpts[-1].name}: truncated" in capsys.readouterr().err
    _assert_same_run(reference, out)


def test_sigterm_checkpoints_and_exits_143_then_resumes(reference, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlplast.cli", *_args(out)], stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not (out / "metrics.csv").exists() or len((out / "metrics.csv").read_text().splitlines()) < 5:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "received SIGTERM" in err and "rlplast train --resume" in err
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    _assert_same_run(reference, out)


def test_resume_refuses_finished_and_conflicting_flags(reference, tmp_path, capsys):
    assert main(["train", "--resume", str(reference)]) == 2
    assert "already finished" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["train", "x.yaml", "--resume", str(reference)]) == 2
    assert "drop CONFIG" in capsys.readouterr().err


class NanLoss(Intervention):
    """Test-only: makes the loss NaN after 50 updates (registered only inside the tests below)."""

    name = "test_nan_loss"

    def loss(self, batch, features, q_values):
        if self.model.n_updates >= 50:
            return features.sum() * float("nan")
        return None


@pytest.fixture
def nan_intervention(monkeypatch):
    """Register NanLoss for one test only, so registry-driven tests elsewhere never see it."""
    monkeypatch.setitem(INTERVENTIONS._items, NanLoss.name, NanLoss)


def _nan_config(policy: str):
    return load_config(
        REPO / "configs/permuted_cartpole.yaml",
        [*tiny_overrides(800), "interventions=[{name: test_nan_loss}]", f"train.on_nonfinite={policy}"],
    )


def test_nonfinite_loss_checkpoints_and_stops(tmp_path, capsys, nan_intervention):
    out = tmp_path / "nan"
    with pytest.raises(TrainingStopped, match=r"non-finite values at step \d+: train/loss=nan") as info:
        run_training(_nan_config("stop"), out, quiet=True)
    assert info.value.exit_code == 1
    assert list((out / "checkpoints").glob("ckpt-*.pkl"))
    assert not (out / "summary.json").exists()
    assert "rlplast: non-finite values at step" in capsys.readouterr().err


def test_nonfinite_continue_finishes(tmp_path, nan_intervention):
    summary = run_training(_nan_config("continue"), tmp_path / "nan", quiet=True)
    assert summary["steps"] >= 800


def test_checkpoints_naming_classes_at_their_old_place_still_load(tmp_path):
    """The speed layer moved from rlplast.agents.dqn to rlplast.agents.speed; older checkpoints
    pickled DeviceMean, the lean buffers and env and the policies under the old module. Such
    checkpoints (the previous, pickled format) are read only when trusted explicitly."""
    import hashlib
    import pickle

    from rlplast.agents.speed import DeviceMean, LeanReplayBuffer
    from rlplast.checkpoint import LEGACY_MAGIC, MOVED, UntrustedCheckpoint, read_checkpoint

    stats = DeviceMean()
    stats.add(torch.tensor(2.0))
    # Protocol 2 names classes as text ("c<module>\n<name>\n"), so the old names can be written back.
    data = pickle.dumps({"stats": stats, "buffer_class": LeanReplayBuffer}, protocol=2)
    data = data.replace(b"rlplast.agents.speed\nDeviceMean\n", b"rlplast.agents.dqn\n_DeviceMean\n")
    data = data.replace(
        b"rlplast.agents.speed\nLeanReplayBuffer\n", b"rlplast.agents.dqn\nLeanReplayBuffer\n"
    )
    assert b"rlplast.agents.speed" not in data
    path = tmp_path / "ckpt-000000000001.pkl"
    path.write_bytes(LEGACY_MAGIC + f" {hashlib.sha256(data).hexdigest()} {len(data)}\n".encode() + data)
    with pytest.raises(UntrustedCheckpoint, match="previous format"):
        read_checkpoint(path)
    payload = read_checkpoint(path, trust=True)
    assert payload["stats"].pop() == 2.0 and payload["buffer_class"] is LeanReplayBuffer
    for (module, _), (new_module, new_name) in MOVED.items():
        assert module == "rlplast.agents.dqn"
        assert getattr(__import__(new_module, fromlist=[new_name]), new_name)
