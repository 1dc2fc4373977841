"""Parallel speed-up of ``rlplast compare``: the same 4-run sweep with 1 worker and with 2.

Runs 2 methods × 2 seeds of DQN on CartPole-v1 (``--steps`` env steps each, metrics off) twice,
into fresh temporary sweep directories, and prints both wall times and the speed-up.

Usage:
    .venv/bin/python benchmarks/compare_bench.py [--steps 3000] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from rlplast.rundir import read_manifest
from rlplast.sweep import run_compare

BASE = """\
env: {id: CartPole-v1}
agent: {learning_starts: 500, buffer_size: 10000, target_update_interval: 500, net_arch: [64, 64]}
train: {log_every_steps: 500}
metrics: {enabled: false}
output: {tensorboard: false, save_model: false}
"""


def sweep(root: Path, workers: int, steps: int) -> tuple[float, float]:
    """Wall time of the whole 4-run sweep (pool start-up included, report excluded) and the sum
    of the runs' own wall times (their ratio is the achieved concurrency)."""
    start = time.perf_counter()
    result = run_compare(
        root / "base.yaml",
        ["vanilla", "other"],
        seeds=2,
        overrides=[f"train.total_steps={steps}"],
        out=root / f"sweep-w{workers}",
        workers=workers,
        quiet=True,
        report=False,  # the report is the same serial cost for both; timed separately in main()
    )
    wall = time.perf_counter() - start
    if result.failed or result.done != 4:
        raise SystemExit(f"benchmark sweep failed: {result}")
    runs = read_manifest(result.out)["runs"].values()
    return wall, sum(float(e["wall_time_s"]) for e in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="env steps per run")
    parser.add_argument("--workers", type=int, default=2, help="workers of the parallel sweep")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "methods").mkdir()
        (root / "base.yaml").write_text(BASE)
        (root / "methods" / "vanilla.yaml").write_text("{}\n")
        (root / "methods" / "other.yaml").write_text("agent: {learning_rate: 3.0e-4}\n")
        load = os.getloadavg()[0]
        serial, serial_runs = sweep(root, 1, args.steps)
        parallel, parallel_runs = sweep(root, args.workers, args.steps)
    print(f"4 runs × {args.steps} steps (CartPole-v1, 2 methods × 2 seeds), {os.cpu_count()} CPUs")
    print(f"load average before: {load:.2f} (other processes compete for the cores)")
    print(f"1 worker : {serial:6.1f} s  (runs' own wall times sum to {serial_runs:.1f} s)")
    print(f"{args.workers} workers: {parallel:6.1f} s  (runs' own wall times sum to {parallel_runs:.1f} s)")
    print(f"speed-up : {serial / parallel:.2f}×")


if __name__ == "__main__":
    main()
