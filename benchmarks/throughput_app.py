"""The Celery app of the throughput benchmark: one short task, plain and resumable.

Configured from the environment by ``bench_throughput.py``: BENCH_BROKER, BENCH_QUEUE,
BENCH_STORE, BENCH_TABLE, and BENCH_COUNTER, the prefix of the Redis keys where each
finished task adds one (``<prefix>:plain``, ``<prefix>:resumable``).
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery, signals

from benchmarks.bench_overhead import STEP_ROWS, double, load, total
from celery_resumable import ResumableTask, step

app = Celery("bench_throughput")
app.conf.update(
    broker_url=os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/12"),
    task_default_queue=os.environ.get("BENCH_QUEUE", "bench-throughput"),
    resumable_store_url=os.environ.get("BENCH_STORE", "sqlite:///bench-throughput.sqlite3"),
    resumable_table_name=os.environ.get("BENCH_TABLE", "bench_throughput_checkpoints"),
    worker_hijack_root_logger=False,
    worker_enable_remote_control=False,
    broker_connection_retry_on_startup=True,
)

COUNTER = os.environ.get("BENCH_COUNTER", "bench-throughput")


@app.task(name="bench.plain_steps")
def plain_steps() -> int:
    """Three small functions in a plain Celery task."""
    return total(double(load(STEP_ROWS)))


@app.task(base=ResumableTask, bind=True, name="bench.resumable_steps")
def resumable_steps(self: Any) -> int:
    """The same three functions as the steps of a resumable task."""
    rows = step("load", load, STEP_ROWS)
    doubled = step("double", double, rows)
    return step("total", total, doubled)


_counter: redis.Redis | None = None
_counter_pid = 0
KINDS = {plain_steps.name: "plain", resumable_steps.name: "resumable"}


@signals.task_postrun.connect
def count_finished(task: Any = None, state: str | None = None, **_: Any) -> None:
    """Add one to the counter of the task's kind, after the task and its store writes."""
    global _counter, _counter_pid
    kind = KINDS.get(getattr(task, "name", ""))
    if kind is None:
        return
    if _counter is None or _counter_pid != os.getpid():
        _counter = redis.Redis.from_url(app.conf.broker_url)
        _counter_pid = os.getpid()
    _counter.incr(f"{COUNTER}:{kind}" if state == "SUCCESS" else f"{COUNTER}:failed")
