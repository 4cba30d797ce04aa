"""Transactional checkpoints at their edges: a transaction around a step, stops, errors.

Through each adapter, on each database (the ``tx`` fixture of tests/unit/test_tx.py).
"""

from __future__ import annotations

from typing import Any

import pytest

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
from tests.services import POSTGRES_URL, require
from tests.unit.test_tx import (  # noqa: F401 - the `tx` fixture and the one it uses
    TxSide,
    sqlalchemy_side,
    tx_side,
)

pytestmark = pytest.mark.usefixtures("every_boundary")


@pytest.fixture
def every_boundary(tx: TxSide) -> None:
    """The app writes its checkpoint at every boundary."""
    tx.app.conf.resumable_checkpoint_interval = 0


def spanning_task(tx: TxSide, ran: list[str]) -> Any:
    """A task whose transaction spans its first step and commits after the step returns."""

    def copy(conn: Any) -> dict[str, int]:
        ran.append("copy")
        tx.insert(conn, range(3))
        set_step_tx(conn, {"rows": 3})
        return {"rows": -1}

    @tx.app.task(base=ResumableTask, bind=True)
    def load(self: Any) -> Any:
        with tx.transaction() as conn:
            copied = step("copy", copy, conn)
        step("report", ran.append, "report")
        return copied

    return load


def test_a_transaction_spanning_a_step_works_in_the_first_run_and_on_resume(tx: TxSide) -> None:
    ran: list[str] = []
    load = spanning_task(tx, ran)

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
    assert tx.count() == 3


def test_a_stop_inside_a_spanning_transaction_rolls_the_step_back(tx: TxSide) -> None:
    ran: list[str] = []
    load = spanning_task(tx, ran)

    # Given a stop right after the step returned, before its transaction committed
    with interrupt_after_step("copy"):
        first = load.apply()

    # Then the step's rows and its finish rolled back together
    assert first.state == "IGNORED"
    assert tx.count() == 0
    checkpoint = checkpoint_store(tx.app).get(first.id)
    assert checkpoint is not None
    assert (checkpoint.status, checkpoint.finished_steps) == ("interrupted", ())
    assert checkpoint.interruptions == 1

    # And the next run does the step again
    assert load.apply(task_id=first.id).state == "SUCCESS"
    assert ran == ["copy", "copy", "report"]
    assert tx.count() == 3


def test_max_interruptions_holds_for_a_transactional_loop(tx: TxSide) -> None:
    @tx.app.task(base=ResumableTask, bind=True, resumable_max_interruptions=2)
    def load(self: Any) -> None:
        def batches(cursor: int | None) -> None:
            for first in range(cursor or 0, 50, 10):
                with tx.transaction() as conn:
                    tx.insert(conn, range(first, first + 10))
                    set_step_cursor_tx(conn, first + 10)

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
    checkpoint = checkpoint_store(tx.app).get(task_id or "")
    assert checkpoint is not None
    assert (checkpoint.status, checkpoint.interruptions) == ("failed", 3)
    assert checkpoint.cursor == 10


@pytest.mark.parametrize("store_url", [pytest.param(POSTGRES_URL, marks=pytest.mark.postgres)])
def test_the_callers_database_error_stays_reachable(tx: TxSide, store_url: str) -> None:
    require("postgres")
    raised: list[CheckpointStoreError] = []

    @tx.app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        def work(cursor: Any) -> None:
            with tx.transaction() as conn:
                # Given the caller's own transaction failed on the database
                tx.fail(conn)
                # When a checkpoint is written through it
                try:
                    set_step_cursor_tx(conn, 1)
                except CheckpointStoreError as exc:
                    raised.append(exc)
                    raise

        step_cursor("work", work)

    job.apply()

    # Then the database's own error is the cause (the driver's under it), for the
    # caller's retry logic; the write is a permanent failure
    assert len(raised) == 1
    assert str(raised[0]).startswith(
        f"task {raised[0].task_id}: could not write the checkpoint through"
    )
    assert type(tx.driver_error(raised[0].__cause__)).__name__ == "InFailedSqlTransaction"
    assert raised[0].transient is False
