"""Learning checks (minutes): run with `make test-slow`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlplast.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_cartpole_config_solves_cartpole(tmp_path):
    out = tmp_path / "run"
    assert main(["train", str(REPO / "configs/cartpole.yaml"), "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_return"] >= 195, summary
