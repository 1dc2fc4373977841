"""Sweeps, populations, manifests, summaries and configs from elsewhere never run code.

A sweep copied from another user continues only from checkpoints this user's key signed (or with
``--trust-checkpoint``); crafted ``manifest.json``, ``summary.json`` and ``config.yaml`` files are
parsed as data (JSON, YAML's safe loader) and malformed content is one line, exit 2, nothing changed.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from rlplast.checkpoint import NotLoaded, UntrustedCheckpoint, list_checkpoints, read_checkpoint, read_state
from rlplast.checkpoint import save_checkpoint as save
from rlplast.cli import main
from rlplast.config import load_config
from rlplast.population.run import resume_population, run_population
from rlplast.rundir import read_manifest
from rlplast.runlog import WALL_CLOCK_COLUMNS, read_metrics_csv

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import REPO, tiny_overrides  # noqa: E402

BASE = """\
env:
  id: rlplast/PermutedCartPole-v0
  kwargs: {steps_per_task: 200, n_tasks: 2}
output: {tensorboard: false, save_model: false}
"""
SET = [*tiny_overrides(400), "checkpoint.every_steps=100", "checkpoint.keep=20"]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _one_line(capsys, *expect: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rlplast: error: "), err
    for text in expect:
        assert text in err, err
    return err


def _resign_with_another_key(folder: Path, tmp_path: Path, monkeypatch) -> None:
    """Make every checkpoint in ``folder`` look written by another user (signed with their key)."""
    import os

    mine = os.environ["RLPLAST_KEY_DIR"]
    payloads = {p: read_checkpoint(p) for p in list_checkpoints(folder)}
    monkeypatch.setenv("RLPLAST_KEY_DIR", str(tmp_path / "their-key"))
    for path, payload in payloads.items():
        save(folder, int(path.stem.split("-")[1]), payload, keep=50)
    monkeypatch.setenv("RLPLAST_KEY_DIR", mine)


# ---------------------------------------------------------------------------------- compare
@pytest.fixture
def copied_sweep(tmp_path, monkeypatch) -> tuple[list[str], Path]:
    """A sweep whose run was interrupted at step 200, as received from another user."""
    (tmp_path / "methods").mkdir()
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "methods" / "vanilla.yaml").write_text("{}\n")
    out = tmp_path / "sweep"
    argv = ["compare", str(tmp_path / "base.yaml"), "--methods", "vanilla", "--seeds", "1", "--workers", "1"]
    argv += ["--out", str(out), "--quiet"]
    for o in SET:
        argv += ["--set", o]
    assert main(argv) == 0
    run = out / "runs" / "vanilla-s0"
    for path in list_checkpoints(run / "checkpoints"):
        if int(path.stem.split("-")[1]) > 200:
            path.unlink()
    (run / "summary.json").unlink()
    manifest = read_manifest(out)
    manifest["runs"]["vanilla-s0"]["state"] = "interrupted"
    (out / "manifest.json").write_text(json.dumps(manifest))
    _resign_with_another_key(run / "checkpoints", tmp_path, monkeypatch)
    return argv, out


def test_compare_refuses_to_continue_another_users_run_and_changes_nothing(copied_sweep, capsys):
    argv, out = copied_sweep
    before = _snapshot(out)
    capsys.readouterr()
    assert main(argv) == 2
    _one_line(
        capsys,
        "written with another user's or machine's checkpoint key",
        "--trust-checkpoint",
        "to start it again: delete",
    )
    assert _snapshot(out) == before


def test_compare_continues_it_with_trust_checkpoint(copied_sweep):
    argv, out = copied_sweep
    assert main([*argv, "--trust-checkpoint"]) == 0
    summary = json.loads((out / "runs" / "vanilla-s0" / "summary.json").read_text())
    assert summary["resumed"] is True and summary["steps"] == 400  # continued, not restarted


# ---------------------------------------------------------------------------------- populations
def test_a_population_checkpoint_of_another_user_is_refused(tmp_path, monkeypatch):
    overrides = [*tiny_overrides(300), "checkpoint.every_steps=100", "checkpoint.keep=20"]
    overrides += ["output.tensorboard=false", "output.save_model=false"]
    cfgs = [load_config(REPO / "configs/quickstart.yaml", [*overrides, f"train.seed={s}"]) for s in (0, 1)]
    dirs = [tmp_path / f"m-s{s}" for s in (0, 1)]
    pop = tmp_path / "pop"
    run_population(cfgs, dirs, pop, quiet=True)
    finished = [_rows(d / "metrics.csv") for d in dirs]

    latest = list_checkpoints(pop / "checkpoints")[0]
    state = read_state(latest)  # the objects part holds only what pickling alone restores
    objects = {k for k, v in state["payload"]["population"].items() if isinstance(v, NotLoaded)}
    assert objects <= {"envs", "tracker"}
    assert not any(isinstance(v, NotLoaded) for v in state["payload"]["members"])
    assert "payload/population/params/0" in state["tensors"]

    for path in list_checkpoints(pop / "checkpoints"):
        if int(path.stem.split("-")[1]) > 200:
            path.unlink()
    for d in dirs:
        (d / "summary.json").unlink()
    _resign_with_another_key(pop / "checkpoints", tmp_path, monkeypatch)
    before = _snapshot(tmp_path)
    with pytest.raises(UntrustedCheckpoint, match="--trust-checkpoint"):
        resume_population(cfgs, dirs, pop, quiet=True)
    assert _snapshot(tmp_path) == before
    result = resume_population(cfgs, dirs, pop, quiet=True, trust_checkpoint=True)
    assert all(m.ok for m in result.members)
    assert [_rows(d / "metrics.csv") for d in dirs] == finished  # exactly as uninterrupted


def _rows(path: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK_COLUMNS} for r in read_metrics_csv(path)]


# ---------------------------------------------------------------------------------- manifests, summaries, configs
def _compare_argv(root: Path) -> list[str]:
    argv = ["compare", str(root / "base.yaml"), "--methods", "vanilla", "--seeds", "1", "--workers", "1"]
    argv += ["--out", str(root / "sweep"), "--quiet"]
    for o in tiny_overrides(200):
        argv += ["--set", o]
    return argv


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished one-run sweep (with its base config and method overlay)."""
    root = tmp_path_factory.mktemp("finished")
    (root / "methods").mkdir()
    (root / "base.yaml").write_text(BASE)
    (root / "methods" / "vanilla.yaml").write_text("{}\n")
    assert main(_compare_argv(root)) == 0
    return root


