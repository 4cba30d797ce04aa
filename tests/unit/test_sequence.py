"""The step order of a run, driven without a store: what a resume skips, resumes and redoes."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from celery_resumable.errors import (
    DuplicateStepError,
    NestedStepError,
    NotInStepError,
    StepMismatchError,
)
from celery_resumable.run.sequence import StepSequence
from celery_resumable.store.records import FinishedStep


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    items: int  # cursor advances before the step returns


class StoppedError(Exception):
    """The run stopped here (a shutdown at a boundary)."""


def run_body(
    sequence: StepSequence, body: list[Step], stop_after: int | None, work: list[str]
) -> None:
    """Run ``body`` as a task would, stopping after ``stop_after`` boundaries.

    Adds the work done to ``work``: one entry per item processed and per step result.
    """
    boundaries = 0

    def boundary() -> None:
        nonlocal boundaries
        boundaries += 1
        if stop_after is not None and boundaries > stop_after:
            raise StoppedError

    for step in body:
        start = sequence.begin(step.name)
        if start.skipped:
            assert start.result == f"result of {step.name}"
            continue
        boundary()
        first = 0 if start.cursor is None else int(start.cursor) + 1  # type: ignore[call-overload]
        for item in range(first, step.items):
            work.append(f"{step.name}:{item}")
            sequence.advance(item)
            boundary()
        work.append(f"{step.name}:result")
        sequence.finish(step.name, f"result of {step.name}")
        boundary()


bodies = st.lists(
    st.builds(Step, st.sampled_from("abcdefgh"), st.integers(0, 4)),
    max_size=6,
    unique_by=lambda step: step.name,
)


@settings(database=None)
@given(body=bodies, stops=st.lists(st.integers(0, 30), max_size=4))
def test_a_body_stopped_any_number_of_times_does_each_item_once(
    body: list[Step], stops: list[int]
) -> None:
    # Given a body of steps with cursors, stopped at chosen boundaries and resumed from
    # what each stopped run would have written
    finished: tuple[FinishedStep, ...] = ()
    in_progress = None
    work: list[str] = []
    for stop_after in [*stops, None]:
        sequence = StepSequence("task", finished, in_progress)
        with contextlib.suppress(StoppedError):
            run_body(sequence, body, stop_after, work)
        state = sequence.state(0)
        finished, in_progress = state.finished, None
        if state.current_step is not None:
            in_progress = (state.current_step, state.cursor)

    # Then every item and every result was produced exactly once, in the body's order
    expected = [f"{s.name}:{i}" for s in body for i in [*range(s.items), "result"]]
    assert work == expected
    # And the final checkpoint holds every step finished, in order, with its result
    assert [step.name for step in finished] == [step.name for step in body]
    assert in_progress is None


def test_a_resume_with_renamed_steps_is_refused() -> None:
    # Given a checkpoint with step "load" finished and "send" in progress
    sequence = StepSequence("task-1", (FinishedStep("load", 1),), ("send", 3))

    # When the code now calls another step first, Then the mismatch is named
    with pytest.raises(StepMismatchError, match="load"):
        sequence.begin("fetch")

    # And a step in progress must come back under its own name
    sequence = StepSequence("task-1", (FinishedStep("load", 1),), ("send", 3))
    assert sequence.begin("load").skipped
    with pytest.raises(StepMismatchError, match="send"):
        sequence.begin("notify")


def test_bad_step_calls_are_refused_before_anything_changes() -> None:
    sequence = StepSequence("task-1")
    with pytest.raises(TypeError):
        sequence.begin("")
    with pytest.raises(NotInStepError):
        sequence.advance(1)
    assert not sequence.begin("one").skipped
    with pytest.raises(NestedStepError):
        sequence.begin("two")
    sequence.finish("one", None)
    with pytest.raises(DuplicateStepError):
        sequence.begin("one")
    assert sequence.state(0).finished == (FinishedStep("one", None),)


def test_a_step_left_early_counts_as_finished_when_the_task_goes_on() -> None:
    # Given a step whose loop was left with break after one item
    sequence = StepSequence("task-1")
    sequence.begin("scan")
    sequence.advance(0)
    sequence.abort("scan")

    # When the task goes on to its next step
    start = sequence.begin("report")

    # Then the left step is finished (without a result) and the row must learn it
    assert start.changed
    assert sequence.state(0).finished == (FinishedStep("scan", None),)


def test_a_step_finished_by_its_transaction_is_not_finished_twice() -> None:
    # Given a step whose transaction committed its finish while the step still runs
    sequence = StepSequence("task-1")
    sequence.begin("charge")
    sequence.committed("charge", True, "receipt")

    # When the step function then returns
    sequence.finish("charge", "ignored")

    # Then the step is finished once, with the result its transaction stored
    assert sequence.state(0).finished == (FinishedStep("charge", "receipt"),)
