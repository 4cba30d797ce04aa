"""set_step_tx and set_step_cursor_tx commit and roll back with the caller's writes.

Every behaviour here holds through each adapter: the ``tx`` fixture runs a test with a
SQLAlchemy ``Connection`` and with Django's connection inside ``transaction.atomic()``,
on each database. What one adapter alone has is tested apart: a ``Session`` and a wrong
argument at the end of this file, Django's atomic blocks in
tests/unit/django_app/test_django_tx.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

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
    CursorEncodeError,
    NotInResumableTaskError,
    NotInStepError,
)
from celery_resumable.testing import interrupt_at_cursor
from tests.conftest import drop_table


class RollbackError(Exception):
    """Raised by a test to roll its transaction back."""


class TxSide(Protocol):
    """One adapter's side of a test: an app, the caller's transactions and rows."""

    app: Celery
    """An app whose checkpoint table lives in the database of the transactions."""

    def transaction(self) -> contextlib.AbstractContextManager[Any]:
        """Open a transaction; yields what the ``_tx`` functions write through."""
        ...

    def insert(self, conn: Any, numbers: Iterable[int]) -> None:
        """Insert a row per number in the open transaction of ``conn``."""
        ...

    def count(self) -> int:
        """How many rows are stored."""
        ...

    def fail(self, conn: Any) -> None:
        """Make the open transaction fail on the database, as a statement that raised."""
        ...

    def driver_error(self, cause: BaseException | None) -> BaseException | None:
        """The driver's error under the cause of a failed write."""
        ...


class SQLAlchemyTx:
    """Transactional writes through a SQLAlchemy ``Connection`` of ``engine.begin()``."""

    def __init__(self, app: Celery, engine: sa.Engine, table: sa.Table) -> None:
        self.app = app
        self.engine = engine
        self.table = table

    def transaction(self) -> contextlib.AbstractContextManager[sa.Connection]:
        """``engine.begin()``."""
        return self.engine.begin()

    def insert(self, conn: sa.Connection, numbers: Iterable[int]) -> None:
        """Insert a row per number through ``conn``."""
        conn.execute(self.table.insert(), [{"item": n} for n in numbers])

    def count(self) -> int:
        """How many rows the table has."""
        with self.engine.connect() as connection:
            query = sa.select(sa.func.count()).select_from(self.table)
            return int(connection.execute(query).scalar_one())

    def fail(self, conn: sa.Connection) -> None:
        """Run a statement that fails, in ``conn``'s transaction."""
        with pytest.raises(sa.exc.DBAPIError):
            conn.execute(sa.text("SELECT 1 / 0"))

    def driver_error(self, cause: BaseException | None) -> BaseException | None:
        """The driver's error SQLAlchemy's error wraps."""
        assert isinstance(cause, sa.exc.DBAPIError)
        return cause.orig


@pytest.fixture(name="tx", params=["sqlalchemy", "django"])
def tx_side(request: pytest.FixtureRequest, store_url: str, table_name: str) -> Iterator[TxSide]:
    """``tx``: each adapter's side, on each database; its checkpoints in the same database."""
    side: contextlib.AbstractContextManager[TxSide]
    if request.param == "django":
        pytest.importorskip("django")
        from tests.unit.django_app.shared import django_tx

        with django_tx(store_url, table_name) as side:
            yield side
    else:
        yield request.getfixturevalue("sqlalchemy_side")


@pytest.fixture
def sqlalchemy_side(
    store_url: str, table_name: str, rows: tuple[sa.Engine, sa.Table]
) -> Iterator[SQLAlchemyTx]:
    """Writes through SQLAlchemy on each database, its checkpoints there."""
    app = Celery("tx", broker="memory://")
    app.conf.update(
        resumable_store_url=store_url,
        resumable_table_name=table_name,
        resumable_checkpoint_interval=None,
    )
    yield SQLAlchemyTx(app, *rows)
    drop_table(store_url, table_name)


