"""The Celery app of the fleet benchmark: one short resumable task of 3 steps.

Configured from the environment by ``bench_fleet.py``: BENCH_BROKER, BENCH_QUEUE,
BENCH_STORE, BENCH_TABLE, and BENCH_COUNTER, the Redis key where each finished task adds
one (``<counter>:failed`` for a task that did not succeed).
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery, Task, signals

from benchmarks.bench_overhead import STEP_ROWS, double, load, total
from celery_resumable import ResumableTask, step

app = Celery("bench_fleet")
app.conf.update(
    broker_url=os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/12"),
    task_default_queue=os.environ.get("BENCH_QUEUE", "bench-fleet"),
    task_ignore_result=True,
    resumable_store_url=os.environ.get("BENCH_STORE", "sqlite:///bench-fleet.sqlite3"),
    resumable_table_name=os.environ.get("BENCH_TABLE", "celery_resumable_checkpoints"),
    resumable_partitions=os.environ.get("BENCH_PARTITIONS") == "1",
    worker_hijack_root_logger=False,
    worker_enable_remote_control=False,
    broker_connection_retry_on_startup=True,
)

COUNTER = os.environ.get("BENCH_COUNTER", "bench-fleet")
TASK_NAME = "bench.fleet_steps"


@app.task(base=ResumableTask, bind=True, name=TASK_NAME)
def fleet_steps(self: Task) -> int:
    """Three small functions as the steps of a resumable task."""
    rows = step("load", load, STEP_ROWS)
    doubled = step("double", double, rows)
    return step("total", total, doubled)


_counter: redis.Redis | None = None
_counter_pid = 0


@signals.task_postrun.connect
def count_finished(task: Any = None, state: str | None = None, **_: Any) -> None:
    """Add one to the counter once a run and its store writes are done."""
    global _counter, _counter_pid
    if getattr(task, "name", "") != TASK_NAME:
        return
    if _counter is None or _counter_pid != os.getpid():
        _counter = redis.Redis.from_url(app.conf.broker_url)
        _counter_pid = os.getpid()
    _counter.incr(COUNTER if state == "SUCCESS" else f"{COUNTER}:failed")
