"""Progress lines of a sweep on stderr: ``[done/total] name state (wall); elapsed, ETA``."""

from __future__ import annotations

import sys
import time


class Progress:
    """One stderr line per finished run, with an ETA from the sweep's throughput so far.

    ETA = elapsed ÷ runs finished in this invocation × runs left (docs/compare.md).

    Args:
        total: runs in the grid.
        already: runs done before this invocation (counted as finished).
        quiet: print nothing.
    """

    def __init__(self, total: int, already: int, quiet: bool) -> None:
        self.total, self.count, self.quiet = total, already, quiet
        self.start = time.perf_counter()
        self.finished_here = 0

    def update(self, name: str, ok: bool, wall: float, error: str = "") -> None:
        """Count a finished run (done or failed) and print its line."""
        self.count += 1
        self.finished_here += 1
        if self.quiet:
            return
        elapsed = time.perf_counter() - self.start
        left = self.total - self.count
        eta = elapsed / self.finished_here * left
        what = f"done in {wall:.1f} s" if ok else f"FAILED: {error}"
        self.say(f"[{self.count}/{self.total}] {name} {what}; elapsed {elapsed:.0f} s, ETA {eta:.0f} s")

    def say(self, text: str) -> None:
        """Print ``rlplast compare: <text>`` on stderr (unless quiet)."""
        if not self.quiet:
            print(f"rlplast compare: {text}", file=sys.stderr, flush=True)
