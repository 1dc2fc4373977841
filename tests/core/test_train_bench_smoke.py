"""The training benchmark's turn-taking harness (slow: run with `make test-slow`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import REPO  # noqa: E402

pytestmark = pytest.mark.slow


def test_interleaved_benchmark_runs_every_variant_and_reports_ratios():
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "train_bench.py"),
            "--steps",
            "1600",
            "--chunk",
            "400",
            "--variants",
            "plastic",
            "minimal",
            "batch-32",
            "ncreg0-32",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    lines = proc.stdout.splitlines()
    rates = {
        ln.split()[0]: float(ln.split()[1]) for ln in lines if ln.split()[:1] in (["plastic"], ["minimal"])
    }
    assert set(rates) == {"plastic", "minimal"} and all(r > 0 for r in rates.values())
    ratio = next(ln for ln in lines if ln.startswith("PlasticDQN / minimal loop"))
    assert float(ratio.removeprefix("PlasticDQN / minimal loop").split()[0]) == pytest.approx(
        rates["plastic"] / rates["minimal"], rel=0.01
    )
    assert any(ln.startswith("NC regularizer, coef≈0 overhead at batch 32 (%)") for ln in lines)


def test_unknown_variant_fails_before_anything_runs():
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "train_bench.py"), "--variants", "plastic", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "unknown variant nope" in proc.stderr
