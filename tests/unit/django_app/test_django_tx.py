"""set_step_tx and set_step_cursor_tx through Django's connection, inside transaction.atomic()."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from django.db import DatabaseError, connection, connections, transaction

from celery_resumable import (
    ResumableTask,
    checkpoint_store,
    set_cursor,
    set_step_cursor_tx,
    set_step_tx,
    step,
    step_cursor,
)
from celery_resumable.errors import CheckpointStoreError
from celery_resumable.testing import interrupt_after_step, interrupt_at_cursor, interrupt_when
from tests.services import require
from tests.unit.django_app.models import Item

pytestmark = pytest.mark.usefixtures("tables")


class RollbackError(Exception):
    """Raised by a test to roll its atomic block back."""


def add_items(alias: str, numbers: range) -> None:
    Item.objects.using(alias).bulk_create([Item(number=n) for n in numbers])


def count(alias: str) -> int:
    return int(Item.objects.using(alias).count())


def test_committed_cursor_is_stored_with_the_rows_and_resumed(
    django_app: Celery, alias: str
) -> None:
    store = checkpoint_store(django_app)
    seen: list[Any] = []

    @django_app.task(base=ResumableTask, bind=True)
    def load(self: Any) -> None:
        def batches(cursor: int | None) -> None:
            seen.append(cursor)
            start = cursor or 0
            with transaction.atomic(using=alias):
                add_items(alias, range(start, start + 5))
                set_step_cursor_tx(connections[alias], start + 5)
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
    assert count(alias) == 5

    # When the task runs again
    second = load.apply(task_id=first.id)

    # Then it resumes exactly after the committed batch
    assert second.state == "SUCCESS"
    assert seen == [None, 5, 5, 10]
    assert count(alias) == 10


def test_rolled_back_cursor_is_neither_stored_nor_kept_in_memory(
    django_app: Celery, alias: str
) -> None:
    store = checkpoint_store(django_app)

    @django_app.task(base=ResumableTask, bind=True)
    def load(self: Any) -> None:
        def batches(cursor: int | None) -> None:
            try:
                with transaction.atomic(using=alias):
                    add_items(alias, range(1))
                    set_step_cursor_tx(connections[alias], 99)
                    raise RollbackError()
            except RollbackError:
                pass
            raise RuntimeError("fail so that the in-memory state is written")

        step_cursor("batches", batches)

    result = load.apply()

    assert result.state == "FAILURE"
    assert count(alias) == 0
    checkpoint = store.get(result.id)
    assert checkpoint is not None
    assert (checkpoint.current_step, checkpoint.cursor) == ("batches", None)


def test_step_finished_in_the_transaction_returns_its_result_when_skipped(
    django_app: Celery, alias: str
) -> None:
    runs: list[str] = []
    attempts: list[int] = []

    @django_app.task(base=ResumableTask, bind=True)
    def load(self: Any) -> Any:
        attempts.append(1)

        def copy() -> dict[str, int]:
            runs.append("copy")
            with transaction.atomic(using=alias):
                add_items(alias, range(3))
                set_step_tx(connections[alias], result={"rows": 3})
            return {"rows": -1}

        copied = step("copy", copy)
        if len(attempts) == 1:
            raise RuntimeError("crash after the step")
        return copied

    first = load.apply()
    second = load.apply(task_id=first.id)

    assert runs == ["copy"]
    assert second.result == {"rows": 3}
    assert count(alias) == 3


@pytest.mark.parametrize("alias", ["default"])
def test_django_db_connection_works_for_the_default_database(
    django_app: Celery, alias: str
) -> None:
    store = checkpoint_store(django_app)

    @django_app.task(base=ResumableTask, bind=True)
    def load(self: Any) -> Any:
        def batches(cursor: int | None) -> None:
            with transaction.atomic():
                add_items(alias, range(2))
                set_step_cursor_tx(connection, 2)  # django.db.connection, a proxy
            checkpoint = store.get(self.request.id)
            assert checkpoint is not None and checkpoint.cursor == 2

        step_cursor("batches", batches)

    assert load.apply().state == "SUCCESS"


def test_outside_an_atomic_block_is_a_clear_error(django_app: Celery, alias: str) -> None:
    @django_app.task(base=ResumableTask, bind=True)
    def load(self: Any) -> None:
        step("work", lambda: set_step_tx(connections[alias]))

    result = load.apply()

    assert isinstance(result.result, transaction.TransactionManagementError)
    assert str(result.result) == (
        "set_step_tx() needs a transaction: call it inside "
        f"`with transaction.atomic(using={alias!r}):` so that the checkpoint commits with "
        "your writes"
    )


def test_a_savepoint_rolled_back_alone_undoes_its_write_and_the_run_goes_on(
    django_app: Celery, alias: str
) -> None:
    django_app.conf.resumable_checkpoint_interval = 0
    store = checkpoint_store(django_app)
    stored: list[Any] = []

    @django_app.task(base=ResumableTask, bind=True)
    def load(self: Any) -> None:
        def batches(cursor: int | None) -> None:
            with transaction.atomic(using=alias):
                add_items(alias, range(0, 5))
                set_step_cursor_tx(connections[alias], 5)
                # Given a nested block (a savepoint) that writes a cursor, then rolls back
                try:
                    with transaction.atomic(using=alias):
                        add_items(alias, range(5, 10))
                        set_step_cursor_tx(connections[alias], 10)
                        raise RollbackError()
                except RollbackError:
                    pass
            checkpoint = store.get(self.request.id)
            assert checkpoint is not None
            stored.append(checkpoint.cursor)
            # When the run reaches a boundary after the outer block committed
            set_cursor(7)
            checkpoint = store.get(self.request.id)
            assert checkpoint is not None
            stored.append(checkpoint.cursor)

        step_cursor("batches", batches)

    assert load.apply().state == "SUCCESS"

    # Then the outer block's write committed alone, and the run writes again: it does
    # not wait for the rolled-back savepoint's write to end
    assert stored == [5, 7]
    assert count(alias) == 5


def test_a_stop_at_a_tx_write_rolls_the_batch_back_and_the_next_run_redoes_it(
    django_app: Celery, alias: str
) -> None:
    starts: list[int] = []

    @django_app.task(base=ResumableTask, bind=True)
    def load(self: Any) -> None:
        def batches(cursor: int | None) -> None:
            for first in range(cursor or 0, 30, 10):
                starts.append(first)
                with transaction.atomic(using=alias):
                    add_items(alias, range(first, first + 10))
                    set_step_cursor_tx(connections[alias], first + 10)

        step_cursor("batches", batches)

    # Given a run stopped at its second transactional cursor write
    with interrupt_at_cursor("batches", 2):
        first = load.apply()
    assert first.state == "IGNORED"
    assert count(alias) == 10

    # When it resumes
    assert load.apply(task_id=first.id).state == "SUCCESS"

    # Then the rolled-back batch was redone and every row exists once
    assert starts == [0, 10, 10, 20]
    assert count(alias) == 30


def spanning_task(app: Celery, alias: str, ran: list[str]) -> Any:
    """A task whose atomic block spans its first step and commits after the step returns."""

    def copy() -> dict[str, int]:
        ran.append("copy")
        add_items(alias, range(3))
        set_step_tx(connections[alias], {"rows": 3})
        return {"rows": -1}

    @app.task(base=ResumableTask, bind=True)
    def load(self: Any) -> Any:
        with transaction.atomic(using=alias):
            copied = step("copy", copy)
        step("report", ran.append, "report")
        return copied

    return load


def test_an_atomic_block_spanning_a_step_works_in_the_first_run_and_on_resume(
    django_app: Celery, alias: str
) -> None:
    ran: list[str] = []
    load = spanning_task(django_app, alias, ran)

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
    assert count(alias) == 3


def test_a_stop_inside_a_spanning_atomic_block_rolls_the_step_back(
    django_app: Celery, alias: str
) -> None:
    ran: list[str] = []
    load = spanning_task(django_app, alias, ran)

    # Given a stop right after the step returned, before its atomic block committed
    with interrupt_after_step("copy"):
        first = load.apply()

    # Then the step's rows and its finish rolled back together
    assert first.state == "IGNORED"
    assert count(alias) == 0
    checkpoint = checkpoint_store(django_app).get(first.id)
    assert checkpoint is not None
    assert (checkpoint.status, checkpoint.finished_steps) == ("interrupted", ())
    assert checkpoint.interruptions == 1

    # And the next run does the step again
    assert load.apply(task_id=first.id).state == "SUCCESS"
    assert ran == ["copy", "copy", "report"]
    assert count(alias) == 3


def test_a_database_without_the_checkpoint_table_is_a_clear_error(
    alias: str, table_name: str, tmp_path: Path
) -> None:
    # Given checkpoints stored elsewhere than the Django database
    app = Celery("django-elsewhere", broker="memory://")
    app.conf.update(
        resumable_store_url=f"sqlite:///{tmp_path / 'checkpoints.sqlite3'}",
        resumable_table_name=table_name,
    )
    raised: list[BaseException] = []

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        def work(cursor: Any) -> None:
            with transaction.atomic(using=alias):
                try:
                    set_step_cursor_tx(connections[alias], 1)
                except CheckpointStoreError as exc:
                    raised.append(exc)

        step_cursor("work", work)

    # When a transactional write goes through Django's connection
    result = job.apply()

    # Then it says the table must be in the same database
    assert result.state == "SUCCESS"
    assert len(raised) == 1
    assert str(raised[0]).startswith(f"task {result.id}: the database of the given connection")
    assert "same database" in str(raised[0])


@pytest.mark.parametrize("alias", [pytest.param("pg", marks=pytest.mark.postgres)])
def test_the_callers_database_error_stays_reachable(django_app: Celery, alias: str) -> None:
    require("postgres")
    raised: list[CheckpointStoreError] = []

    @django_app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        def work(cursor: Any) -> None:
            with transaction.atomic(using=alias):
                # Given the caller's own transaction failed on the database
                with pytest.raises(DatabaseError), connections[alias].cursor() as cursor:
                    cursor.execute("SELECT 1 / 0")
                # When a checkpoint is written through it
                try:
                    set_step_cursor_tx(connections[alias], 1)
                except CheckpointStoreError as exc:
                    raised.append(exc)
                    raise

        step_cursor("work", work)

    job.apply()

    # Then Django's error (and the driver's under it) is the cause, for retry logic
    assert len(raised) == 1
    assert "could not write the checkpoint through Django's connection 'pg'" in str(raised[0])
    cause = raised[0].__cause__
    assert isinstance(cause, DatabaseError)
    assert type(cause.__cause__).__name__ == "InFailedSqlTransaction"
    assert raised[0].transient is False
