"""Checkpoints from elsewhere never run code: crafted pickles, foreign keys, tampering, old formats.

Every crafted payload here would create a marker file when unpickled (its ``__reduce__`` calls
:func:`_pwn`); each test asserts that the file does not exist afterwards, that the refusal is one
line with exit code 2, and that the run directory is unchanged.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import stat
import sys
from pathlib import Path

import cloudpickle
import pytest
import torch

from rlplast.checkpoint import (
    LEGACY_MAGIC,
    NotLoaded,
    UntrustedCheckpoint,
    checkpoint_key,
    key_path,
    list_checkpoints,
    read_checkpoint,
    read_state,
    save_checkpoint,
    verify_checkpoint,
)
from rlplast.cli import main
from rlplast.runlog import WALL_CLOCK_COLUMNS, read_metrics_csv

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import REPO, tiny_overrides  # noqa: E402

#: Where a crafted payload would leave its mark (set per test by the ``marker`` fixture).
MARKER: list[Path] = []


def _pwn(path: str) -> str:
    """What a malicious pickle runs: leaves a file behind."""
    Path(path).write_text("code ran")
    return "pwned"


class Evil:
    """Unpickling this runs :func:`_pwn` (its ``__reduce__``)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (_pwn, (self.path,))


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "code-ran"
    yield path
    assert not path.exists(), "a crafted file ran code"


@pytest.fixture
def other_key(tmp_path, monkeypatch):
    """Switch to another user's key for the ``with`` block; back to the test's key afterwards."""
    mine = os.environ["RLPLAST_KEY_DIR"]
    theirs = tmp_path / "their-key"

    class Switch:
        def __enter__(self):
            monkeypatch.setenv("RLPLAST_KEY_DIR", str(theirs))

        def __exit__(self, *exc):
            monkeypatch.setenv("RLPLAST_KEY_DIR", mine)

    return Switch()


# ---------------------------------------------------------------------------------- a run to resume
@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """A run that looks killed at step 300: checkpoints up to 300, no summary."""
    run = tmp_path_factory.mktemp("interrupted") / "run"
    argv = ["train", str(REPO / "configs/permuted_cartpole.yaml"), "--out", str(run), "--quiet"]
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
    (run / "finished-metrics.csv").write_text((run / "metrics.csv").read_text())
    for name in ("summary.json", "model.zip"):
        (run / name).unlink()
    for ckpt in list_checkpoints(run / "checkpoints"):
        if int(ckpt.stem.split("-")[1]) > 300:
            ckpt.unlink()
    return run


