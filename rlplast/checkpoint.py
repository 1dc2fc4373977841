"""Checkpoints for exact resume: the whole training state in one checksummed, atomic file.

A checkpoint holds the agent object as it is (networks, optimizer, replay buffer, interventions
and their state, the vectorized env with its task schedule, episode buffers and RNGs), the
training callback's state (logging position, per-task returns, the metrics' RNG, θ₀) and the
global RNG states (Python, NumPy, torch). It is taken at the end of a collect-and-train
iteration, where nothing is half done, so resuming continues exactly as if never stopped.

File layout: ``checkpoints/ckpt-<step>.pkl`` = a header line ``RLPLAST-CKPT 1 <sha256> <size>``
followed by the cloudpickle payload. A file whose checksum or size does not match (a kill during
a copy, a truncated disk) is skipped with a warning in favour of the previous one.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import random
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import torch

from rlplast.errors import UserError
from rlplast.io import atomic_write_bytes

MAGIC = b"RLPLAST-CKPT 1"

#: Classes that moved after checkpoints referring to them were written: (module, name) as pickled
#: → where they live now. The speed layer moved from rlplast.agents.dqn to rlplast.agents.speed.
MOVED = {
    ("rlplast.agents.dqn", old): ("rlplast.agents.speed", new)
    for old, new in [
        ("_DeviceMean", "DeviceMean"),
        ("LeanDummyVecEnv", "LeanDummyVecEnv"),
        ("LeanReplayBuffer", "LeanReplayBuffer"),
        ("LeanNStepReplayBuffer", "LeanNStepReplayBuffer"),
        ("MlpPolicy", "MlpPolicy"),
        ("CnnPolicy", "CnnPolicy"),
        ("MultiInputPolicy", "MultiInputPolicy"),
    ]
}


class _Unpickler(pickle.Unpickler):
    """``pickle``'s unpickler (cloudpickle writes standard pickles) that finds moved classes."""

    def find_class(self, module: str, name: str) -> Any:
        module, name = MOVED.get((module, name), (module, name))
        return super().find_class(module, name)


class CorruptCheckpoint(Exception):
    """A checkpoint file that cannot be trusted."""


def rng_state() -> dict[str, Any]:
    """The global random states that training draws from."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only where CUDA is available)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_path(folder: Path, step: int) -> Path:
    """``folder/ckpt-<step, 12 digits>.pkl``: names sort by step."""
    return folder / f"ckpt-{step:012d}.pkl"


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint files, newest (highest step) first."""
    return sorted(folder.glob("ckpt-*.pkl"), reverse=True)


def save_checkpoint(folder: Path, step: int, payload: dict[str, Any], keep: int) -> Path:
    """Atomically write ``payload`` as the checkpoint of ``step``; keep the newest ``keep`` files."""
    folder.mkdir(parents=True, exist_ok=True)
    data = cloudpickle.dumps(payload, protocol=5)
    header = MAGIC + f" {hashlib.sha256(data).hexdigest()} {len(data)}\n".encode()
    path = checkpoint_path(folder, step)
    atomic_write_bytes(path, header + data)
    for old in list_checkpoints(folder)[keep:]:
        old.unlink(missing_ok=True)
    return path


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Read and verify one checkpoint file.

    Raises:
        CorruptCheckpoint: wrong header, size or checksum, or an unreadable payload.
    """
    raw = path.read_bytes()
    head, sep, data = raw.partition(b"\n")
    parts = head.split(b" ")
    if not sep or len(parts) != 4 or b" ".join(parts[:2]) != MAGIC:
        raise CorruptCheckpoint(f"{path.name}: not an rlplast checkpoint")
    digest, size = parts[2].decode(), int(parts[3])
    if len(data) != size:
        raise CorruptCheckpoint(f"{path.name}: truncated ({len(data)} of {size} bytes)")
    if hashlib.sha256(data).hexdigest() != digest:
        raise CorruptCheckpoint(f"{path.name}: checksum mismatch")
    try:
        return _Unpickler(io.BytesIO(data)).load()
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise CorruptCheckpoint(f"{path.name}: cannot be loaded ({type(exc).__name__})") from None


def load_latest(folder: Path) -> tuple[dict[str, Any], Path]:
    """The newest valid checkpoint; corrupt ones are skipped with a warning on stderr.

    Raises:
        UserError: no checkpoint folder, or no valid checkpoint in it.
    """
    candidates = list_checkpoints(folder) if folder.is_dir() else []
    if not candidates:
        raise UserError(f"no checkpoint in {folder}; nothing to resume")
    for path in candidates:
        try:
            return read_checkpoint(path), path
        except CorruptCheckpoint as exc:
            print(f"rlplast: warning: skipping corrupt checkpoint {exc}", file=sys.stderr)
    raise UserError(f"every checkpoint in {folder} is corrupt; cannot resume")
