"""A deployment-shaped app: a Redis broker and result backend, a PostgreSQL checkpoint store.

Try a deploy by hand (URLs from REDIS_URL, RESULT_BACKEND_URL and STORE_URL, local
defaults otherwise)::

    celery -A examples.deploy worker --loglevel=INFO     # terminal 1
    python -m examples.deploy 3000                       # terminal 2: send, watch progress
    # terminal 1: Ctrl+C (or kill -TERM the worker): the task saves and re-queues at once
    celery -A examples.deploy worker --loglevel=INFO     # the new worker resumes it

The watcher prints the checkpoint each second until the task completes.
``docker-compose.yml`` runs the same app as a whole stack: two workers, a producer and
Flower (see the README).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from celery import Celery

from celery_resumable import ResumableTask, checkpoint_store, iterate, step

app = Celery("examples.deploy")
app.conf.update(
    broker_url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    # Task states (PROGRESS while a run works) for AsyncResult and Flower.
    result_backend=os.environ.get("RESULT_BACKEND_URL", "redis://127.0.0.1:6379/1"),
    resumable_store_url=os.environ.get(
        "STORE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    ),
    resumable_checkpoint_interval=2.0,
    # Keep runs shorter than the Redis visibility timeout (one hour by default).
    resumable_max_runtime=1800,
    worker_prefetch_multiplier=1,
)


@app.task(base=ResumableTask, bind=True)
def reindex(self: Any, documents: int) -> int:
    ids = step("collect", lambda: list(range(documents)))
    for _document in iterate("index", ids):
        time.sleep(0.01)  # the work of indexing one document
    step("swap_alias", lambda: "index-v2")
    return len(ids)


def watch(documents: int) -> None:
    task_id = reindex.delay(documents).id
    store = checkpoint_store(app)
    print(f"sent reindex({documents}) as {task_id}; stop and restart the worker meanwhile")
    while True:
        checkpoint = store.get(task_id)
        if checkpoint is not None:
            print(
                f"{checkpoint.status:11} step={checkpoint.current_step} cursor={checkpoint.cursor} "
                f"interruptions={checkpoint.interruptions}"
            )
            if checkpoint.status == "completed":
                return
        time.sleep(1)


if __name__ == "__main__":
    watch(int(sys.argv[1]) if len(sys.argv) > 1 else 3000)
