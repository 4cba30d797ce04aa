"""A plain Celery task, in an app without celery-resumable or with it.

With ``BENCH_WITH_RESUMABLE=1`` the app imports the package and declares a
``ResumableTask`` (never called); otherwise it imports nothing of it. Used by
``bench_plain_task.py`` two ways:

- ``python -m benchmarks.plain_task_app --runs N --repeat R``: times ``N`` eager
  ``plain.apply()`` runs, ``R`` times, and prints the result as JSON; with ``--tracer``
  it first builds a worker (``app.WorkController``, solo pool, not started: its bootsteps
  are created, as in a starting worker) and times the worker's own tracer of the task
  (``celery.app.trace.build_tracer``, what a worker runs for each message) instead;
- ``celery -A benchmarks.plain_task_app worker``: ``plain_counted`` does the same work
  and adds one to the Redis counter ``BENCH_COUNTER``; its first run records in
  ``BENCH_COUNTER:process`` what the worker process had loaded.

Settings from the environment: BENCH_BROKER, BENCH_QUEUE, BENCH_COUNTER, BENCH_STORE, and
BENCH_SOFT_SHUTDOWN (``worker_soft_shutdown_timeout`` in seconds).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from celery import Celery, Task, signals
from celery.app.trace import build_tracer

WITH_RESUMABLE = os.environ.get("BENCH_WITH_RESUMABLE") == "1"
COUNTER = os.environ.get("BENCH_COUNTER", "bench-plain-task")

app = Celery("bench_plain_task")
app.conf.update(
    broker_url=os.environ.get("BENCH_BROKER", "memory://"),
    task_default_queue=os.environ.get("BENCH_QUEUE", "bench-plain-task"),
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    worker_enable_remote_control=False,
    broker_connection_retry_on_startup=True,
)


def work() -> int:
    """What the plain task does: a small sum."""
    return sum(range(10))


@app.task(name="bench.plain")
def plain() -> int:
    """The plain task."""
    return work()


if os.environ.get("BENCH_SOFT_SHUTDOWN"):
    app.conf.worker_soft_shutdown_timeout = float(os.environ["BENCH_SOFT_SHUTDOWN"])

if WITH_RESUMABLE:
    from celery_resumable import ResumableTask, step

    app.conf.resumable_store_url = os.environ.get(
        "BENCH_STORE", "sqlite:///bench-plain-task.sqlite3"
    )

    @app.task(base=ResumableTask, bind=True, name="bench.resumable")
    def resumable(self: Task) -> int:
        """A resumable task of the same app; never called."""
        return step("sum", work)


_counter: Any = None


def loaded() -> dict[str, Any]:
    """What this process has loaded: the package or not, and Celery's task receivers."""
    return {
        "with_resumable": WITH_RESUMABLE,
        "imported": "celery_resumable" in sys.modules,
        "modules": sum(1 for name in sys.modules if name.startswith("celery_resumable")),
        "receivers": {
            name: len(getattr(signals, name).receivers)
            for name in ("before_task_publish", "task_prerun", "task_postrun", "task_success")
        },
    }


@app.task(name="bench.plain_counted")
def plain_counted() -> int:
    """The plain task's work, then one more on the Redis counter."""
    global _counter
    if _counter is None:
        import redis

        _counter = redis.Redis.from_url(app.conf.broker_url)
        _counter.set(f"{COUNTER}:process", json.dumps(loaded()))
    result = work()
    _counter.incr(COUNTER)
    return result


def time_apply(runs: int, repeat: int) -> list[float]:
    """Seconds per ``plain.apply()``, for each of ``repeat`` series of ``runs`` runs."""
    apply = plain.apply

    def series(count: int) -> None:
        for _ in range(count):
            apply()

    return time_series(series, runs, repeat)


def time_tracer(runs: int, repeat: int) -> tuple[list[float], dict[str, Any]]:
    """Seconds per run of the worker's tracer of ``plain`` in a built (not started)
    worker, for each of ``repeat`` series of ``runs`` runs; and what was loaded."""
    worker = app.WorkController(
        pool_cls="solo",
        concurrency=1,
        hostname=f"bench-plain-task-{os.getpid()}@localhost",
        without_mingle=True,
        without_gossip=True,
        without_heartbeat=True,
        loglevel="WARNING",
    )
    try:
        tracer = build_tracer(plain.name, plain, app=app, hostname=worker.hostname)
        ids = [uuid.uuid4().hex for _ in range(runs)]

        def series(count: int) -> None:
            for task_id in ids[:count]:
                tracer(task_id, (), {}, {"id": task_id})

        return time_series(series, runs, repeat), loaded()
    finally:
        signals.worker_shutdown.send(sender=worker)


def time_series(series: Callable[[int], None], runs: int, repeat: int) -> list[float]:
    """Seconds per run of ``repeat`` calls of ``series(runs)``, after a warm-up."""
    series(min(runs, 1000))
    gc.collect()
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        series(runs)
        timings.append((time.perf_counter() - start) / runs)
    return timings


def main(argv: Sequence[str] | None = None) -> None:
    """Time runs of the plain task; print them and what the process loaded (JSON)."""
    parser = argparse.ArgumentParser(description="Time the plain task in this process.")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tracer", action="store_true", help="time a worker's tracer")
    args = parser.parse_args(argv)
    if args.tracer:
        timings, state = time_tracer(args.runs, args.repeat)
    else:
        timings, state = time_apply(args.runs, args.repeat), loaded()
    print(json.dumps({"per_run": timings, **state}))


if __name__ == "__main__":
    main()
