"""The ``ray`` backend: the same jobs (runs and populations) as Ray tasks (``num_cpus=1`` each, no retries).

The parent still owns the manifest and submits at most ``workers`` tasks at a time (the next one as
each finishes). Each task gets the job's payload (the resolved config text), so Ray workers never
read the user's YAML; they must see the sweep directory (a shared file system on a cluster).
"""

from __future__ import annotations

import os
from typing import Any

from rlplast.errors import UserError
from rlplast.sweep.job import JobListener, JobResult, execute
from rlplast.sweep.plan import JobPlan
from rlplast.sweep.signals import StopRequest


def import_ray() -> Any:
    """Import Ray (an optional extra) or explain how to install it.

    Sets ``RAY_AUTH_MODE=disabled`` unless already set (no token written under the home folder).

    Raises:
        UserError: Ray is not installed.
    """
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    try:
        import ray
    except ImportError:
        raise UserError(
            "--backend ray needs Ray: install rlplast[ray] (pip install 'rlplast[ray]')"
        ) from None
    return ray


def run_ray(
    todo: list[JobPlan],
    workers: int,
    address: str | None,
    listener: JobListener,
    stop: StopRequest | None = None,
) -> None:
    """Train ``todo`` as Ray tasks, at most ``workers`` in flight.

    Without ``address`` (and no Ray already initialised) a local Ray with ``num_cpus=workers`` is
    started and shut down at the end; with one, ``ray.init(address=...)`` joins that cluster. On a
    stop request the running tasks are cancelled (``force`` on a second request): a run continues
    from the checkpoint it wrote if Ray's interrupt reached its training loop, else from its last
    periodic checkpoint.

    Args:
        todo: the jobs to train (runs and populations), in order.
        workers: the most tasks in flight.
        address: an existing Ray cluster, or None.
        listener: told when each run is submitted and when it ends.
        stop: the sweep's stop request (default: one that is never made).
    """
    stop = stop or StopRequest()
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=max(1, workers), **kwargs)
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(execute)
        queue = list(todo)
        running: dict[Any, JobPlan] = {}
        cancelled = False

        def submit() -> None:
            plan = queue.pop(0)
            running[task.remote(plan.job(absolute=True))] = plan
            for spec in plan.specs:
                listener.on_start(spec)

        # At most `workers` runs are in flight; the next one is submitted as each finishes.
        while queue and len(running) < workers:
            submit()
        while running:
            stop.acknowledge(len(running))
            if stop.requested and not cancelled:
                # Ray tasks get no graceful stop: cancelling them keeps their last periodic checkpoint.
                for ref in running:
                    ray.cancel(ref, force=stop.forced)
                cancelled = True
            finished, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
            for ref in finished:
                plan = running.pop(ref)
                try:
                    results = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a lost worker or node, or a cancelled task
                    line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    result = JobResult(ok=False, error=f"ray task failed: {line}")
                    if stop.requested:
                        result.stopped, result.error = True, f"cancelled after {stop.name}"
                    results = [result] * len(plan.specs)
                for spec, result in zip(plan.specs, results, strict=True):
                    listener.on_end(spec, result)
                if queue and not stop.requested:
                    submit()
    finally:
        if started_here:
            ray.shutdown()
