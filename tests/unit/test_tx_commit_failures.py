"""A transactional checkpoint whose COMMIT fails (a serialization failure detected at
commit) leaves the run where the database is: the batch is done again, never skipped."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery
from sqlalchemy.exc import OperationalError

from celery_resumable import CheckpointStore, ResumableTask, set_step_cursor_tx, step_cursor
from celery_resumable.testing import interrupt_when
from tests.conftest import drop_table
from tests.services import POSTGRES_URL, require

BATCHES = 5
FAILING = 2  # the batch whose first commit fails

pytestmark = pytest.mark.postgres


@pytest.fixture
def database() -> Iterator[tuple[sa.Engine, str, str, str]]:
    require("postgres")
    suffix = uuid.uuid4().hex[:10]
    done, side, table = f"done_{suffix}", f"side_{suffix}", f"ckpt_{suffix}"
    engine = sa.create_engine(POSTGRES_URL, isolation_level="SERIALIZABLE")
    with engine.begin() as connection:
        connection.execute(sa.text(f"CREATE TABLE {done} (batch int PRIMARY KEY)"))
        connection.execute(sa.text(f"CREATE TABLE {side} (x int)"))
    yield engine, done, side, table
    engine.dispose()
    for name in (done, side, table):
        drop_table(POSTGRES_URL, name)


@pytest.fixture
def app(database: tuple[sa.Engine, str, str, str]) -> Iterator[Celery]:
    celery_app = Celery(f"commits_{uuid.uuid4().hex[:8]}", set_as_current=False)
    celery_app.conf.update(
        resumable_store_url=POSTGRES_URL,
        resumable_table_name=database[3],
        resumable_checkpoint_interval=None,
    )
    yield celery_app
    celery_app.close()


def conflict(engine: sa.Engine, done: str, side: str) -> None:
    """Commit a transaction that makes the open one's COMMIT fail with 40001."""
    with engine.begin() as other:
        other.execute(sa.text(f"SELECT count(*) FROM {done}")).all()
        other.execute(sa.text(f"INSERT INTO {side} VALUES (1)"))


def make_job(
    app: Celery, database: tuple[sa.Engine, str, str, str], retry: bool, failed: list[int]
) -> Any:
    engine, done, side, _ = database

    @app.task(base=ResumableTask, bind=True, shared=False)
    def job(self: Any) -> int:
        def load(cursor: int | None) -> int:
            batch = cursor or 0
            while batch < BATCHES:
                try:
                    with engine.begin() as connection:
                        connection.execute(sa.text(f"SELECT count(*) FROM {side}")).all()
                        connection.execute(sa.text(f"INSERT INTO {done} VALUES ({batch})"))
                        set_step_cursor_tx(connection, batch + 1)
                        if batch == FAILING and not failed:
                            failed.append(batch)
                            conflict(engine, done, side)
                except OperationalError as error:
                    if not retry or getattr(error.orig, "sqlstate", None) != "40001":
                        raise
                    continue  # the batch again, as the database asks
                batch += 1
            return batch

        return step_cursor("load", load)

    return job


def batches_done(database: tuple[sa.Engine, str, str, str]) -> list[int]:
    engine, done, _, _ = database
    with engine.connect() as connection:
        return sorted(connection.execute(sa.text(f"SELECT batch FROM {done}")).scalars())


def test_a_retry_after_a_failed_commit_that_is_interrupted_saves_the_committed_cursor(
    app: Celery, database: tuple[sa.Engine, str, str, str]
) -> None:
    failed: list[int] = []
    job = make_job(app, database, True, failed)

    # Given a batch whose COMMIT fails, retried by the task, the retry meeting a shutdown
    def retrying(run: Any, boundary: str) -> bool:
        return boundary == "cursor" and bool(failed)

    with interrupt_when(retrying):
        first = job.apply()
    assert first.state == "IGNORED"
    checkpoint = CheckpointStore(POSTGRES_URL, database[3]).get(first.id)
    assert checkpoint is not None

    # Then the saved cursor is the last one committed, and the run resumed from it does
    # every batch once
    assert checkpoint.cursor == FAILING
    assert job.apply(task_id=first.id).state == "SUCCESS"
    assert batches_done(database) == list(range(BATCHES))


def test_a_task_that_fails_at_a_failed_commit_saves_the_committed_cursor(
    app: Celery, database: tuple[sa.Engine, str, str, str]
) -> None:
    job = make_job(app, database, False, [])

    # Given a batch whose COMMIT fails, and a task that lets the error end it
    result = job.apply()

    # Then the failed write keeps the cursor of the last batch committed
    assert result.state == "FAILURE"
    checkpoint = CheckpointStore(POSTGRES_URL, database[3]).get(result.id)
    assert checkpoint is not None and checkpoint.status == "failed"
    assert checkpoint.cursor == FAILING
    assert batches_done(database) == list(range(FAILING))
