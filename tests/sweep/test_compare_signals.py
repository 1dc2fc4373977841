"""`rlplast compare` under SIGTERM/SIGINT: workers stop with a checkpoint, none survives, runs are interrupted."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlplast.sweep.local import STATUS_LOST, died

BASE = """\
env:
  id: rlplast/PermutedCartPole-v0
  kwargs: {steps_per_task: 5000, n_tasks: 20}
train: {total_steps: 100000, log_every_steps: 100}
agent: {learning_starts: 100, buffer_size: 5000, net_arch: [32, 32], target_update_interval: 100}
metrics: {enabled: false}
checkpoint: {every_steps: 0}
output: {tensorboard: false, save_model: false}
"""


def _group(pgid: int) -> list[str]:
    """Live (non-zombie) processes of the process group ``pgid``: ``"pid state"`` strings."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            alive.append(f"{stat.parent.name} {state}")
    return alive


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize(
    ("sig", "group"),
    [
        pytest.param(signal.SIGTERM, False, id="SIGTERM"),
        # To the whole process group (a shell's `kill -TERM -PGID`, a batch scheduler): the fork
        # server stops too, and the workers' exit status with it; they still report their checkpoints.
        pytest.param(signal.SIGTERM, True, id="SIGTERM-group"),
        # The same path with another signal number; ~15 s more, so with `make test-slow`.
        pytest.param(signal.SIGINT, False, id="SIGINT", marks=pytest.mark.slow),
    ],
)
def test_signal_stops_workers_with_checkpoints_and_marks_runs_interrupted(
    tmp_path: Path, sig: int, group: bool
):
    (tmp_path / "methods").mkdir()
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "methods" / "vanilla.yaml").write_text("{}\n")
    sweep = tmp_path / "sweep"
    args = [
        "compare",
        "base.yaml",
        "--methods",
        "vanilla",
        "--seeds",
        "3",
        "--workers",
        "2",
        "--out",
        "sweep",
    ]
    with open(tmp_path / "err.txt", "w") as err:
        # Its own session: the sweep's processes (forkserver, workers) are exactly its process group.
        proc = subprocess.Popen(
            [sys.executable, "-m", "rlplast.cli", *args],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        # A worker is training once run_training has written its run's config.yaml.
        while not list(sweep.glob("runs/*/config.yaml")):
            assert proc.poll() is None, (tmp_path / "err.txt").read_text()
            assert time.monotonic() < deadline, "no run started training"
            time.sleep(0.1)
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        code = proc.wait(timeout=90)
        stderr = (tmp_path / "err.txt").read_text()
        assert code == 128 + sig, stderr
        assert "Traceback" not in stderr
        assert stderr.splitlines()[-1].startswith(f"rlplast: stopped: received {signal.Signals(sig).name}")

        deadline = time.monotonic() + 15  # the fork server notices the parent's exit, then leaves
        while _group(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _group(proc.pid) == []  # no worker left training

        runs = json.loads((sweep / "manifest.json").read_text())["runs"]
        assert set(runs) == {"vanilla-s0", "vanilla-s1", "vanilla-s2"}
        assert {e["state"] for e in runs.values()} <= {"interrupted", "done"}
        interrupted = [n for n, e in runs.items() if e["state"] == "interrupted"]
        assert interrupted and all(runs[n]["error"] for n in interrupted)
        # The runs that were training wrote a checkpoint on the way out (checkpoint.every_steps 0).
        trained = [n for n in interrupted if (sweep / "runs" / n / "config.yaml").is_file()]
        assert trained
        for name in trained:
            assert list((sweep / "runs" / name / "checkpoints").glob("ckpt-*")), name
            assert not (sweep / "runs" / name / "error.txt").exists()
            # What the worker said, not "worker process died (exit code 255)".
            error = runs[name]["error"]
            assert error.startswith(f"received {signal.Signals(sig).name}; checkpoint saved at step"), error
        assert not (sweep / "report").exists()
    finally:
        if proc.poll() is None or _group(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_worker_that_ends_without_reporting_is_named_honestly():
    assert died(-9, stopping=False).error == "worker process died (killed by SIGKILL)"
    assert died(3, stopping=False).error == "worker process died (exit code 3)"
    assert not died(3, stopping=False).stopped and died(-15, stopping=True).stopped
    # While stopping, 255 is multiprocessing's "the fork server is gone", not the worker's exit code.
    lost = died(STATUS_LOST, stopping=True)
    assert lost.stopped and "exit code 255" not in lost.error and "fork server" in lost.error
