"""`rlplast compare`: a tiny real sweep, resume, a failing run, bad input and the Ray backend."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

import rlplast.sweep.compare as sweep_compare
from rlplast.cli import main
from rlplast.rundir import read_manifest
from rlplast.sweep import plan_sweep

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import tiny_overrides  # noqa: E402

STEPS = 400
BASE = """\
env:
  id: rlplast/PermutedCartPole-v0
  kwargs: {steps_per_task: 200, n_tasks: 2}
output: {tensorboard: false, save_model: false}
"""


def _set_values(metrics: bool = True) -> list[str]:
    return [*tiny_overrides(STEPS, metrics=metrics), "metrics.every_steps=100"]


def _overrides(metrics: bool = True) -> list[str]:
    out: list[str] = []
    for o in _set_values(metrics):
        out += ["--set", o]
    return out


def _need_ray() -> None:
    """Ray is an optional extra: skip without it, except in CI, which installs it (`make install`)."""
    if os.environ.get("CI") and importlib.util.find_spec("ray") is None:
        pytest.fail("CI installs rlplast[ray] (Makefile: .[dev,ray]) but ray is not importable")
    pytest.importorskip("ray")


@pytest.fixture
def setup(tmp_path: Path) -> Path:
    """A base config with `vanilla` and `reset` method overlays beside it."""
    (tmp_path / "methods").mkdir()
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "methods" / "vanilla.yaml").write_text("{}\n")
    (tmp_path / "methods" / "reset.yaml").write_text("interventions:\n  - {name: reset_last_layers}\n")
    return tmp_path


def _compare(cfg: Path, out: Path, methods: str, seeds: int = 2, extra: list[str] = ()) -> int:
    args = ["compare", str(cfg), "--methods", methods, "--seeds", str(seeds), "--workers", "2"]
    return main([*args, "--out", str(out), "--quiet", *_overrides(), *extra])


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def test_sweep_completes_reports_and_resumes(setup: Path):
    out = setup / "sweep"
    assert _compare(setup / "base.yaml", out, "vanilla,reset") == 0
    manifest = read_manifest(out)
    assert set(manifest["runs"]) == {"vanilla-s0", "vanilla-s1", "reset-s0", "reset-s1"}
    assert manifest["methods"] == ["vanilla", "reset"]  # the --methods order, which reports follow
    for name, entry in manifest["runs"].items():
        assert entry["state"] == "done" and entry["error"] is None and entry["wall_time_s"] > 0
        run = out / "runs" / name
        for f in ("config.yaml", "metrics.csv", "episodes.csv", "summary.json"):
            assert (run / f).is_file(), (name, f)
        assert f"seed: {entry['seed']}" in (run / "config.yaml").read_text()
        assert "torch_threads: 1" in (run / "config.yaml").read_text()
    assert "reset_last_layers" in (out / "runs" / "reset-s0" / "config.yaml").read_text()

    rep = out / "report"
    files = (
        "report.md",
        "summary.csv",
        "correlations.csv",
        "returns.png",
        "collapse.png",
        "nc1_vs_plasticity.png",
    )
    for f in files:
        assert (rep / f).stat().st_size > 0, f
    md = (rep / "report.md").read_text()
    headings = (
        "## Runs",
        "## Task plasticity",
        "## Collapse and plasticity",
        "## NC1 vs plasticity",
        "## Plots",
    )
    assert all(h in md for h in headings)
    assert "nc1_taken" in md and "| vanilla | 1 |" in md and "| reset | all |" in md
    summary = (rep / "summary.csv").read_text().splitlines()
    assert summary[0] == "method,task,quantity,n,mean,iqm,ci_low,ci_high"
    assert any(line.startswith("vanilla,1,mean_return,2,") for line in summary)
    assert any(line.startswith("reset,all,collapse/nc1_taken,") for line in summary)

    # Interrupted sweep: one run still "running" without its summary, another never started.
    manifest["runs"]["reset-s1"]["state"] = "running"
    (out / "runs" / "reset-s1" / "summary.json").unlink()
    (out / "runs" / "reset-s1" / "stale.txt").write_text("partial")
    # A partial run without checkpoints (whatever the checkpoint policy left): restarted from scratch.
    shutil.rmtree(out / "runs" / "reset-s1" / "checkpoints", ignore_errors=True)
    del manifest["runs"]["vanilla-s1"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    kept = {n: _stat(out / "runs" / n / "metrics.csv") for n in ("vanilla-s0", "reset-s0")}
    kept_summary = {n: (out / "runs" / n / "summary.json").read_bytes() for n in kept}
    assert _compare(setup / "base.yaml", out, "vanilla,reset") == 0
    manifest = read_manifest(out)
    assert all(e["state"] == "done" for e in manifest["runs"].values()) and len(manifest["runs"]) == 4
    assert not (out / "runs" / "reset-s1" / "stale.txt").exists()  # restarted from scratch
    assert (out / "runs" / "reset-s1" / "summary.json").is_file()
    for n, st in kept.items():
        assert _stat(out / "runs" / n / "metrics.csv") == st, n
        assert (out / "runs" / n / "summary.json").read_bytes() == kept_summary[n]

    # A rerun with nothing left to do only rewrites the report; a changed config is refused.
    assert _compare(setup / "base.yaml", out, "vanilla,reset") == 0
    assert _stat(out / "runs" / "vanilla-s0" / "metrics.csv") == kept["vanilla-s0"]
    assert _compare(setup / "base.yaml", out, "vanilla", extra=["--set", "agent.gamma=0.9"]) == 2

    assert main(["report", str(out), "--out", str(setup / "rep2")]) == 0
    assert (setup / "rep2" / "report.md").is_file()


def test_failing_run_is_recorded_while_others_finish(setup: Path, monkeypatch, capsys):
    # The overlay is valid config; its env.import module raises only when a worker imports it.
    (setup / "crash_on_import.py").write_text("raise RuntimeError('boom: injected failure')\n")
    monkeypatch.syspath_prepend(str(setup))
    (setup / "methods" / "crash.yaml").write_text("env:\n  import: crash_on_import\n")
    out = setup / "sweep"
    assert _compare(setup / "base.yaml", out, "vanilla,crash", seeds=1) == 1
    runs = read_manifest(out)["runs"]
    assert runs["vanilla-s0"]["state"] == "done"
    assert runs["crash-s0"]["state"] == "failed"
    assert runs["crash-s0"]["error"] == "RuntimeError: boom: injected failure"
    tb = (out / "runs" / "crash-s0" / "error.txt").read_text()
    assert "Traceback" in tb and "crash_on_import" in tb
    md = (out / "report" / "report.md").read_text()
    assert "crash-s0" in md and "boom" in md
    assert "1 failed (crash-s0)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--methods", "vanilla,nosuch"], "unknown method 'nosuch'"),
        (["--methods", "vanilla", "--set", "agent.gama=0.9"], "unknown key 'agent.gama'"),
        (["--methods", "vanilla", "--set", "agent.gamma"], "--set expects"),
        (["--methods", "vanilla", "--seeds", "0"], "--seeds must be >= 1"),
        (["--methods", "vanilla", "--workers", "0"], "--workers must be >= 1"),
        (["--methods", "bad"], "method 'bad'"),
        (["--methods", " , "], "at least one method"),
        (["--methods", "vanilla", "--backend", "dask"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_with_one_line(setup: Path, capsys, args, message):
    (setup / "methods" / "bad.yaml").write_text("agent:\n  learning_rate: -1\n")
    out = setup / "sweep"
    assert main(["compare", str(setup / "base.yaml"), *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()  # nothing started


def test_unknown_method_lists_available(setup: Path, capsys):
    assert main(["compare", str(setup / "base.yaml"), "--methods", "resett", "--out", str(setup / "o")]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'reset'" in err and "available methods: reset, vanilla" in err


def test_missing_config_and_missing_sweep(tmp_path: Path, capsys):
    assert main(["compare", str(tmp_path / "none.yaml"), "--methods", "a"]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nosweep")]) == 2
    assert "sweep directory not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no finished runs" in capsys.readouterr().err


def test_ray_backend_missing_is_a_user_error(setup: Path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    args = ["compare", str(setup / "base.yaml"), "--methods", "vanilla", "--backend", "ray"]
    assert main([*args, "--out", str(setup / "o")]) == 2
    assert "install rlplast[ray]" in capsys.readouterr().err
    assert not (setup / "o").exists()


def _edit_configs_when_workers_start(setup: Path, monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    """Edit the base config and every overlay on disk after planning, just before the workers start."""
    real = getattr(sweep_compare, backend)

    def edit_then_run(*args, **kwargs) -> None:
        with open(setup / "base.yaml", "a") as f:
            f.write("agent: {gamma: 0.5}\n")
        for overlay in (setup / "methods").glob("*.yaml"):
            overlay.write_text("interventions:\n  - {name: reset_last_layers, every_steps: 50}\n")
        real(*args, **kwargs)

    monkeypatch.setattr(sweep_compare, backend, edit_then_run)


def _planned(setup: Path, methods: list[str], seeds: int, metrics: bool = True) -> dict[str, str]:
    """Each run's resolved config text, as planned (plan_sweep writes nothing)."""
    _, specs = plan_sweep(setup / "base.yaml", methods, seeds, _set_values(metrics), setup / "sweep")
    return {spec.name: spec.config_text for spec in specs}


