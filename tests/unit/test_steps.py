"""Steps and cursors: what runs, what is skipped, what a resumed step receives."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest
from celery import Celery

from celery_resumable import (
    CheckpointStore,
    ResumableTask,
    iterate,
    set_cursor,
    step,
    step_cursor,
)
from celery_resumable.errors import (
    CursorDecodeError,
    CursorEncodeError,
    DuplicateStepError,
    NestedStepError,
    NotInResumableTaskError,
    NotInStepError,
    StepMismatchError,
)
from celery_resumable.testing import interrupt_after_step, interrupt_at_cursor
from tests.unit.sameness import assert_same


@dataclasses.dataclass(frozen=True)
class Page:
    last_id: int
    seen_at: dt.datetime
    token: uuid.UUID


@dataclasses.dataclass(frozen=True)
class Totals:
    count: int
    amount: Decimal
    span: tuple[dt.date, dt.date]


def test_finished_steps_are_skipped_and_return_their_stored_result(
    app: Celery, checkpoints: CheckpointStore
) -> None:
    ran: list[str] = []

    def download() -> Totals:
        ran.append("download")
        return Totals(3, Decimal("10.50"), (dt.date(2026, 1, 1), dt.date(2026, 1, 31)))

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> Totals:
        totals = step("download", download)
        step("notify", ran.append, "notify")
        return totals

    # Given a run interrupted after its first step
    with interrupt_after_step("download"):
        first = job.apply()
    assert first.state == "IGNORED"
    assert ran == ["download"]

    # When the task runs again under the same id
    second = job.apply(task_id=first.id)

    # Then the first step is skipped and its stored result comes back as the same type
    assert ran == ["download", "notify"]
    assert second.result == Totals(3, Decimal("10.50"), (dt.date(2026, 1, 1), dt.date(2026, 1, 31)))
    checkpoint = checkpoints.get(first.id)
    assert checkpoint is not None and checkpoint.status == "completed"
    assert [s.name for s in checkpoint.finished_steps] == ["download", "notify"]


def test_result_without_annotation_comes_back_as_the_same_type(app: Celery) -> None:
    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> Any:
        return step("load", lambda: (1, 2))

    with interrupt_after_step("load"):
        first = job.apply()
    assert_same(job.apply(task_id=first.id).result, (1, 2))


def test_cursor_step_resumes_from_a_typed_cursor(app: Celery) -> None:
    seen: list[Page | None] = []
    processed: list[int] = []
    token = uuid.uuid4()
    moment = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)

    def process(cursor: Page | None) -> int:
        seen.append(cursor)
        start = cursor.last_id + 1 if cursor else 0
        for item in range(start, 10):
            processed.append(item)
            set_cursor(Page(item, moment, token))
        return len(processed)

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> int:
        return step_cursor("process", process)

    # Given a run interrupted at its fourth cursor
    with interrupt_at_cursor("process", 4):
        first = job.apply()
    assert processed == [0, 1, 2, 3]

    # When it resumes
    result = job.apply(task_id=first.id)

    # Then the step gets the cursor as a Page and processes only the rest
    assert seen == [None, Page(3, moment, token)]
    assert processed == list(range(10))
    assert result.result == 10


def test_cursor_type_argument_wins_over_the_annotation(app: Celery) -> None:
    seen: list[Any] = []

    def process(cursor: Any) -> None:
        seen.append(cursor)
        set_cursor((5, "x"))

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        step_cursor("process", process, cursor_type=tuple[int, str])

    with interrupt_at_cursor("process", 1):
        first = job.apply()
    job.apply(task_id=first.id)
    assert seen == [None, (5, "x")]


def test_several_cursor_types_in_one_task(app: Celery) -> None:
    seen: dict[str, Any] = {}

    def by_date(cursor: dt.date | None) -> None:
        seen.setdefault("date", []).append(cursor)
        set_cursor(dt.date(2026, 2, 3))

    def by_decimal(cursor: Decimal | None) -> None:
        seen.setdefault("decimal", []).append(cursor)
        set_cursor(Decimal("1.25"))

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        step_cursor("dates", by_date)
        step_cursor("amounts", by_decimal)

    # Given one run interrupted in each cursor step
    with interrupt_at_cursor("dates", 1):
        first = job.apply()
    with interrupt_at_cursor("amounts", 1):
        job.apply(task_id=first.id)

    # When the last run resumes
    job.apply(task_id=first.id)

    # Then each step received its own cursor type
    assert seen == {
        "date": [None, dt.date(2026, 2, 3)],
        "decimal": [None, Decimal("1.25")],
    }


def test_iterate_over_an_iterable_skips_the_items_done(app: Celery) -> None:
    done: list[str] = []

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        for letter in iterate("letters", "abcdef"):
            done.append(letter)

    with interrupt_at_cursor("letters", 2):
        first = job.apply()
    assert done == ["a", "b"]
    job.apply(task_id=first.id)
    assert done == list("abcdef")


def test_iterate_with_a_cursor_function_resumes_keyset_pagination(app: Celery) -> None:
    rows = list(range(0, 100, 7))
    calls: list[int | None] = []
    done: list[int] = []

    def after(cursor: int | None) -> Any:
        calls.append(cursor)
        return ((row, row) for row in rows if cursor is None or row > cursor)

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        for row in iterate("rows", after):
            done.append(row)

    with interrupt_at_cursor("rows", 3):
        first = job.apply()
    job.apply(task_id=first.id)
    assert calls == [None, 14]
    assert done == rows


def test_leaving_an_iterate_loop_with_break_finishes_the_step(
    app: Celery, checkpoints: CheckpointStore
) -> None:
    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        for item in iterate("search", range(100)):
            if item == 3:
                break
        step("after", lambda: None)

    result = job.apply()
    checkpoint = checkpoints.get(result.id)
    assert checkpoint is not None
    assert [s.name for s in checkpoint.finished_steps] == ["search", "after"]


def test_a_failing_step_saves_its_cursor_and_a_rerun_resumes_it(
    app: Celery, checkpoints: CheckpointStore
) -> None:
    attempts: list[int | None] = []

    def process(cursor: int | None) -> None:
        attempts.append(cursor)
        for item in range(cursor or 0, 5):
            if item == 2 and len(attempts) == 1:
                raise ValueError("flaky")
            set_cursor(item + 1)

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        step_cursor("process", process)

    failed = job.apply()
    assert failed.state == "FAILURE"
    checkpoint = checkpoints.get(failed.id)
    assert checkpoint is not None
    assert (checkpoint.status, checkpoint.current_step, checkpoint.cursor) == (
        "failed",
        "process",
        2,
    )
    assert job.apply(task_id=failed.id).state == "SUCCESS"
    assert attempts == [None, 2]


def test_step_names_must_be_unique_in_a_run(app: Celery) -> None:
    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        step("load", lambda: 1)
        step("load", lambda: 2)

    result = job.apply()
    assert isinstance(result.result, DuplicateStepError)
    assert "'load'" in str(result.result)


def test_steps_cannot_be_nested(app: Celery) -> None:
    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        step("outer", lambda: step("inner", lambda: 1))

    result = job.apply()
    assert isinstance(result.result, NestedStepError)
    assert "'inner'" in str(result.result) and "'outer'" in str(result.result)


def test_changed_steps_raise_a_mismatch_and_are_not_retried(
    app: Celery, checkpoints: CheckpointStore
) -> None:
    version = ["old"]

    @app.task(base=ResumableTask, bind=True, autoretry_for=(Exception,), max_retries=3)
    def job(self: Any) -> None:
        step("extract" if version[0] == "old" else "fetch", lambda: 1)
        step("load", lambda: 2)

    # Given a checkpoint written by the old code
    with interrupt_after_step("extract"):
        first = job.apply()

    # When the new code resumes it
    version[0] = "new"
    result = job.apply(task_id=first.id)

    # Then it fails at once with a message naming both steps, and the record is kept
    assert result.state == "FAILURE"
    assert isinstance(result.result, StepMismatchError)
    assert "'extract'" in str(result.result) and "'fetch'" in str(result.result)
    checkpoint = checkpoints.get(first.id)
    assert checkpoint is not None
    assert [s.name for s in checkpoint.finished_steps] == ["extract"]


def test_set_cursor_outside_a_step(app: Celery) -> None:
    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        set_cursor(1)

    result = job.apply()
    assert isinstance(result.result, NotInStepError)
    assert "set_cursor()" in str(result.result)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: step("a", lambda: 1), "step"),
        (lambda: step_cursor("a", lambda c: 1), "step_cursor"),
        (lambda: set_cursor(1), "set_cursor"),
        (lambda: list(iterate("a", [1])), "iterate"),
    ],
)
def test_functions_outside_a_resumable_task(call: Any, name: str) -> None:
    with pytest.raises(NotInResumableTaskError, match=rf"{name}\(\) was called outside"):
        call()


def test_a_cursor_that_cannot_be_stored_raises_at_set_cursor(app: Celery) -> None:
    raised: list[BaseException] = []

    def process(cursor: Any) -> None:
        try:
            set_cursor(object())
        except CursorEncodeError as exc:
            raised.append(exc)

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        step_cursor("process", process)

    job.apply()
    assert len(raised) == 1
    assert "object" in str(raised[0]) and "'process'" in str(raised[0])


def test_a_result_that_cannot_be_stored_fails_the_step(app: Celery) -> None:
    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        step("load", lambda: {1: "a"})

    result = job.apply()
    assert isinstance(result.result, CursorEncodeError)
    assert "step 'load'" in str(result.result)


def test_a_stored_cursor_that_does_not_fit_the_type_raises_decode_error(app: Celery) -> None:
    version = ["int"]

    def as_int(cursor: int | None) -> None:
        set_cursor(7)

    def as_page(cursor: Page | None) -> None:
        pass

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        step_cursor("process", as_int if version[0] == "int" else as_page)

    with interrupt_at_cursor("process", 1):
        first = job.apply()
    version[0] = "page"
    result = job.apply(task_id=first.id)
    assert isinstance(result.result, CursorDecodeError)
    assert "'process'" in str(result.result) and "Page" in str(result.result)


def test_a_caught_step_failure_lets_the_task_go_on(
    app: Celery, checkpoints: CheckpointStore
) -> None:
    def broken() -> None:
        raise KeyError("missing")

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> str:
        with contextlib.suppress(KeyError):
            step("optional", broken)
        return step("next", lambda: "done")

    result = job.apply()
    assert result.result == "done"
    checkpoint = checkpoints.get(result.id)
    assert checkpoint is not None
    assert [s.name for s in checkpoint.finished_steps] == ["optional", "next"]
