"""Transactional checkpoints at their edges: a transaction around a step, stops, errors."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery

from celery_resumable import (
    ResumableTask,
    checkpoint_store,
    set_step_cursor_tx,
    set_step_tx,
    step,
    step_cursor,
)
from celery_resumable.errors import CheckpointStoreError, TooManyInterruptionsError
from celery_resumable.testing import interrupt_after_step, interrupt_when
from tests.conftest import drop_table
from tests.services import POSTGRES_URL, require
from tests.unit.test_tx import count


@pytest.fixture
def db_app(store_url: str, table_name: str) -> Iterator[Celery]:
    """An app whose checkpoint table lives in the database under test; writes at every boundary."""
    app = Celery("tx-edges", broker="memory://")
    app.conf.update(
        resumable_store_url=store_url,
        resumable_table_name=table_name,
        resumable_checkpoint_interval=0,
    )
    yield app
    drop_table(store_url, table_name)


def spanning_task(app: Celery, engine: sa.Engine, table: sa.Table, ran: list[str]) -> Any:
    """A task whose transaction spans its first step and commits after the step returns."""

    def copy(connection: sa.Connection) -> dict[str, int]:
        ran.append("copy")
        connection.execute(table.insert(), [{"item": i} for i in range(3)])
        set_step_tx(connection, {"rows": 3})
        return {"rows": -1}

    @app.task(base=ResumableTask, bind=True)
    def load(self: Any) -> Any:
        with engine.begin() as connection:
            copied = step("copy", copy, connection)
        step("report", ran.append, "report")
        return copied

    return load


def test_a_transaction_spanning_a_step_works_in_the_first_run_and_on_resume(
    db_app: Celery, rows: tuple[sa.Engine, sa.Table]
) -> None:
    engine, table = rows
    ran: list[str] = []
    load = spanning_task(db_app, engine, table, ran)

    # Given a run stopped at the next step, after the transactional step committed
    with interrupt_when(lambda run, boundary: run.active == "report"):
        first = load.apply()
    assert first.state == "IGNORED"

    # When it resumes
    second = load.apply(task_id=first.id)

    # Then the step is skipped with the result given to set_step_tx
    assert second.state == "SUCCESS"
    assert second.result == {"rows": 3}
    assert ran == ["copy", "report"]
    assert count(engine, table) == 3


def test_a_stop_inside_a_spanning_transaction_rolls_the_step_back(
    db_app: Celery, rows: tuple[sa.Engine, sa.Table]
) -> None:
    engine, table = rows
    ran: list[str] = []
    load = spanning_task(db_app, engine, table, ran)

    # Given a stop right after the step returned, before its transaction committed
    with interrupt_after_step("copy"):
        first = load.apply()

    # Then the step's rows and its finish rolled back together
    assert first.state == "IGNORED"
    assert count(engine, table) == 0
    checkpoint = checkpoint_store(db_app).get(first.id)
    assert checkpoint is not None
    assert (checkpoint.status, checkpoint.finished_steps) == ("interrupted", ())
    assert checkpoint.interruptions == 1

    # And the next run does the step again
    assert load.apply(task_id=first.id).state == "SUCCESS"
    assert ran == ["copy", "copy", "report"]
    assert count(engine, table) == 3


def test_max_interruptions_holds_for_a_transactional_loop(
    db_app: Celery, rows: tuple[sa.Engine, sa.Table]
) -> None:
    engine, table = rows

    @db_app.task(base=ResumableTask, bind=True, resumable_max_interruptions=2)
    def load(self: Any) -> None:
        def batches(cursor: int | None) -> None:
            for first in range(cursor or 0, 50, 10):
                with engine.begin() as connection:
                    connection.execute(
                        table.insert(), [{"item": i} for i in range(first, first + 10)]
                    )
                    set_step_cursor_tx(connection, first + 10)

        step_cursor("batches", batches)

    # Given every run stopped at a transactional write after the first committed batch
    results = []
    task_id = None
    for _ in range(3):
        with interrupt_when(lambda run, boundary: (run.in_progress or ("", None))[1] is not None):
            result = load.apply(task_id=task_id)
        task_id = result.id
        results.append(result)

    # Then the third stop is one too many, and the row says so
    assert [r.state for r in results] == ["IGNORED", "IGNORED", "FAILURE"]
    assert isinstance(results[2].result, TooManyInterruptionsError)
    checkpoint = checkpoint_store(db_app).get(task_id or "")
    assert checkpoint is not None
    assert (checkpoint.status, checkpoint.interruptions) == ("failed", 3)
    assert checkpoint.cursor == 10


@pytest.mark.postgres
def test_the_callers_database_error_stays_reachable(tmp_path: Any) -> None:
    require("postgres")
    table_name = f"ckpt_{uuid.uuid4().hex[:12]}"
    app = Celery("tx-errors", broker="memory://")
    app.conf.update(resumable_store_url=POSTGRES_URL, resumable_table_name=table_name)
    engine = sa.create_engine(POSTGRES_URL)
    raised: list[CheckpointStoreError] = []

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        def work(cursor: Any) -> None:
            with engine.connect() as connection, connection.begin():
                # Given the caller's own transaction failed on the database
                with pytest.raises(sa.exc.DBAPIError):
                    connection.execute(sa.text("SELECT 1 / 0"))
                # When a checkpoint is written through it
                try:
                    set_step_cursor_tx(connection, 1)
                except CheckpointStoreError as exc:
                    raised.append(exc)
                    raise

        step_cursor("work", work)

    try:
        job.apply()
    finally:
        engine.dispose()
        drop_table(POSTGRES_URL, table_name)

    # Then the database's own error is the cause, for the caller's retry logic
    assert len(raised) == 1
    cause = raised[0].__cause__
    assert isinstance(cause, sa.exc.DBAPIError)
    assert type(cause.orig).__name__ == "InFailedSqlTransaction"
