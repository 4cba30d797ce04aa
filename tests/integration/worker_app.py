"""The Celery app that the integration tests run in real worker processes.

Configured from environment variables so each test picks its broker, queue and store:
RESUMABLE_TEST_BROKER (the tests' Redis by default), RESUMABLE_TEST_QUEUE,
RESUMABLE_TEST_STORE (SQLAlchemy URL of the checkpoint store), RESUMABLE_TEST_EVENTS (URL
of the database the tasks record what they did into; the store's by default) and
RESUMABLE_TEST_SETTINGS (JSON of extra settings).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import sqlalchemy as sa
from celery import Celery

from celery_resumable import ResumableTask, iterate, set_step_cursor_tx, step, step_cursor
from tests.services import REDIS_URL

app = Celery("resumable_tests")
app.conf.update(
    broker_url=os.environ.get("RESUMABLE_TEST_BROKER") or REDIS_URL,
    result_backend=os.environ.get("RESUMABLE_TEST_BACKEND") or None,
    task_default_queue=os.environ.get("RESUMABLE_TEST_QUEUE", "resumable-tests"),
    resumable_store_url=os.environ.get("RESUMABLE_TEST_STORE", "sqlite:///test.sqlite3"),
    resumable_checkpoint_interval=0.5,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
app.conf.update(json.loads(os.environ.get("RESUMABLE_TEST_SETTINGS", "{}")))

metadata = sa.MetaData()
events = sa.Table(
    "resumable_test_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("task_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("item", sa.Integer, nullable=True),
    sa.Column("retries", sa.Integer, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
)
rows = sa.Table(
    "resumable_test_rows",
    metadata,
    sa.Column("task_id", sa.String(64), primary_key=True),
    sa.Column("item", sa.Integer, primary_key=True, autoincrement=False),
)

_engine: sa.Engine | None = None


def engine() -> sa.Engine:
    """The engine of the events and rows tables (created by the test before the workers)."""
    global _engine
    if _engine is None:
        url = os.environ.get("RESUMABLE_TEST_EVENTS") or app.conf.resumable_store_url
        _engine = sa.create_engine(url)
    return _engine


def record(task: Any, kind: str, item: int | None = None) -> None:
    """Insert one event row, committed at once."""
    with engine().begin() as connection:
        connection.execute(
            events.insert().values(
                task_id=task.request.id,
                kind=kind,
                item=item,
                retries=task.request.retries,
                pid=os.getpid(),
            )
        )


@app.task(base=ResumableTask, bind=True)
def three_steps(self: Any, count: int, delay: float) -> int:
    """A first step, a cursor over ``count`` items taking ``delay`` each, a last step."""
    step("prepare", record, self, "prepare")
    for item in iterate("process", range(count)):
        time.sleep(delay)
        record(self, "item", item)
    step("finish", record, self, "finish")
    return count


@app.task(bind=True)
def collect(self: Any, results: Any, tag: str) -> None:
    """A plain task at the end of a chain or chord: records the results it received."""
    values = results if isinstance(results, list) else [results]
    record(self, f"collect-{tag}", sum(values))


@app.task(base=ResumableTask, bind=True)
def fails_once(self: Any, count: int, fail_at: int) -> int:
    """Fails at item ``fail_at`` on its first attempt and retries through ``self.retry``."""
    step("prepare", record, self, "prepare")
    for item in iterate("process", range(count)):
        if item == fail_at and self.request.retries == 0:
            raise self.retry(exc=RuntimeError(f"failed at {item}"), countdown=0)
        record(self, "item", item)
    step("finish", record, self, "finish")
    return count


@app.task(base=ResumableTask, bind=True)
def transactional(self: Any, count: int, batch: int, delay: float) -> int:
    """Inserts rows in batches, each batch saving its cursor in the same transaction."""

    def load(cursor: int | None) -> int:
        start = cursor or 0
        for first in range(start, count, batch):
            with engine().begin() as connection:
                for item in range(first, min(first + batch, count)):
                    connection.execute(rows.insert().values(task_id=self.request.id, item=item))
                set_step_cursor_tx(connection, min(first + batch, count))
            record(self, "batch", first)
            time.sleep(delay)
        return count

    step_cursor("load", load)
    step("finish", record, self, "finish")
    return count


@app.task(base=ResumableTask, bind=True)
def paginate(self: Any, page: int, last: int) -> int:
    """Fetches one page, then replaces itself with a task for the next page."""
    step("fetch", record, self, "page", page)
    if page < last:
        return self.replace(paginate.si(page + 1, last))  # type: ignore[no-any-return]
    record(self, "finish")
    return page


@app.task(base=ResumableTask, bind=True)
def fails_until_fixed(self: Any, count: int, fail_at: int, fixed_flag: str) -> int:
    """Fails for good at item ``fail_at`` until the file ``fixed_flag`` exists."""
    step("prepare", record, self, "prepare")
    for item in iterate("process", range(count)):
        if item == fail_at and not os.path.exists(fixed_flag):
            raise RuntimeError(f"failed at {item}")
        record(self, "item", item)
    step("finish", record, self, "finish")
    return count


@app.task(base=ResumableTask, bind=True)
def no_steps(self: Any) -> None:
    """A task that uses no step: a duplicate of it is skipped all the same."""
    time.sleep(0.5)
    record(self, "ran")


@app.task(base=ResumableTask, bind=True)
def retries_without_throw(self: Any, count: int, delay: float) -> int:
    """Asks for a retry without raising, then goes on working (``retry(throw=False)``)."""
    record(self, "start")
    if self.request.retries == 0:
        self.retry(countdown=0, throw=False)
    for item in iterate("process", range(count)):
        time.sleep(delay)
        record(self, "item", item)
    record(self, "end")
    return count