def _assert_trained_as_planned(out: Path, planned: dict[str, str], edited: dict[str, str]) -> None:
    runs = read_manifest(out)["runs"]
    for name, text in planned.items():
        assert text != edited[name]  # the edit matters: a worker reading the YAML would train another config
        assert (out / "runs" / name / "config.yaml").read_text() == text, name
        assert runs[name]["config_hash"] == hashlib.sha256(text.encode()).hexdigest()[:16]


def test_runs_train_the_planned_config_not_later_edits(setup: Path, monkeypatch):
    """A job's payload is the resolved config text: YAML edited while the sweep runs changes nothing."""
    planned = _planned(setup, ["vanilla", "reset"], seeds=1)
    _edit_configs_when_workers_start(setup, monkeypatch, "run_local")
    out = setup / "sweep"
    assert _compare(setup / "base.yaml", out, "vanilla,reset", seeds=1) == 0
    _assert_trained_as_planned(out, planned, _planned(setup, ["vanilla", "reset"], seeds=1))


def test_ray_backend_runs_a_tiny_sweep_with_at_most_workers_at_once(setup: Path, monkeypatch):
    _need_ray()
    planned = _planned(setup, ["vanilla"], seeds=2, metrics=False)
    _edit_configs_when_workers_start(setup, monkeypatch, "run_ray")
    out = setup / "sweep"
    args = ["compare", str(setup / "base.yaml"), "--methods", "vanilla", "--seeds", "2", "--workers", "1"]
    assert main([*args, "--backend", "ray", "--out", str(out), "--quiet", *_overrides(metrics=False)]) == 0
    runs = read_manifest(out)["runs"]
    assert {n: e["state"] for n, e in runs.items()} == {"vanilla-s0": "done", "vanilla-s1": "done"}
    # Ray tasks get the planned config text too, not the files edited meanwhile.
    _assert_trained_as_planned(out, planned, _planned(setup, ["vanilla"], seeds=2, metrics=False))
    # --workers 1: the second run is submitted only once the first has finished.
    assert runs["vanilla-s1"]["started"] >= runs["vanilla-s0"]["finished"] > runs["vanilla-s0"]["started"]
    assert (out / "runs" / "vanilla-s1" / "summary.json").is_file()
    assert "No metrics" in (out / "report" / "report.md").read_text()