def test_committed_cursor_is_stored_with_the_rows_and_resumed(tx: TxSide) -> None:
    store = checkpoint_store(tx.app)
    seen: list[Any] = []

    @tx.app.task(base=ResumableTask, bind=True)
    def load(self: Any) -> None:
        def batches(cursor: int | None) -> None:
            seen.append(cursor)
            start = cursor or 0
            with tx.transaction() as conn:
                tx.insert(conn, range(start, start + 5))
                set_step_cursor_tx(conn, start + 5)
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
    assert tx.count() == 5

    # When the task runs again
    second = load.apply(task_id=first.id)

    # Then it resumes exactly after the committed batch
    assert second.state == "SUCCESS"
    assert seen == [None, 5, 5, 10]
    assert tx.count() == 10


def test_rolled_back_cursor_is_neither_stored_nor_kept_in_memory(tx: TxSide) -> None:
    store = checkpoint_store(tx.app)

    @tx.app.task(base=ResumableTask, bind=True)
    def load(self: Any) -> None:
        def batches(cursor: int | None) -> None:
            try:
                with tx.transaction() as conn:
                    tx.insert(conn, [1])
                    set_step_cursor_tx(conn, 99)
                    raise RollbackError()
            except RollbackError:
                pass
            raise RuntimeError("fail so that the in-memory state is written")

        step_cursor("batches", batches)

    result = load.apply()

    assert result.state == "FAILURE"
    assert tx.count() == 0
    checkpoint = store.get(result.id)
    assert checkpoint is not None
    assert (checkpoint.current_step, checkpoint.cursor) == ("batches", None)


def test_step_finished_in_the_transaction_returns_its_result_when_skipped(tx: TxSide) -> None:
    store = checkpoint_store(tx.app)
    runs: list[str] = []
    attempts: list[int] = []

    @tx.app.task(base=ResumableTask, bind=True)
    def load(self: Any) -> Any:
        attempts.append(1)

        def copy() -> dict[str, int]:
            runs.append("copy")
            with tx.transaction() as conn:
                tx.insert(conn, range(3))
                set_step_tx(conn, result={"rows": 3})
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
    assert tx.count() == 3


def test_a_cursor_the_step_could_not_read_back_is_refused_before_it_is_written(
    tx: TxSide,
) -> None:
    store = checkpoint_store(tx.app)

    @tx.app.task(base=ResumableTask, bind=True)
    def load(self: Any) -> None:
        def batches(cursor: int | None) -> None:
            with tx.transaction() as conn:
                tx.insert(conn, range(3))
                # Given a cursor of another type than the step function reads
                set_step_cursor_tx(conn, "3")

        step_cursor("batches", batches)

    # When the task runs
    result = load.apply()

    # Then the write is refused at once, naming the type, and the batch rolled back
    assert result.state == "FAILURE"
    assert isinstance(result.result, CursorEncodeError)
    assert "cannot store the cursor of step 'batches': a value of type str" in str(result.result)
    assert tx.count() == 0
    checkpoint = store.get(result.id)
    assert checkpoint is not None
    assert (checkpoint.current_step, checkpoint.cursor) == ("batches", None)


@dataclasses.dataclass(frozen=True)
class Position:
    """A typed cursor."""

    last: int


def test_a_typed_cursor_comes_back_as_its_type(tx: TxSide) -> None:
    seen: list[Any] = []

    @tx.app.task(base=ResumableTask, bind=True)
    def load(self: Any) -> None:
        def batches(cursor: Position | None) -> None:
            seen.append(cursor)
            with tx.transaction() as conn:
                start = cursor.last if cursor else 0
                tx.insert(conn, range(start, start + 2))
                set_step_cursor_tx(conn, Position(start + 2))
            if cursor is None:
                raise RuntimeError("crash after the commit")

        step_cursor("batches", batches)

    first = load.apply()
    assert load.apply(task_id=first.id).state == "SUCCESS"

    assert seen == [None, Position(2)]
    assert tx.count() == 4


