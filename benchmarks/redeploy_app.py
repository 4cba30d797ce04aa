"""The Celery app of the redeploy benchmark: the same loop as a plain and a resumable task."""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

from celery_resumable import ResumableTask, iterate

app = Celery("bench_redeploy")
app.conf.update(
    broker_url=os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/13"),
    task_default_queue=os.environ.get("BENCH_QUEUE", "bench-redeploy"),
    resumable_store_url=os.environ.get("BENCH_STORE", "sqlite:///bench-redeploy.sqlite3"),
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(bind=True, acks_late=True, reject_on_worker_lost=True)
def plain_loop(self: Any, items: int, seconds_per_item: float) -> int:
    """A plain Celery task: a warm shutdown waits for all of it."""
    for _ in range(items):
        time.sleep(seconds_per_item)
    return items


@app.task(base=ResumableTask, bind=True)
def resumable_loop(self: Any, items: int, seconds_per_item: float) -> int:
    """The same loop as a resumable task: it stops at the next item."""
    for _ in iterate("loop", range(items)):
        time.sleep(seconds_per_item)
    return items
