"""Stopping a sweep: SIGTERM or SIGINT to the parent stops it gracefully, a second one forces it."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import Any

#: Signals that stop a sweep gracefully (the workers checkpoint); exit code 128 + signal number.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """The parent's SIGTERM/SIGINT handler: the first signal stops the sweep, a second one forces it.

    The handler only records the signal; the backends' main loops read :attr:`requested` and
    :attr:`forced` and call :meth:`acknowledge` to report it.

    Attributes:
        received: the stop signals received, in order.
        notice: where :meth:`acknowledge` reports a new request (e.g. a progress line); None: silent.
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self.notice: Callable[[str], None] | None = None
        self._noticed = 0

    def __call__(self, signum: int, frame: Any) -> None:
        self.received.append(signum)  # no I/O here: the main loop reports it (see acknowledge)

    def acknowledge(self, running: int) -> None:
        """Report each new stop request once (from the main loop, not the signal handler).

        Args:
            running: runs in flight, for the message.
        """
        if self.notice is None or self._noticed == len(self.received):
            return
        self._noticed = len(self.received)
        if self.forced:
            self.notice(f"received {signal.Signals(self.received[-1]).name} again: killing {running} workers")
        else:
            self.notice(
                f"received {self.name}: stopping {running} running runs (each writes a checkpoint "
                "first); send it again to kill them"
            )

    @property
    def requested(self) -> bool:
        """A stop signal arrived."""
        return bool(self.received)

    @property
    def forced(self) -> bool:
        """A second stop signal arrived: kill the workers."""
        return len(self.received) > 1

    @property
    def name(self) -> str:
        """The first stop signal's name (``SIGTERM``), or ``""``."""
        return signal.Signals(self.received[0]).name if self.received else ""

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Handle :data:`STOP_SIGNALS` with this object inside the ``with`` block (main thread only)."""
        previous: dict[signal.Signals, Any] = {}
        for sig in STOP_SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread: signals keep their handlers
                previous[sig] = signal.signal(sig, self)
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
