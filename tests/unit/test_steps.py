"""Steps and cursors: what runs, what is skipped, what a resumed step receives."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import gc
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, NamedTuple, NewType, TypedDict

import pydantic
import pytest
from celery import Celery

from celery_resumable import (
    CheckpointStore,
    FinishedStep,
    ResumableTask,
    iterate,
    set_cursor,
    step,
    step_cursor,
)
from celery_resumable.codec.classes import _result_scopes
from celery_resumable.errors import (
    CursorDecodeError,
    CursorEncodeError,
    DuplicateStepError,
    NestedStepError,
    NotInResumableTaskError,
    NotInStepError,
    StepMismatchError,
)
from celery_resumable.store.records import State
from celery_resumable.testing import interrupt_after_step, interrupt_at_cursor
from tests.conftest import drop_table
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
    assert checkpoint.finished_steps == ()  # a completed row keeps no results


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

    # (stopped after its last step, so that the row still holds the finished steps)
    with interrupt_after_step("after"):
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

    # (stopped after its last step, so that the row still holds the finished steps)
    with interrupt_after_step("next"):
        first = job.apply()
    checkpoint = checkpoints.get(first.id)
    assert checkpoint is not None
    assert [s.name for s in checkpoint.finished_steps] == ["optional", "next"]
    result = job.apply(task_id=first.id)
    assert result.result == "done"


# --- typed results and cursors come back as they were --------------------------------------


class Shade(enum.Enum):
    LIGHT = "light"
    DARK = "dark"


class Line(NamedTuple):
    sku: str
    quantity: int


class Amounts(TypedDict):
    amount: Decimal
    day: dt.date


class AccountId(int):
    """An int that says what it counts."""


CustomerId = NewType("CustomerId", int)


class Parcel(pydantic.BaseModel):
    weight: Decimal
    sent: dt.datetime
    lines: tuple[Line, ...]


@dataclasses.dataclass(frozen=True)
class Shipment:
    parcels: list[Parcel]
    by_day: dict[str, set[dt.date]]
    shade: Shade | None


SHIPMENT = Shipment(
    parcels=[
        Parcel(
            weight=Decimal("2.50"),
            sent=dt.datetime(2026, 3, 1, 8, 30, tzinfo=dt.UTC),
            lines=(Line("A-1", 2), Line("B-7", 1)),
        )
    ],
    by_day={"march": {dt.date(2026, 3, 1), dt.date(2026, 3, 2)}},
    shade=Shade.DARK,
)

TYPED_RESULTS = [
    pytest.param(Decimal("1.50"), Decimal, id="decimal"),
    pytest.param(dt.date(2026, 1, 2), dt.date, id="date"),
    pytest.param(dt.datetime(2026, 1, 2, 3, 4, 5, 6), dt.datetime, id="naive-datetime"),
    pytest.param(
        dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        dt.datetime,
        id="aware-datetime",
    ),
    pytest.param(uuid.UUID(int=7), uuid.UUID, id="uuid"),
    pytest.param((1, "a", None), tuple[int, str, None], id="tuple"),
    pytest.param({1, 2, 3}, set[int], id="set"),
    pytest.param(frozenset({"x"}), frozenset[str], id="frozenset"),
    pytest.param(Line("A-1", 3), Line, id="named-tuple"),
    pytest.param({"amount": Decimal("1.50"), "day": dt.date(2026, 1, 2)}, Amounts, id="typed-dict"),
    pytest.param(CustomerId(12), CustomerId, id="new-type"),
    pytest.param(AccountId(12), AccountId, id="int-subclass"),
    pytest.param(Shade.LIGHT, Shade, id="enum"),
    pytest.param(
        Totals(3, Decimal("1.10"), (dt.date(2026, 1, 1), dt.date(2026, 1, 31))),
        Totals,
        id="dataclass",
    ),
    pytest.param(SHIPMENT.parcels[0], Parcel, id="pydantic"),
    pytest.param(SHIPMENT, Shipment, id="nested"),
    pytest.param([Line("A", 1), Line("B", 2)], list[Line], id="list-of-named-tuples"),
    pytest.param({"net": Decimal("9.99")}, dict[str, Decimal], id="dict-of-decimals"),
    pytest.param(None, Shipment | None, id="optional-none"),
    pytest.param(Shade.DARK, Shade | dt.date | None, id="union"),
    pytest.param({"text": "a\x00b", "parts": ("\x00",)}, dict[str, Any], id="nul-in-strings"),
    pytest.param(1e20, float, id="float-with-an-exponent"),
]


def _skipped_result(app: Celery, value: object, annotation: Any) -> tuple[object, list[str]]:
    """Run a task whose first step returns ``value``, interrupt it, resume it; return the
    value the skipped step returned in the resumed run, and the steps that ran."""
    ran: list[str] = []

    def produce() -> Any:
        ran.append("produce")
        return value

    produce.__annotations__ = {} if annotation is None else {"return": annotation}

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> Any:
        result = step("produce", produce)
        ran.append("after")
        return result

    with interrupt_after_step("produce"):
        first = job.apply()
    assert first.state == "IGNORED"
    second = job.apply(task_id=first.id)
    assert second.state == "SUCCESS", second.result
    return second.result, ran


@pytest.mark.parametrize(("value", "annotation"), TYPED_RESULTS)
@pytest.mark.parametrize("annotated", [True, False], ids=["annotated", "no-annotation"])
def test_a_skipped_step_returns_its_result_equal_and_of_the_same_type(
    app: Celery, value: object, annotation: Any, annotated: bool
) -> None:
    # When a task is interrupted after its step and resumed
    skipped, ran = _skipped_result(app, value, annotation if annotated else None)

    # Then the step did not run again and its result came back as it was, all the way down
    assert ran == ["produce", "after"]
    assert_same(skipped, value)


def test_a_result_of_decimals_and_dates_without_annotation_keeps_its_types(app: Celery) -> None:
    # Given a step without a return annotation (the reported case)
    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> Any:
        return step("price", lambda: {"amount": Decimal("1.50"), "day": dt.date(2026, 5, 1)})

    # When it is skipped in a resumed run
    with interrupt_after_step("price"):
        first = job.apply()
    resumed = job.apply(task_id=first.id)

    # Then it returns a Decimal and a date, not strings
    assert_same(resumed.result, {"amount": Decimal("1.50"), "day": dt.date(2026, 5, 1)})


def test_a_local_class_named_in_a_return_annotation_comes_back(app: Celery) -> None:
    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> tuple[bool, bool]:
        @dataclasses.dataclass(frozen=True)
        class Batch:
            ids: tuple[int, ...]
            day: dt.date

        def load() -> Batch:  # a string annotation: found through the closure
            return Batch((1, 2), dt.date(2026, 1, 1))

        batch = step("load", load)
        step("after", lambda: None)
        return type(batch) is Batch, batch == Batch((1, 2), dt.date(2026, 1, 1))

    # Given a run interrupted after the step
    with interrupt_after_step("load"):
        first = job.apply()

    # When it resumes, with a new Batch class made by the new run of the body
    resumed = job.apply(task_id=first.id)

    # Then the skipped step returns an equal value of that class
    assert resumed.state == "SUCCESS", resumed.result
    assert resumed.result == (True, True)


def test_a_return_annotation_that_cannot_be_resolved_fails_the_first_run(app: Celery) -> None:
    ran: list[str] = []

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        @dataclasses.dataclass
        class Hidden:
            n: int

        def make() -> Hidden:  # names a class the function does not hold
            ran.append("make")
            return None  # type: ignore[return-value]

        step("make", make)

    # When
    result = job.apply()

    # Then the first run fails before running the step, naming the step and the class
    assert result.state == "FAILURE"
    assert isinstance(result.result, CursorDecodeError)
    message = str(result.result)
    assert "the function of step 'make'" in message
    assert "name 'Hidden' is not defined" in message
    assert ran == []


def _make_hidden() -> object:
    @dataclasses.dataclass
    class Hidden:
        n: int

    return Hidden(1)


def test_a_result_that_would_not_come_back_fails_the_first_run(
    app: Celery, checkpoints: CheckpointStore
) -> None:
    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        step("make", _make_hidden)

    # When the step returns a value of a class no resumed run could find
    result = job.apply()

    # Then the first run fails at the step, naming the type, and nothing is stored for it
    assert result.state == "FAILURE"
    assert isinstance(result.result, CursorEncodeError)
    message = str(result.result)
    assert message.startswith("cannot store the result of step 'make': a value of type ")
    assert "_make_hidden.<locals>.Hidden" in message
    checkpoint = checkpoints.get(result.id)
    assert checkpoint is not None and checkpoint.finished_steps == ()


def test_a_result_its_annotation_would_turn_into_another_type_fails_the_first_run(
    app: Celery,
) -> None:
    def day() -> dt.date:
        return "2026-01-02"  # type: ignore[return-value]

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        step("day", day)

    result = job.apply()

    assert isinstance(result.result, CursorEncodeError)
    assert str(result.result).startswith(
        "cannot store the result of step 'day': the result of step 'day' is a str but would "
        "come back as a date"
    )


def test_a_cursor_that_cannot_be_stored_names_the_step_that_set_it(app: Celery) -> None:
    def first() -> int:
        set_cursor(1)
        return 1

    def second() -> int:
        set_cursor(object())
        return 2

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        step("first", first)
        step("second", second)

    result = job.apply()

    # The second step's cursor is named after it, not after the step that set one before
    assert isinstance(result.result, CursorEncodeError)
    assert str(result.result).startswith(
        "cannot store the cursor of step 'second': a value of type object is not JSON"
    )


def test_a_dict_key_with_a_nul_character_fails_the_step(app: Celery) -> None:
    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        step("load", lambda: {"rows": {"a\x00": 1}})

    result = job.apply()

    assert isinstance(result.result, CursorEncodeError)
    assert str(result.result) == (
        "cannot store the result of step 'load'['rows']: dict key 'a\\x00' contains a NUL "
        "character, which databases refuse"
    )


def test_a_cursor_without_annotation_comes_back_as_the_same_type(app: Celery) -> None:
    seen: list[Any] = []

    def process(cursor):  # type: ignore[no-untyped-def]
        seen.append(cursor)
        set_cursor((41, dt.date(2026, 1, 2), Decimal("1.5"), AccountId(3)))

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        step_cursor("process", process)

    # Given a run interrupted at its cursor
    with interrupt_at_cursor("process", 1):
        first = job.apply()

    # When it resumes
    job.apply(task_id=first.id)

    # Then the function gets the cursor back as it was set
    assert seen[0] is None
    assert_same(seen[1], (41, dt.date(2026, 1, 2), Decimal("1.5"), AccountId(3)))


def test_set_cursor_refuses_a_cursor_its_annotation_would_change(app: Celery) -> None:
    raised: list[CursorEncodeError] = []

    def process(cursor: int | None) -> None:
        try:
            set_cursor("41")
        except CursorEncodeError as exc:
            raised.append(exc)

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        step_cursor("process", process)

    job.apply()

    assert len(raised) == 1
    assert str(raised[0]).startswith("cannot store the cursor of step 'process': ")
    assert "a value of type str could not be read back" in str(raised[0])


def test_iterate_resumes_a_typed_cursor_without_annotation(app: Celery) -> None:
    days = [dt.date(2026, 1, day) for day in range(1, 6)]
    calls: list[Any] = []
    done: list[dt.date] = []

    def after(cursor):  # type: ignore[no-untyped-def]
        calls.append(cursor)
        return ((day, day) for day in days if cursor is None or day > cursor)

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        for day in iterate("days", after):
            done.append(day)

    with interrupt_at_cursor("days", 2):
        first = job.apply()
    job.apply(task_id=first.id)

    assert done == days
    assert_same(calls, [None, dt.date(2026, 1, 2)])


def test_a_checkpoint_written_by_version_0_1_resumes_with_the_annotations(
    app: Celery, checkpoints: CheckpointStore
) -> None:
    seen: list[Page | None] = []

    def download() -> Totals:
        raise AssertionError("a finished step runs again")

    def process(cursor: Page | None) -> None:
        seen.append(cursor)

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> Totals:
        totals = step("download", download)
        step_cursor("process", process)
        return totals

    # Given a checkpoint as version 0.1 stored it: untagged JSON
    task_id = str(uuid.uuid4())
    token = uuid.UUID(int=5)
    old = State(
        (
            FinishedStep(
                "download", {"count": 3, "amount": "10.50", "span": ["2026-01-01", "2026-01-31"]}
            ),
        ),
        "process",
        {"last_id": 4, "seen_at": "2026-01-02T03:04:05+00:00", "token": str(token)},
        0,
    )
    checkpoints.claim(task_id, job.name, "old-run", 60)
    assert checkpoints.save(task_id, "old-run", old, status="interrupted")

    # When the task resumes under that id
    result = job.apply(task_id=task_id)

    # Then the stored values are read as the annotations say
    assert result.state == "SUCCESS", result.result
    assert_same(
        result.result, Totals(3, Decimal("10.50"), (dt.date(2026, 1, 1), dt.date(2026, 1, 31)))
    )
    assert_same(seen, [Page(4, dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC), token)])


@pytest.fixture
def db_app(store_url: str, table_name: str) -> Iterator[Celery]:
    """An app whose checkpoints live in the database under test."""
    app = Celery("codec", broker="memory://")
    app.conf.update(
        resumable_store_url=store_url,
        resumable_table_name=table_name,
        resumable_checkpoint_interval=None,
    )
    yield app
    drop_table(store_url, table_name)


def test_typed_values_round_trip_through_each_database(db_app: Celery) -> None:
    # Given values a database's JSON type could change: NUL characters (refused by
    # PostgreSQL's JSONB), a float written with an exponent (read back by JSONB as an
    # int), a dict using the tag key, and nested typed values
    value = {
        "shipment": SHIPMENT,
        "text": "nul\x00inside",
        "large": 1e20,
        "small": 1e-7,
        "tagged": {"$type": "user data", "n": (1,)},
        "big": 10**30,
    }
    seen: list[Any] = []

    def process(cursor):  # type: ignore[no-untyped-def]
        seen.append(cursor)
        set_cursor(value)

    @db_app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> Any:
        result = step("load", lambda: value)
        step_cursor("process", process)
        return result

    # When the task is interrupted at its cursor and resumed
    with interrupt_at_cursor("process", 1):
        first = job.apply()
    resumed = job.apply(task_id=first.id)

    # Then the skipped step's result and the cursor come back as they were
    assert resumed.state == "SUCCESS", resumed.result
    assert_same(resumed.result, value)
    assert_same(seen[1], value)


def test_a_task_body_whose_step_functions_are_made_at_each_run_leaves_no_scopes_behind(
    app: Celery,
) -> None:
    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> int:
        def load() -> int:
            return 1

        return step("load", load)

    # When the task runs many times, each run with a new step function
    before = len(_result_scopes)
    for _ in range(50):
        assert job.apply().result == 1
    gc.collect()

    # Then the scopes of the functions that are gone are gone too
    assert len(_result_scopes) <= before + 1