@pytest.fixture
def run(interrupted, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(interrupted, copy)
    return copy


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _refused(argv: list[str], capsys, *expect: str) -> str:
    """Run the CLI, expect exit 2 and exactly one line on stderr containing ``expect``."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rlplast: error: "), err
    for text in expect:
        assert text in err, err
    return err


def _resume_refused(run: Path, capsys, *expect: str) -> str:
    before = _snapshot(run)
    err = _refused(["train", "--resume", str(run), "--quiet"], capsys, *expect)
    assert _snapshot(run) == before
    return err


def _same_rows(run: Path, reference: Path) -> bool:
    """``metrics.csv`` of ``run`` equals ``reference`` apart from wall-clock columns."""

    def rows(path: Path) -> list[dict[str, str]]:
        return [{k: v for k, v in r.items() if k not in WALL_CLOCK_COLUMNS} for r in read_metrics_csv(path)]

    return rows(run / "metrics.csv") == rows(reference)


def _latest(run: Path) -> Path:
    return list_checkpoints(run / "checkpoints")[0]


def _keep_only_latest(run: Path) -> Path:
    latest = _latest(run)
    for path in list_checkpoints(run / "checkpoints")[1:]:
        path.unlink()
    return latest


# ---------------------------------------------------------------------------------- crafted files
def test_a_plain_pickle_where_a_checkpoint_is_expected_is_refused(run, capsys, marker):
    for path in list_checkpoints(run / "checkpoints"):
        path.unlink()
    (run / "checkpoints" / "ckpt-000000000300.pkl").write_bytes(pickle.dumps({"model": Evil(marker)}))
    _resume_refused(run, capsys, "no valid checkpoint", "not an rlplast checkpoint")


def test_a_pickle_of_the_previous_format_is_refused_without_trust(run, capsys, marker):
    latest = _keep_only_latest(run)
    data = pickle.dumps({"model": Evil(marker)})
    latest.write_bytes(LEGACY_MAGIC + f" {hashlib.sha256(data).hexdigest()} {len(data)}\n".encode() + data)
    _resume_refused(run, capsys, "previous format", "--trust-checkpoint")


def test_a_checkpoint_signed_with_another_key_is_refused(run, capsys, marker, other_key):
    latest = _keep_only_latest(run)
    with other_key:  # what someone else's rlplast writes: a valid file, signed with their key
        save_checkpoint(latest.parent, 300, {"step": 300, "model": Evil(marker)}, keep=1)
    _resume_refused(
        run, capsys, "written with another user's or machine's checkpoint key", "--trust-checkpoint"
    )
    with pytest.raises(UntrustedCheckpoint):
        read_checkpoint(latest)
    # The control: trusting it explicitly is what would run the code.
    assert read_checkpoint(latest, trust=True)["model"] == "pwned"
    assert marker.read_text() == "code ran"
    marker.unlink()


def _sections(path: Path) -> tuple[bytes, bytes, dict, bytes, bytes]:
    raw = path.read_bytes()
    magic, body, signature, rest = raw.split(b"\n", 3)
    header = json.loads(body)
    (_, n_state, _), (_, n_objects, _) = header["sections"]
    return magic, signature, header, rest[:n_state], rest[n_state : n_state + n_objects]


def _write(path: Path, magic: bytes, signature: bytes, header: dict, state: bytes, objects: bytes) -> None:
    header["sections"] = [
        ["state", len(state), hashlib.sha256(state).hexdigest()],
        ["objects", len(objects), hashlib.sha256(objects).hexdigest()],
    ]
    body = json.dumps(header, sort_keys=True).encode()
    path.write_bytes(b"\n".join([magic, body, signature, state + objects]))


def test_a_tampered_checkpoint_of_this_user_is_refused(run, capsys, marker):
    """Objects replaced and the checksums recomputed: the HMAC (which needs the key) no longer matches."""
    latest = _keep_only_latest(run)
    magic, signature, header, state, _ = _sections(latest)
    _write(latest, magic, signature, header, state, cloudpickle.dumps([Evil(marker)]))
    _resume_refused(run, capsys, "does not match its signature (it was altered)", "--trust-checkpoint")


def test_the_state_part_never_runs_code_even_unsigned(run, marker, other_key):
    """read_state reads any checkpoint without its key; a crafted state part is refused, not run."""
    latest = _keep_only_latest(run)
    state = read_state(latest)
    assert isinstance(state["payload"]["model"], NotLoaded)
    assert state["payload"]["step"] == 300 and state["step"] == 300
    assert "model/policy/q_net.q_net.0.weight" in state["tensors"]
    assert "model/replay/observations" in state["tensors"]
    assert state["payload"]["callback"]["last_log_step"] == 300

    magic, signature, header, _, objects = _sections(latest)
    crafted = io.BytesIO()
    torch.save({"format": 2, "tree": Evil(marker), "tensors": {}, "arrays": {}}, crafted)
    _write(latest, magic, signature, header, crafted.getvalue(), objects)
    with pytest.raises(Exception, match="damaged state"):
        read_state(latest)
    with other_key, pytest.raises(UntrustedCheckpoint):
        read_checkpoint(latest)


# ---------------------------------------------------------------------------------- explicit trust
def test_a_colleagues_run_resumes_with_trust_checkpoint(interrupted, tmp_path, capsys, other_key):
    """Another user's (valid) run: refused by default, resumed with --trust-checkpoint, then signed
    with this user's key."""
    theirs = tmp_path / "theirs"
    shutil.copytree(interrupted, theirs)
    with other_key:
        for path in list_checkpoints(theirs / "checkpoints"):
            payload = read_checkpoint(path, trust=True)  # written with the test key: trusted by choice
            save_checkpoint(path.parent, int(path.stem.split("-")[1]), payload, keep=50)
    capsys.readouterr()
    _resume_refused(theirs, capsys, "--trust-checkpoint")
    assert main(["train", "--resume", str(theirs), "--quiet", "--trust-checkpoint"]) == 0
    err = capsys.readouterr().err
    assert "warning: --trust-checkpoint" in err and "not signed with this user's checkpoint key" in err
    assert _same_rows(theirs, interrupted / "finished-metrics.csv")  # exactly the uninterrupted run
    assert verify_checkpoint(_latest(theirs))  # written after the resume: this user's


def test_a_run_of_the_previous_format_resumes_with_trust_checkpoint(interrupted, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(interrupted, old)
    for path in list_checkpoints(old / "checkpoints"):
        data = cloudpickle.dumps(read_checkpoint(path), protocol=5)
        path.write_bytes(LEGACY_MAGIC + f" {hashlib.sha256(data).hexdigest()} {len(data)}\n".encode() + data)
    _resume_refused(old, capsys, "previous format", "--trust-checkpoint")
    assert main(["train", "--resume", str(old), "--quiet", "--trust-checkpoint"]) == 0
    assert "has the previous format" in capsys.readouterr().err
    assert _same_rows(old, interrupted / "finished-metrics.csv")
    assert verify_checkpoint(_latest(old))  # continued in the new format


def test_trust_checkpoint_needs_resume(capsys):
    _refused(
        ["train", str(REPO / "configs/quickstart.yaml"), "--trust-checkpoint"],
        capsys,
        "--trust-checkpoint applies to the checkpoint of --resume",
    )


# ---------------------------------------------------------------------------------- the key
def test_the_key_is_created_private_outside_the_run(run, tmp_path, monkeypatch):
    monkeypatch.setenv("RLPLAST_KEY_DIR", str(tmp_path / "keys" / "rlplast"))
    assert not key_path().exists()
    key = checkpoint_key()
    assert key is not None and len(key) == 32
    assert stat.S_IMODE(key_path().stat().st_mode) == 0o600
    assert stat.S_IMODE(key_path().parent.stat().st_mode) == 0o700
    assert checkpoint_key() == key  # created once, then read
    assert not list(run.rglob("*.key"))


def test_the_key_location_defaults_to_the_user_config_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("RLPLAST_KEY_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert key_path() == tmp_path / "xdg" / "rlplast" / "checkpoint.key"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert key_path() == tmp_path / "home" / ".config" / "rlplast" / "checkpoint.key"


def test_a_second_writer_keeps_the_first_key(tmp_path, monkeypatch):
    from rlplast.checkpoint import _create_key

    monkeypatch.setenv("RLPLAST_KEY_DIR", str(tmp_path / "k"))
    first = checkpoint_key()
    _create_key(key_path())  # a concurrent process that also found no key
    assert checkpoint_key() == first


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize(
    ("content", "mode", "expect"),
    [
        (None, 0o644, "can be read or changed by other users (mode 0644); run: chmod 600"),
        ("not hex\n", 0o600, "is malformed (expected 64 hex digits)"),
    ],
    ids=["group-readable", "malformed"],
)
def test_an_unusable_key_is_one_line_before_anything_is_written(
    tmp_path, monkeypatch, capsys, content, mode, expect
):
    monkeypatch.setenv("RLPLAST_KEY_DIR", str(tmp_path / "k"))
    checkpoint_key()
    if content is not None:
        key_path().write_text(content)
    key_path().chmod(mode)
    out = tmp_path / "new-run"
    argv = ["train", str(REPO / "configs/quickstart.yaml"), "--out", str(out), "--quiet"]
    for o in tiny_overrides(200):
        argv += ["--set", o]
    _refused(argv, capsys, f"checkpoint key {key_path()}", expect)
    assert not out.exists()