@pytest.fixture
def finished_sweep(finished, tmp_path) -> tuple[list[str], Path]:
    root = tmp_path / "copy"
    shutil.copytree(finished, root)
    return _compare_argv(root), root / "sweep"


PICKLE = b"\x80\x04\x95\x1c\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x06system\x93\x8c\x04true\x85R."


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        (PICKLE, "cannot read sweep manifest"),
        (
            b'{"runs": {"vanilla-s0": {"py/object": "os.system", "state": ["done"]}}}',
            "'state' must be a string",
        ),
        (b"[1, 2]", "expected a JSON object, got an array"),
    ],
    ids=["pickle", "odd-entry", "array"],
)
def test_a_crafted_manifest_is_one_line_and_nothing_changes(finished_sweep, capsys, content, expect):
    argv, out = finished_sweep
    (out / "manifest.json").write_bytes(content)
    before = _snapshot(out)
    capsys.readouterr()
    for command in (argv, ["report", str(out)]):
        assert main(command) == 2
        _one_line(capsys, expect)
    assert _snapshot(out) == before


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        (PICKLE, "cannot read run summary"),
        (
            b'{"py/reduce": [{"py/function": "os.system"}], "wall_time_s": "rm -rf /"}',
            "'wall_time_s' must be a number",
        ),
        (b'{"returns_per_task": {"0": [1]}}', "returns_per_task '0' must be a number, got an array"),
    ],
    ids=["pickle", "odd-field", "odd-task"],
)
def test_a_crafted_summary_is_one_line_and_nothing_changes(finished_sweep, capsys, content, expect):
    argv, out = finished_sweep
    (out / "runs" / "vanilla-s0" / "summary.json").write_bytes(content)
    before = _snapshot(out)
    capsys.readouterr()
    for command in (argv, ["report", str(out)]):
        assert main(command) == 2
        _one_line(capsys, expect)
    assert _snapshot(out) == before


def test_a_config_with_a_python_tag_is_one_line_and_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "code-ran"
    crafted = f"!!python/object/apply:os.system ['touch {marker}']\n"
    (tmp_path / "c.yaml").write_text(crafted)
    assert main(["train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "out")]) == 2
    _one_line(capsys, "invalid YAML in", "could not determine a constructor for the tag")
    run = tmp_path / "run"  # a run directory whose config.yaml was replaced
    run.mkdir()
    (run / "config.yaml").write_text(f"env:\n  id: !!python/object/apply:os.system ['touch {marker}']\n")
    assert main(["train", "--resume", str(run)]) == 2
    _one_line(capsys, "invalid YAML in", "config.yaml")
    assert not marker.exists() and not (tmp_path / "out").exists()