def test_interrupted_run_with_checkpoints_is_resumed_not_restarted(setup: Path):
    out = setup / "sweep"
    ckpt = ["--set", "checkpoint.every_steps=100", "--set", "checkpoint.keep=20"]
    assert _compare(setup / "base.yaml", out, "reset", seeds=1, extra=ckpt) == 0
    run = out / "runs" / "reset-s0"
    finished = (run / "metrics.csv").read_text()
    # As if killed after the checkpoint at step 200: later checkpoints and the summary never written.
    for path in sorted((run / "checkpoints").glob("ckpt-*.pkl")):
        if int(path.stem.split("-")[1]) > 200:
            path.unlink()
    (run / "summary.json").unlink()
    manifest = read_manifest(out)
    manifest["runs"]["reset-s0"]["state"] = "running"
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert _compare(setup / "base.yaml", out, "reset", seeds=1, extra=ckpt) == 0
    assert json.loads((run / "summary.json").read_text())["resumed"] is True  # continued, not restarted
    rows = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()]
    ref = [line.split(",") for line in finished.splitlines()]
    wall = {rows[0].index("time_s"), rows[0].index("steps_per_s")}
    strip = lambda table: [[v for i, v in enumerate(r) if i not in wall] for r in table]  # noqa: E731
    assert strip(rows) == strip(ref)  # and ended exactly where the uninterrupted run did
    assert read_manifest(out)["runs"]["reset-s0"]["state"] == "done"


