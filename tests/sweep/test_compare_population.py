"""`rlplast compare --engine population`: each method's seeds as one population, resumable, isolated."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlplast.cli import main
from rlplast.rundir import read_manifest
from rlplast.runlog import WALL_CLOCK_COLUMNS, read_metrics_csv

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import tiny_overrides  # noqa: E402

STEPS = 400
BASE = """\
env:
  id: rlplast/PermutedCartPole-v0
  kwargs: {steps_per_task: 200, n_tasks: 2}
output: {tensorboard: false}
"""

#: A plugin whose intervention makes the loss of the run (member) with seed 1 NaN after 30 updates.
PLUGIN = """
from rlplast.interventions.base import Intervention, register


@register("test_nan_seed1")
class NanSeed1(Intervention):
    def loss(self, batch, features, q_values):
        if getattr(self.model, "seed", None) == 1 and self.model.n_updates >= 30:
            return features.sum() * float("nan")
        return None
"""


def _overrides(steps: int = STEPS) -> list[str]:
    out: list[str] = []
    for o in [*tiny_overrides(steps, metrics=True), "metrics.every_steps=100"]:
        out += ["--set", o]
    return out


@pytest.fixture
def setup(tmp_path: Path) -> Path:
    (tmp_path / "methods").mkdir()
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "methods" / "vanilla.yaml").write_text("{}\n")
    (tmp_path / "methods" / "reset.yaml").write_text(
        "interventions:\n  - {name: reset_last_layers, every_steps: 100}\n"
    )
    return tmp_path


def _compare(setup: Path, out: Path, methods: str, seeds: int = 3, extra: list[str] = ()) -> int:
    args = [
        "compare",
        str(setup / "base.yaml"),
        "--methods",
        methods,
        "--seeds",
        str(seeds),
        "--workers",
        "2",
    ]
    return main([*args, "--engine", "population", "--out", str(out), "--quiet", *_overrides(), *extra])


def _rows(run: Path) -> list[dict[str, str]]:
    return [
        {k: v for k, v in r.items() if k not in WALL_CLOCK_COLUMNS}
        for r in read_metrics_csv(run / "metrics.csv")
    ]


def test_population_sweep_completes_reports_resumes_and_adds_seeds(setup: Path):
    pytest.importorskip("rlplast.population.interventions")
    out = setup / "sweep"
    assert _compare(setup, out, "vanilla,reset") == 0
    runs = read_manifest(out)["runs"]
    assert set(runs) == {f"{m}-s{s}" for m in ("vanilla", "reset") for s in range(3)}
    # Two workers: the six runs (one config apart from the interventions) as two populations of 3.
    for name, entry in runs.items():
        first, last = (
            ("vanilla-s0", "vanilla-s2") if entry["method"] == "vanilla" else ("reset-s0", "reset-s2")
        )
        assert entry["state"] == "done" and entry["population"] == f"populations/{first}..{last}"
        summary = json.loads((out / "runs" / name / "summary.json").read_text())
        assert summary["engine"] == "population" and summary["population_size"] == 3
        assert (out / "runs" / name / "model.zip").is_file()
    assert (out / "populations" / "reset-s0..reset-s2" / "population.json").is_file()
    assert "intervention/resets" in read_metrics_csv(out / "runs" / "reset-s2" / "metrics.csv")[-1]
    assert (out / "report" / "report.md").is_file()
    # Rerun: nothing to do. More seeds: only the new ones train (two workers: one population each).
    kept = (out / "runs" / "vanilla-s0" / "metrics.csv").stat().st_mtime_ns
    assert _compare(setup, out, "vanilla", seeds=5) == 0
    assert (out / "runs" / "vanilla-s0" / "metrics.csv").stat().st_mtime_ns == kept
    added = json.loads((out / "runs" / "vanilla-s4" / "summary.json").read_text())
    assert added["population_size"] == 1 and read_manifest(out)["runs"]["vanilla-s4"]["population"] == (
        "populations/vanilla-s4"
    )


def test_runs_that_can_share_a_population_are_split_into_one_population_per_worker(setup: Path):
    from rlplast.sweep.plan import plan_jobs, plan_sweep

    (setup / "methods" / "ncreg.yaml").write_text("interventions:\n  - {name: nc_regularizer, coef: 0.05}\n")
    (setup / "methods" / "gamma.yaml").write_text("agent: {gamma: 0.9}\n")
    out, specs = plan_sweep(
        setup / "base.yaml", ["vanilla", "reset", "ncreg"], 5, ["train.engine=population"]
    )
    sizes = lambda plans: [len(p.specs) for p in plans]  # noqa: E731
    plans = plan_jobs(out, specs, workers=2)
    assert sizes(plans) == [7, 8] and [p.name for p in plans] == [
        "vanilla-s0..reset-s1",
        "reset-s2..ncreg-s4",
    ]
    assert specs[0].population == "populations/vanilla-s0..reset-s1"
    assert sizes(plan_jobs(out, specs, workers=None)) == [15]
    assert sizes(plan_jobs(out, specs[:2], workers=4)) == [1, 1]
    # Another agent setting cannot share the population; single-engine runs stay single jobs.
    _, other = plan_sweep(setup / "base.yaml", ["gamma"], 2, ["train.engine=population"])
    _, single = plan_sweep(setup / "base.yaml", ["vanilla"], 2)
    plans = plan_jobs(out, [*specs[:4], *other, *single], workers=2)
    assert [(p.population_dir is None, len(p.specs)) for p in plans] == [
        (False, 4),
        (False, 2),
        (True, 1),
        (True, 1),
    ]


def test_the_config_key_chooses_the_engine(setup: Path):
    out = setup / "sweep"
    args = ["compare", str(setup / "base.yaml"), "--methods", "vanilla", "--seeds", "2", "--workers", "1"]
    assert main([*args, "--out", str(out), "--quiet", *_overrides(), "--set", "train.engine=population"]) == 0
    runs = read_manifest(out)["runs"]
    assert {e.get("population") for e in runs.values()} == {"populations/vanilla-s0..vanilla-s1"}
    # --engine overrides the key (a different config: refused next to the population's runs).
    assert main([*args, "--out", str(out), "--quiet", *_overrides(), "--engine", "single"]) == 2


def test_a_failing_member_is_reported_while_the_others_finish(setup: Path, monkeypatch, capsys):
    (setup / "nanplugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(setup))
    (setup / "methods" / "nan.yaml").write_text(
        "plugins: [nanplugin]\ninterventions:\n  - {name: test_nan_seed1}\n"
    )
    (setup / "crash_on_import.py").write_text("raise RuntimeError('boom: injected failure')\n")
    (setup / "methods" / "crash.yaml").write_text("env:\n  import: crash_on_import\n")
    out = setup / "sweep"
    try:
        import rlplast.population.interventions  # noqa: F401
    except ImportError:
        pytest.skip("interventions per member are not available")
    assert _compare(setup, out, "nan,crash", seeds=3) == 1
    runs = read_manifest(out)["runs"]
    # One member's own failure: that member only.
    assert [runs[f"nan-s{s}"]["state"] for s in range(3)] == ["done", "failed", "done"]
    assert runs["nan-s1"]["error"].startswith("non-finite values at step")
    assert (out / "runs" / "nan-s1" / "error.txt").is_file()
    # The whole population failing (its env cannot be made): every member failed, with error.txt.
    for s in range(3):
        assert runs[f"crash-s{s}"]["state"] == "failed"
        assert runs[f"crash-s{s}"]["error"] == "RuntimeError: boom: injected failure"
        assert "Traceback" in (out / "runs" / f"crash-s{s}" / "error.txt").read_text()
    assert "4 failed" in capsys.readouterr().out


def test_ray_tasks_train_populations(setup: Path):
    if os.environ.get("CI") and importlib.util.find_spec("ray") is None:
        pytest.fail("CI installs rlplast[ray] (Makefile: .[dev,ray]) but ray is not importable")
    pytest.importorskip("ray")
    out = setup / "sweep"
    args = ["compare", str(setup / "base.yaml"), "--methods", "vanilla", "--seeds", "2", "--workers", "1"]
    extra = ["--backend", "ray", "--engine", "population", "--set", "metrics.enabled=false"]
    assert main([*args, "--out", str(out), "--quiet", *_overrides(), *extra]) == 0
    runs = read_manifest(out)["runs"]
    assert {e["state"] for e in runs.values()} == {"done"}
    assert {e["population"] for e in runs.values()} == {"populations/vanilla-s0..vanilla-s1"}
    assert json.loads((out / "runs" / "vanilla-s1" / "summary.json").read_text())["population_size"] == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pdeathsig and /proc")
def test_sigterm_interrupts_the_population_and_a_rerun_continues_it_exactly(setup: Path):
    steps = 3000
    base = ["--methods", "vanilla", "--seeds", "2", "--workers", "1", "--engine", "population", "--quiet"]
    ckpt = ["--set", "checkpoint.every_steps=300", "--set", "metrics.enabled=false"]
    reference = setup / "reference"
    args = ["compare", str(setup / "base.yaml"), *base, *_overrides(steps), *ckpt]
    assert main([*args, "--out", str(reference)]) == 0

    out = setup / "sweep"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlplast.cli", *args, "--out", str(out)], stderr=subprocess.PIPE, text=True
    )
    checkpoints = out / "populations" / "vanilla-s0..vanilla-s1" / "checkpoints"
    deadline = time.monotonic() + 120
    while not (checkpoints.is_dir() and any(checkpoints.glob("ckpt-*.pkl"))):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    runs = read_manifest(out)["runs"]
    assert {e["state"] for e in runs.values()} == {"interrupted"}, runs
    assert all(e["error"].startswith("received SIGTERM; checkpoint saved at step") for e in runs.values())

    assert main([*args, "--out", str(out)]) == 0
    for seed in (0, 1):
        run = out / "runs" / f"vanilla-s{seed}"
        assert json.loads((run / "summary.json").read_text())["resumed"] is True
        assert _rows(run) == _rows(reference / "runs" / f"vanilla-s{seed}")
        assert (run / "episodes.csv").read_text() == (
            reference / "runs" / f"vanilla-s{seed}" / "episodes.csv"
        ).read_text()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--set", "agent.buffer_size=100000000000"],
            "population vanilla-s0 (1 run): population: the replay buffers of 1 member need",
        ),
        (["--methods", "scratch"], "cannot run per member"),
    ],
)
def test_bad_population_input_exits_2_and_writes_nothing(setup: Path, capsys, extra, message):
    if "scratch" in extra:
        pytest.importorskip("rlplast.population.interventions")
        (setup / "methods" / "scratch.yaml").write_text("interventions:\n  - {name: from_scratch}\n")
    methods = extra[1] if extra[0] == "--methods" else "vanilla"
    sets = [] if extra[0] == "--methods" else extra
    out = setup / "sweep"
    assert _compare(setup, out, methods, extra=sets) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_populations_that_may_run_together_must_fit_in_memory_together(setup: Path, capsys, monkeypatch):
    """With --workers 2 the two methods' seeds train as two populations at once: each one's replay
    fits alone, both together do not, and the sweep is refused before anything is written; with
    room for both it runs."""
    import numpy as np

    from rlplast.population import replay

    one = replay.replay_bytes((4,), np.float32, 1000, 2)  # a population of 2 CartPole members
    monkeypatch.setattr(replay, "available_memory_bytes", lambda device: int(1.5 * one))
    out = setup / "sweep"
    sets = ["--set", "agent.buffer_size=1000"]
    assert _compare(setup, out, "vanilla,reset", seeds=2, extra=sets) == 2
    err = capsys.readouterr().err
    assert "may run at once (--workers 2)" in err and "lower --workers" in err and err.count("\n") == 1, err
    assert not out.exists()
    monkeypatch.setattr(replay, "available_memory_bytes", lambda device: int(2.5 * one))
    assert _compare(setup, out, "vanilla,reset", seeds=2, extra=sets) == 0
    assert len(read_manifest(out)["runs"]) == 4
    assert len(list((out / "populations").iterdir())) == 2
