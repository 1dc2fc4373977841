"""The ``local`` backend: a pool of worker processes on this machine, each training one job at a time
(a run, or a population of runs).

Workers are started with the ``forkserver`` start method (``spawn`` where it does not exist), never
``fork``, which is unsafe once torch has started threads. The parent hands out the jobs one at a time
through a pipe per worker, so it always knows which worker trains which runs.

A worker's pipe is also how the parent learns that it ended: its result arrives there, and the pipe
reaches end-of-file when the worker exits. The exit status comes through the fork server, which a
signal to the whole process group (``kill -TERM -PGID``, a batch scheduler) stops too; while the
sweep is stopping, the parent therefore waits for each worker's pipe instead of trusting a status
the fork server can no longer give.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

from rlplast.sweep.job import JobListener, JobResult, execute, runs_of
from rlplast.sweep.plan import JobPlan
from rlplast.sweep.signals import STOP_SIGNALS, StopRequest

#: The exit code multiprocessing reports for a fork-server child whose status it could not read
#: (the fork server is gone), not the worker's own exit code.
STATUS_LOST = 255


def pin_math_threads() -> None:
    """Pin every math library of a worker to one thread before torch/NumPy are imported there."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def die_with_parent() -> None:
    """Linux: SIGTERM this worker (a graceful stop) when its parent dies, even of SIGKILL.

    With the forkserver start method the parent is the fork server, which exits with the sweep.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):  # best effort
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)


def worker_main(conn: Any) -> None:
    """A local worker process: runs the jobs (:class:`~rlplast.sweep.job.Job`,
    :class:`~rlplast.sweep.job.PopulationJob`) it receives on ``conn``.

    Each job's list of :class:`~rlplast.sweep.job.JobResult` (one per run) goes back through
    ``conn``; ``None`` (or a closed pipe) ends the worker. SIGTERM and SIGINT only mark the worker as stopping while it is idle or
    starting a run (it then skips the run); during training :func:`rlplast.train.run_training`'s own
    handler checkpoints and stops.
    """
    received: list[int] = []
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, frame: received.append(signum))
    die_with_parent()
    pin_math_threads()
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if job is None:
            return
        received.clear()  # the parent sends no job while it is stopping
        try:
            results = execute(job, received)
        except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt from a stray handler
            results = [JobResult(ok=False, stopped=True, error=type(exc).__name__)] * runs_of(job)
        try:
            conn.send(results)
        except OSError:
            return


def mp_context() -> Any:
    """``forkserver`` where it exists, else ``spawn``: fork after torch has started threads can deadlock.

    Returns ``Any``: typeshed's ``BaseContext`` lacks ``Process``.
    """
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def died(exitcode: int | None, stopping: bool) -> JobResult:
    """The result of a job whose worker ended without reporting.

    Args:
        exitcode: the worker's exit code as multiprocessing reports it (negative: killed by a signal).
        stopping: the sweep is stopping: the run is ``interrupted`` rather than ``failed``.
    """
    if stopping and exitcode == STATUS_LOST:
        error = "worker process ended while the sweep stopped, without reporting (exit status lost with the fork server)"
    else:
        code = exitcode if exitcode is not None else STATUS_LOST
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        error = f"worker process died ({how})"
    return JobResult(ok=False, error=error, stopped=stopping)


@dataclass
class Worker:
    """A local worker process, its end of the job pipe, and the job it is training (if any)."""

    process: Any
    conn: Any
    plan: JobPlan | None = None


class LocalPool:
    """Up to ``workers`` worker processes, each training one job (a run or a population) at a time.

    On a stop request no run is handed out any more and the busy workers get SIGTERM (again every
    second until they answer: one still setting up its run checkpoints once training has begun); a
    second request kills them. A worker that exits without answering "died"; its runs fail (or are
    interrupted, when the sweep is stopping), and a fresh worker takes the next job.

    Args:
        workers: the most worker processes at once.
        listener: told when each run starts and ends.
        stop: the sweep's stop request.
    """

    def __init__(self, workers: int, listener: JobListener, stop: StopRequest) -> None:
        self.size = workers
        self.listener = listener
        self.stop = stop
        self.ctx = mp_context()
        self.pool: list[Worker] = []
        self.last_term = -1.0
        self.killed = False

    def run(self, todo: list[JobPlan]) -> None:
        """Train ``todo`` (in this order) and return when every job ended or the sweep stopped."""
        queue = list(todo)
        try:
            while True:
                self.hand_out(queue)
                busy = [w for w in self.pool if w.plan is not None]
                if not busy:
                    break  # all done, or stopped before the queue was empty
                self.pass_on_stop(busy)
                self.collect(busy)
        finally:
            self.close()

    def hand_out(self, queue: list[JobPlan]) -> None:
        """Give queued jobs to idle workers (starting workers up to the pool size)."""
        while queue and not self.stop.requested:
            worker = self.idle_worker()
            if worker is None:
                return
            plan = queue.pop(0)
            try:
                worker.conn.send(plan.job())
            except OSError:  # the idle worker is gone: another one takes the job
                queue.insert(0, plan)
                self.pool.remove(worker)
                continue
            worker.plan = plan
            for spec in plan.specs:
                self.listener.on_start(spec)

    def idle_worker(self) -> Worker | None:
        """An idle worker, a new one when the pool is not full, else None."""
        idle = next((w for w in self.pool if w.plan is None), None)
        if idle is None and len(self.pool) < self.size:
            parent_end, child_end = self.ctx.Pipe()
            process = self.ctx.Process(target=worker_main, args=(child_end,), name="rlplast-worker")
            idle = Worker(process, parent_end)
            process.start()
            child_end.close()  # the worker holds the only other end: its exit closes the pipe
            self.pool.append(idle)
        return idle

    def pass_on_stop(self, busy: list[Worker]) -> None:
        """SIGTERM the busy workers once a second while stopping; SIGKILL them on a second request."""
        self.stop.acknowledge(len(busy))
        if self.stop.forced and not self.killed:
            for w in busy:
                w.process.kill()
            self.killed = True
        elif self.stop.requested and not self.killed and time.monotonic() - self.last_term >= 1.0:
            for w in busy:
                w.process.terminate()  # SIGTERM: checkpoint and stop
            self.last_term = time.monotonic()

    @property
    def trust_exit_status(self) -> bool:
        """Whether a worker's exit status (read through the fork server) tells that it ended.

        Not while stopping: the signal may have stopped the fork server too, and then every worker
        looks ended while it is still writing its checkpoint. Its pipe tells instead. Once the workers
        are killed, their status is trusted again (they are gone for sure).
        """
        return not self.stop.requested or self.killed

    def collect(self, busy: list[Worker]) -> None:
        """Wait up to 0.5 s for results and ended workers, then record them."""
        ready = [w.conn for w in busy]
        if self.trust_exit_status:
            ready += [w.process.sentinel for w in busy]
        multiprocessing.connection.wait(ready, timeout=0.5)
        for w in busy:
            results, ended = _receive(w.conn)
            if results is not None:
                self.finish(w, results)
            elif ended or (self.trust_exit_status and not w.process.is_alive()):
                w.process.join()
                self.pool.remove(w)
                w.conn.close()
                assert w.plan is not None
                self.finish(w, [died(w.process.exitcode, self.stop.requested)] * len(w.plan.specs))

    def finish(self, worker: Worker, results: list[JobResult]) -> None:
        """The worker's job ended with ``results`` (one per run): the worker is idle again."""
        plan, worker.plan = worker.plan, None
        assert plan is not None
        for spec, result in zip(plan.specs, results, strict=True):
            self.listener.on_end(spec, result)

    def close(self) -> None:
        """End every worker: idle ones are told to exit, busy ones (after an error here) get SIGTERM."""
        for w in self.pool:
            if w.plan is None:
                with contextlib.suppress(OSError):
                    w.conn.send(None)
            else:  # only after an error in the parent itself: let the run checkpoint
                w.process.terminate()
        for w in self.pool:
            w.process.join(timeout=30)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()


def _receive(conn: Any) -> tuple[list[JobResult] | None, bool]:
    """``(results, ended)``: the worker's results if they are waiting; ``ended`` when its pipe is closed."""
    try:
        if conn.poll():
            return conn.recv(), False
    except (EOFError, OSError):
        return None, True
    return None, False


def run_local(
    todo: list[JobPlan], workers: int, listener: JobListener, stop: StopRequest | None = None
) -> None:
    """Train ``todo`` on up to ``workers`` local worker processes (see :class:`LocalPool`).

    Args:
        todo: the jobs to train (runs and populations), in order.
        workers: the most jobs at once.
        listener: told when each run starts and ends.
        stop: the sweep's stop request (default: one that is never made).
    """
    LocalPool(workers, listener, stop or StopRequest()).run(todo)