def test_metric_notes_are_printed_once_per_sweep_not_per_run(setup: Path, capfd):
    """Workers train quietly; each run's NaN notes go to summary.json and the sweep prints each once."""
    out = setup / "sweep"
    args = ["compare", str(setup / "base.yaml"), "--methods", "vanilla", "--seeds", "2", "--workers", "2"]
    # No action can reach n_min samples: every run notes that the NC metrics are NaN.
    extra = ["--set", "metrics.n_min=100000"]
    assert main([*args, "--out", str(out), *_overrides(), *extra]) == 0
    err = capfd.readouterr().err
    assert "(reported once)" not in err  # nothing from the workers
    note_lines = [ln for ln in err.splitlines() if "note from" in ln]
    assert note_lines and all(
        ln.startswith("rlplast compare: note from 2 of 2 runs: metrics: ") for ln in note_lines
    )
    assert len(note_lines) == len(set(note_lines))
    for seed in (0, 1):
        notes = json.loads((out / "runs" / f"vanilla-s{seed}" / "summary.json").read_text())["notes"]
        assert any("C_eff=0 < 2" in n for n in notes), notes
        assert {ln.split("runs: ", 1)[1] for ln in note_lines} == set(notes)


@pytest.mark.parametrize("lost", ["manifest", "entry"])
def test_finished_run_the_manifest_does_not_record_is_kept_not_retrained(setup: Path, capsys, lost):
    """A run that finished while its parent was not listening (killed, or the manifest lost) is
    counted as done; one with another config.yaml is refused, and nothing in it is touched."""
    out = setup / "sweep"
    assert _compare(setup / "base.yaml", out, "vanilla", seeds=1) == 0
    run = out / "runs" / "vanilla-s0"
    before = {p.name: _stat(p) for p in run.iterdir() if p.is_file()}
    if lost == "manifest":
        (out / "manifest.json").unlink()
    else:
        manifest = read_manifest(out)
        manifest["runs"]["vanilla-s0"]["state"] = "running"
        (out / "manifest.json").write_text(json.dumps(manifest))
    assert _compare(setup / "base.yaml", out, "vanilla", seeds=1) == 0
    assert {p.name: _stat(p) for p in run.iterdir() if p.is_file()} == before  # not retrained
    assert read_manifest(out)["runs"]["vanilla-s0"]["state"] == "done"

    (out / "manifest.json").unlink()
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("seed: 0", "seed: 7", 1))
    before = {p.name: (_stat(p), p.read_bytes()) for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    assert _compare(setup / "base.yaml", out, "vanilla", seeds=1) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different config.yaml" in err[0] and "vanilla-s0" in err[0]
    assert {p.name: (_stat(p), p.read_bytes()) for p in run.iterdir() if p.is_file()} == before


def test_without_methods_runs_the_default_methods_and_says_so(setup: Path, capsys):
    (setup / "methods" / "ncreg.yaml").write_text("interventions:\n  - {name: nc_regularizer}\n")
    out = setup / "sweep"
    args = [
        "compare",
        str(setup / "base.yaml"),
        "--seeds",
        "1",
        "--workers",
        "2",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main([*args, *_overrides(metrics=False)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == ["rlplast compare: no --methods given: running vanilla, reset, ncreg"]
    assert set(read_manifest(out)["runs"]) == {"vanilla-s0", "reset-s0", "ncreg-s0"}
    # --methods still chooses (here: nothing left to train), and then nothing is said about defaults.
    assert main([*args, "--methods", "vanilla", *_overrides(metrics=False)]) == 0
    assert "--methods" not in capsys.readouterr().err


def test_manifest_records_method_order_ahead_of_earlier_ones(tmp_path: Path):
    from rlplast.sweep.manifest import Manifest

    first = Manifest(tmp_path, "cfg.yaml", [], ["vanilla", "reset"])
    first.save()
    again = Manifest(tmp_path, "cfg.yaml", [], ["ncreg", "reset"])
    assert again.data["methods"] == ["ncreg", "reset", "vanilla"]
