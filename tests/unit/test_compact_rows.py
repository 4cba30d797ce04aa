"""A completed row keeps only what skipping a late duplicate needs; the request is
recorded only by a run that ends unfinished (failed, interrupted), for ``retry``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery

from celery_resumable import CheckpointStore, ResumableTask, checkpoint_store, set_cursor, step
from celery_resumable.config import forget_config
from celery_resumable.testing import interrupt_at_cursor
from tests.conftest import drop_table


@pytest.fixture
def app(store_url: str, table_name: str) -> Iterator[Celery]:
    """An app whose checkpoints go to a table of this test, on each database."""
    celery_app = Celery("compact", broker="memory://", backend="cache+memory://")
    celery_app.conf.update(
        resumable_store_url=store_url,
        resumable_table_name=table_name,
        task_store_eager_result=False,
    )
    yield celery_app
    forget_config(celery_app)
    drop_table(store_url, table_name)


def _job(app: Celery) -> Any:
    @app.task(base=ResumableTask, bind=True, name="compact.job")
    def job(self: Any, items: int, fail: bool = False) -> int:
        def loop(cursor: int | None) -> int:
            for item in range(0 if cursor is None else cursor + 1, items):
                set_cursor(item)
            if fail:
                raise RuntimeError("broken")
            return items

        total = step("load", lambda: list(range(items)))
        return step("loop", lambda: loop(None)) + len(total)

    return job


def test_a_completed_row_keeps_no_progress_and_no_request(app: Celery) -> None:
    job = _job(app)
    store: CheckpointStore = checkpoint_store(app)

    # Given a run interrupted mid-loop, which recorded its progress and its request
    with interrupt_at_cursor("loop", 3):
        first = job.apply(args=(6,))
    interrupted = store.get(first.id)
    assert interrupted is not None and interrupted.status == "interrupted"
    assert interrupted.cursor == 2 and interrupted.request is not None
    assert json.loads(interrupted.request)["args"] == [6]

    # When the task runs again and completes
    second = job.apply(args=(6,), task_id=first.id)
    assert second.result == 12

    # Then its row keeps the id, name, status and times, and nothing of the run
    done = store.get(first.id)
    assert done is not None and done.status == "completed"
    assert done.task_name == "compact.job"
    assert done.finished_steps == ()
    assert done.current_step is None and done.cursor is None
    assert done.request is None and done.done is None and done.total is None
    assert done.owner is None
    assert done.updated_at >= interrupted.updated_at
    # The owner token is gone from the row itself, not only from the record read back
    with store.engine.connect() as connection:
        owner = sa.text(f"SELECT owner FROM {store.table_name} WHERE task_id = :t")
        assert connection.execute(owner, {"t": first.id}).scalar_one() is None


def test_a_run_that_lost_its_lease_does_not_count_another_runs_completion(
    app: Celery,
) -> None:
    store = checkpoint_store(app)
    # Given a run whose lease ran out, and another run that took the task and completed it
    assert store.claim("task-1", "compact.job", "owner-1", 0).claimed
    time.sleep(0.01)  # past the lease's end, on a clock of milliseconds (SQLite)
    assert store.claim("task-1", "compact.job", "owner-2", 60).claimed
    assert store.complete("task-1", "owner-2", 0)

    # When the first run writes its completion, it is told it lost its lease
    assert not store.complete("task-1", "owner-1", 0)
    row = store.get("task-1")
    assert row is not None and row.status == "completed"


def test_a_late_duplicate_of_a_completed_task_is_still_skipped(app: Celery) -> None:
    job = _job(app)
    first = job.apply(args=(3,))
    assert first.result == 6
    # A delivery (not an eager call, which starts over) of the same id is skipped: the
    # compact row is enough to know the task completed.
    claim = checkpoint_store(app).claim(first.id, "compact.job", "late-duplicate", 60)
    assert not claim.claimed
    assert claim.checkpoint.status == "completed"


def test_a_run_records_its_request_only_when_it_ends_unfinished(app: Celery) -> None:
    job = _job(app)
    store = checkpoint_store(app)
    seen: list[str | None] = []

    @app.task(base=ResumableTask, bind=True, name="compact.peek")
    def peek(self: Any) -> None:
        row = store.get(self.request.id)
        seen.append(None if row is None else row.request)

    # A running task's row holds no request (its claim does not send it)
    peek.apply(args=())
    assert seen == [None]

    # A failed run records it, for `celery resumable retry`
    failed = job.apply(args=(4, True))
    assert failed.state == "FAILURE"
    row = store.get(failed.id)
    assert row is not None and row.status == "failed"
    assert row.request is not None
    assert json.loads(row.request)["args"] == [4, True]