def test_tx_functions_outside_a_step_or_a_task(tx: TxSide) -> None:
    raised: list[BaseException] = []

    @tx.app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        with tx.transaction() as conn:
            try:
                set_step_tx(conn)
            except NotInStepError as exc:
                raised.append(exc)

    job.apply()
    assert [str(e) for e in raised] == [
        "set_step_tx() was called outside a step; call it from the function run by "
        "step_cursor() or step()"
    ]
    with (
        tx.transaction() as conn,
        pytest.raises(NotInResumableTaskError, match=r"set_step_cursor_tx\(\) was called outside"),
    ):
        set_step_cursor_tx(conn, 1)


def test_a_connection_to_another_database_is_a_clear_error(
    tx: TxSide, table_name: str, tmp_path: Path
) -> None:
    # Given checkpoints stored elsewhere than the database of the transaction
    app = Celery("tx-elsewhere", broker="memory://")
    app.conf.update(
        resumable_store_url=f"sqlite:///{tmp_path / 'elsewhere.sqlite3'}",
        resumable_table_name=table_name,
    )
    raised: list[BaseException] = []

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        def work(cursor: Any) -> None:
            with tx.transaction() as conn:
                try:
                    set_step_cursor_tx(conn, 1)
                except CheckpointStoreError as exc:
                    raised.append(exc)

        step_cursor("work", work)

    # When a transactional write goes through it
    result = job.apply()

    # Then it says the table must be in the same database
    assert result.state == "SUCCESS"
    assert len(raised) == 1
    assert str(raised[0]).startswith(f"task {result.id}: the database of the given connection")
    assert "same database" in str(raised[0])


def test_a_stop_at_a_tx_write_rolls_the_batch_back_and_the_next_run_redoes_it(
    tx: TxSide,
) -> None:
    starts: list[int] = []

    @tx.app.task(base=ResumableTask, bind=True)
    def load(self: Any) -> None:
        def batches(cursor: int | None) -> None:
            for first in range(cursor or 0, 30, 10):
                starts.append(first)
                with tx.transaction() as conn:
                    tx.insert(conn, range(first, first + 10))
                    set_step_cursor_tx(conn, first + 10)

        step_cursor("batches", batches)

    # Given a run stopped at its second transactional cursor write
    with interrupt_at_cursor("batches", 2):
        first = load.apply()
    assert first.state == "IGNORED"
    assert tx.count() == 10

    # When it resumes
    assert load.apply(task_id=first.id).state == "SUCCESS"

    # Then the rolled-back batch was redone and every row exists once
    assert starts == [0, 10, 10, 20]
    assert tx.count() == 30


# -- SQLAlchemy alone ----------------------------------------------------------------------


def test_a_session_writes_through_its_connection(sqlalchemy_side: SQLAlchemyTx) -> None:
    tx = sqlalchemy_side
    store = checkpoint_store(tx.app)
    stored: list[Any] = []

    @tx.app.task(base=ResumableTask, bind=True)
    def load(self: Any) -> None:
        def batches(cursor: int | None) -> None:
            # Given a Session's transaction that commits, then one that rolls back
            with Session(tx.engine) as session, session.begin():
                session.execute(tx.table.insert(), [{"item": 1}])
                set_step_cursor_tx(session, 1)
            with contextlib.suppress(RollbackError), Session(tx.engine) as session, session.begin():
                set_step_cursor_tx(session, 2)
                raise RollbackError()
            checkpoint = store.get(self.request.id)
            assert checkpoint is not None
            stored.append(checkpoint.cursor)

        step_cursor("batches", batches)

    assert load.apply().state == "SUCCESS"

    # Then the committed write is stored, the rolled-back one is not
    assert stored == [1]
    assert tx.count() == 1


def test_something_else_than_a_connection_is_a_type_error(tmp_path: Path) -> None:
    app = Celery("tx-type", broker="memory://")
    app.conf.resumable_store_url = f"sqlite:///{tmp_path / 'checkpoints.sqlite3'}"

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        step("work", lambda: set_step_tx("not a connection"))  # type: ignore[arg-type]

    result = job.apply()
    assert isinstance(result.result, TypeError)
    assert "expected a SQLAlchemy Connection or Session, not str" in str(result.result)
