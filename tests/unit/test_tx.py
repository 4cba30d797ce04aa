"""set_step_tx and set_step_cursor_tx commit and roll back with the caller's writes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery
from sqlalchemy.orm import Session

from celery_resumable import (
    ResumableTask,
    checkpoint_store,
    set_step_cursor_tx,
    set_step_tx,
    step,
    step_cursor,
)
from celery_resumable.errors import (
    CheckpointStoreError,
    NotInResumableTaskError,
    NotInStepError,
)
from celery_resumable.testing import interrupt_at_cursor
from tests.conftest import drop_table


class RollbackError(Exception):
    """Raised by a test to roll its transaction back."""


@pytest.fixture
def db_app(store_url: str, table_name: str) -> Iterator[Celery]:
    """An app whose checkpoint table lives in the database under test."""
    app = Celery("tx", broker="memory://")
    app.conf.update(
        resumable_store_url=store_url,
        resumable_table_name=table_name,
        resumable_checkpoint_interval=None,
    )
    yield app
    drop_table(store_url, table_name)


def count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_committed_cursor_is_stored_with_the_rows_and_resumed(
    db_app: Celery, rows: tuple[sa.Engine, sa.Table]
) -> None:
    engine, table = rows
    store = checkpoint_store(db_app)
    seen: list[Any] = []

    @db_app.task(base=ResumableTask, bind=True)
    def load(self: Any) -> None:
        def batches(cursor: int | None) -> None:
            seen.append(cursor)
            start = cursor or 0
            with engine.begin() as connection:
                connection.execute(table.insert(), [{"item": i} for i in range(start, start + 5)])
                set_step_cursor_tx(connection, start + 5)
            checkpoint = store.get(self.request.id)
            assert checkpoint is not None
            seen.append(checkpoint.cursor)
            if start == 0:
                raise RuntimeError("crash after the commit")

        step_cursor("batches", batches)

    # Given a run that committed a batch with its cursor, then crashed
    first = load.apply()
    assert first.state == "FAILURE"
    assert seen == [None, 5]
    assert count(engine, table) == 5

    # When the task runs again
    second = load.apply(task_id=first.id)

    # Then it resumes exactly after the committed batch
    assert second.state == "SUCCESS"
    assert seen == [None, 5, 5, 10]
    assert count(engine, table) == 10


def test_rolled_back_cursor_is_neither_stored_nor_kept_in_memory(
    db_app: Celery, rows: tuple[sa.Engine, sa.Table]
) -> None:
    engine, table = rows
    store = checkpoint_store(db_app)

    @db_app.task(base=ResumableTask, bind=True)
    def load(self: Any) -> None:
        def batches(cursor: int | None) -> None:
            try:
                with engine.begin() as connection:
                    connection.execute(table.insert(), [{"item": 1}])
                    set_step_cursor_tx(connection, 99)
                    raise RollbackError()
            except RollbackError:
                pass
            raise RuntimeError("fail so that the in-memory state is written")

        step_cursor("batches", batches)

    result = load.apply()

    assert result.state == "FAILURE"
    assert count(engine, table) == 0
    checkpoint = store.get(result.id)
    assert checkpoint is not None
    assert (checkpoint.current_step, checkpoint.cursor) == ("batches", None)


def test_step_finished_in_the_transaction_returns_its_result_when_skipped(
    db_app: Celery, rows: tuple[sa.Engine, sa.Table]
) -> None:
    engine, table = rows
    store = checkpoint_store(db_app)
    runs: list[str] = []
    attempts: list[int] = []

    @db_app.task(base=ResumableTask, bind=True)
    def load(self: Any) -> Any:
        attempts.append(1)

        def copy() -> dict[str, int]:
            runs.append("copy")
            with Session(engine) as session, session.begin():
                session.execute(table.insert(), [{"item": i} for i in range(3)])
                set_step_tx(session, result={"rows": 3})
            checkpoint = store.get(self.request.id)
            assert checkpoint is not None
            assert [(s.name, s.result) for s in checkpoint.finished_steps] == [
                ("copy", {"rows": 3})
            ]
            return {"rows": -1}

        copied = step("copy", copy)
        if len(attempts) == 1:
            raise RuntimeError("crash after the step")
        return copied

    first = load.apply()
    second = load.apply(task_id=first.id)

    assert runs == ["copy"]
    assert second.result == {"rows": 3}
    assert count(engine, table) == 3


def test_tx_functions_outside_a_step_or_a_task(
    db_app: Celery, rows: tuple[sa.Engine, sa.Table]
) -> None:
    engine, _ = rows
    raised: list[BaseException] = []

    @db_app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        with engine.begin() as connection:
            try:
                set_step_tx(connection)
            except NotInStepError as exc:
                raised.append(exc)

    job.apply()
    assert [str(e) for e in raised] == [
        "set_step_tx() was called outside a step; call it from the function run by "
        "step_cursor() or step()"
    ]
    with (
        engine.begin() as connection,
        pytest.raises(NotInResumableTaskError, match=r"set_step_cursor_tx\(\) was called outside"),
    ):
        set_step_cursor_tx(connection, 1)


def test_a_connection_to_another_database_is_a_clear_error(tmp_path: Path) -> None:
    app = Celery("tx-other", broker="memory://")
    app.conf.resumable_store_url = f"sqlite:///{tmp_path / 'checkpoints.sqlite3'}"
    other = sa.create_engine(f"sqlite:///{tmp_path / 'data.sqlite3'}")
    raised: list[BaseException] = []

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        def work(cursor: Any) -> None:
            with other.begin() as connection:
                try:
                    set_step_cursor_tx(connection, 1)
                except CheckpointStoreError as exc:
                    raised.append(exc)

        step_cursor("work", work)

    result = job.apply()
    assert result.state == "SUCCESS"
    assert len(raised) == 1
    assert str(raised[0]).startswith(f"task {result.id}: the database of the given connection")
    assert "same database" in str(raised[0])


def test_something_else_than_a_connection_is_a_type_error(db_app: Celery) -> None:
    @db_app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        step("work", lambda: set_step_tx("not a connection"))  # type: ignore[arg-type]

    result = job.apply()
    assert isinstance(result.result, TypeError)
    assert "expected a SQLAlchemy Connection or Session, not str" in str(result.result)


def test_a_stop_at_a_tx_write_rolls_the_batch_back_and_the_next_run_redoes_it(
    db_app: Celery, rows: tuple[sa.Engine, sa.Table]
) -> None:
    engine, table = rows
    starts: list[int] = []

    @db_app.task(base=ResumableTask, bind=True)
    def load(self: Any) -> None:
        def batches(cursor: int | None) -> None:
            for first in range(cursor or 0, 30, 10):
                starts.append(first)
                with engine.begin() as connection:
                    connection.execute(
                        table.insert(), [{"item": i} for i in range(first, first + 10)]
                    )
                    set_step_cursor_tx(connection, first + 10)

        step_cursor("batches", batches)

    # Given a run stopped at its second transactional cursor write
    with interrupt_at_cursor("batches", 2):
        first = load.apply()
    assert first.state == "IGNORED"
    assert count(engine, table) == 10

    # When it resumes
    assert load.apply(task_id=first.id).state == "SUCCESS"

    # Then the rolled-back batch was redone and every row exists once
    assert starts == [0, 10, 10, 20]
    assert count(engine, table) == 30
