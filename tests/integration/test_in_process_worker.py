"""A worker embedded in the test process (``start_worker``): its stop reaches its tasks,
and once it has shut down the shutdown notice no longer holds in the process."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, signals
from celery.contrib.testing.worker import start_worker

from celery_resumable import CheckpointStore, ResumableTask, checkpoint_store, iterate
from tests.integration.harness import wait_for
from tests.services import REDIS_URL, require

TOTAL = 200

# start_worker finalizes the app, which registers every shared task defined so far in
# the session (the unit tests define several under the same names).
pytestmark = pytest.mark.filterwarnings("ignore::celery.exceptions.DuplicateTaskNameWarning")


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Celery]:
    require("redis")
    celery_app = Celery("in_process_worker", broker=REDIS_URL)
    celery_app.conf.update(
        task_default_queue=f"resumable-in-process-{uuid.uuid4().hex[:12]}",
        resumable_store_url=f"sqlite:///{tmp_path / 'store.sqlite3'}",
        resumable_checkpoint_interval=0.2,
        worker_hijack_root_logger=False,
        worker_prefetch_multiplier=1,
    )
    yield celery_app
    celery_app.close()


@pytest.fixture
def processed() -> list[int]:
    return []


@pytest.fixture
def count(app: Celery, processed: list[int]) -> Any:
    @app.task(base=ResumableTask, bind=True, name="in_process.count", shared=False)
    def count(self: Any, total: int, delay: float) -> int:
        for item in iterate("count", range(total)):
            time.sleep(delay)
            processed.append(item)
        return total

    return count


def embedded_worker(app: Celery, pool: str) -> Any:
    return start_worker(app, pool=pool, perform_ping_check=False, shutdown_timeout=30)


def run_with_request(task: Any, *args: Any) -> Any:
    """Call ``task`` the way a worker does: with a request of its own, not eagerly."""
    task.push_request(
        id=str(uuid.uuid4()), args=args, kwargs={}, called_directly=False, is_eager=False
    )
    try:
        return task(*args)
    finally:
        task.pop_request()


def test_leaving_start_worker_interrupts_the_task_and_a_later_worker_resumes_it(
    app: Celery, count: Any, processed: list[int]
) -> None:
    store: CheckpointStore = checkpoint_store(app)

    # Given an embedded worker running a long resumable task in a thread
    with embedded_worker(app, "threads") as worker:
        task_id = count.delay(TOTAL, 0.02).id
        wait_for(lambda: len(processed) >= 10, 30, "the task to start")

    # When the block ends and the worker stops
    worker.pool.executor.shutdown(wait=True)

    # Then the task saved and went back on its queue
    checkpoint = store.get(task_id)
    assert checkpoint is not None
    assert (checkpoint.status, checkpoint.interruptions) == ("interrupted", 1)
    assert len(processed) < TOTAL
    first_run = list(processed)

    # And with the worker gone, a call with a request runs in full, not re-queued
    processed.clear()
    assert run_with_request(count, 5, 0.0) == 5
    assert processed == [0, 1, 2, 3, 4]

    # And a later worker resumes the interrupted task from its checkpoint
    processed.clear()
    with embedded_worker(app, "threads"):
        wait_for(
            lambda: (found := store.get(task_id)) is not None and found.status == "completed",
            30,
            "the task to finish",
        )
    counts = Counter(first_run + processed)
    assert set(counts) == set(range(TOTAL))
    assert sum(counts.values()) - TOTAL <= 1, "more than one item repeated"


def test_notice_is_withdrawn_when_the_worker_has_shut_down(
    app: Celery, count: Any, processed: list[int]
) -> None:
    store: CheckpointStore = checkpoint_store(app)

    # Given an embedded worker told to stop the way Celery's signal handlers tell it
    with embedded_worker(app, "solo") as worker:
        signals.worker_shutting_down.send(
            sender=worker.hostname, sig="SIGTERM", how="Warm", exitcode=0
        )

    # When, after it has shut down, the task is called with a request
    result = run_with_request(count, 5, 0.0)

    # Then it runs in full instead of going back on a queue
    assert result == 5
    assert processed == [0, 1, 2, 3, 4]

    # And a later worker runs a delivered task in full, uninterrupted
    processed.clear()
    with embedded_worker(app, "solo"):
        task_id = count.delay(5, 0.0).id
        wait_for(
            lambda: (found := store.get(task_id)) is not None and found.status == "completed",
            30,
            "the task to finish",
        )
    checkpoint = store.get(task_id)
    assert checkpoint is not None and checkpoint.interruptions == 0
    assert processed == [0, 1, 2, 3, 4]
