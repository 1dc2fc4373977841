"""Every method overlay in configs/methods/ trains to completion with `rlplast train --method`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from rlplast.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import REPO, tiny_overrides  # noqa: E402

METHODS = sorted(p.stem for p in (REPO / "configs" / "methods").glob("*.yaml"))


@pytest.mark.parametrize("method", METHODS)
def test_method_overlay_trains(tmp_path, method):
    out = tmp_path / method
    args = ["train", str(REPO / "configs/permuted_cartpole.yaml"), "--method", method, "--out", str(out)]
    args += ["--quiet"]
    for o in [*tiny_overrides(600), "env.kwargs.steps_per_task=300"]:
        args += ["--set", o]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    expected = [
        s["name"]
        for s in __import__("yaml").safe_load((REPO / f"configs/methods/{method}.yaml").read_text())[
            "interventions"
        ]
    ]
    assert summary["interventions"] == expected


def test_unknown_method_lists_available(tmp_path, capsys):
    args = [
        "train",
        str(REPO / "configs/permuted_cartpole.yaml"),
        "--method",
        "rest",
        "--out",
        str(tmp_path / "x"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "unknown method 'rest'" in err and "reset" in err and "vanilla" in err
    assert not (tmp_path / "x").exists()
