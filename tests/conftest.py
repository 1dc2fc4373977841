"""Shared test helpers."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Checkpoints are signed with a per-user key (rlplast.checkpoint.checkpoint_key): the tests use one
# of their own, never the real one under ~/.config. Set here, at import, so that subprocesses and
# sweep workers started by the tests inherit it.
os.environ["RLPLAST_KEY_DIR"] = tempfile.mkdtemp(prefix="rlplast-test-key-")


def tiny_overrides(steps: int = 600, metrics: bool = False) -> list[str]:
    """``--set`` overrides that make any config a few-second run."""
    return [
        f"train.total_steps={steps}",
        "train.log_every_steps=100",
        "train.progress=false",
        "agent.learning_starts=100",
        "agent.train_freq=4",
        "agent.gradient_steps=1",
        "agent.target_update_interval=100",
        "agent.buffer_size=5000",
        "agent.net_arch=[32, 32]",
        f"metrics.enabled={'true' if metrics else 'false'}",
        "metrics.every_steps=200",
        "metrics.probe_size=256",
        "metrics.probe_steps=20",
        "metrics.probe_every_steps=400",
        "metrics.n_min=5",
    ]


@pytest.fixture
def repo() -> Path:
    return REPO
