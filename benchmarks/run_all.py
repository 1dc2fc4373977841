"""Run every benchmark in sequence and print their tables (``make bench``).

Benchmarks are never part of the test run. On a shared machine run this when nothing else is
busy: each benchmark reports ratios measured side by side in its own invocation, but absolute
numbers move with the load. Results and the commands that produced them: ``RESULTS.md``.

Usage::

    python benchmarks/run_all.py            # the default sizes (about 15 minutes on 2 cores)
    python benchmarks/run_all.py --quick    # smaller sizes, a few minutes
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    steps = "10000" if args.quick else "50000"
    commands = [
        [
            "metrics_bench.py",
            "--n",
            "10000",
            "--d",
            "512",
            "--c",
            "2",
            "6",
            "18",
            "--threads",
            "1",
            "--no-probe",
        ],
        ["metrics_bench.py", "--quick", "--threads", "1"],
        ["train_bench.py", "--steps", steps],  # variants interleaved in one process
        ["compare_bench.py", "--steps", "3000" if args.quick else "6000"],
    ]
    if not args.quick:
        commands.append(["train_bench.py", "--rss", "--steps", "100000", "--repeats", "1"])
    failed = 0
    for cmd in commands:
        print(f"\n$ python benchmarks/{' '.join(cmd)}", flush=True)
        failed += subprocess.call([sys.executable, str(HERE / cmd[0]), *cmd[1:]]) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
