"""ResumableTask: retries resume, completed ids are skipped, interrupts are bounded."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from celery import Celery

from celery_resumable import (
    CheckpointStore,
    ResumableTask,
    iterate,
    set_cursor,
    step,
    step_cursor,
)
from celery_resumable.errors import StepMismatchError, TooManyInterruptionsError
from celery_resumable.testing import interrupt_after_step, interrupt_at_cursor
from celery_resumable.worker.notice import clear_shutdown, request_shutdown


def test_self_retry_resumes_mid_cursor_in_the_first_step(
    app: Celery, checkpoints: CheckpointStore
) -> None:
    processed: list[tuple[int, int]] = []

    @app.task(base=ResumableTask, bind=True, max_retries=2, default_retry_delay=0)
    def job(self: Any) -> int:
        def process(cursor: int | None) -> int:
            for item in range(cursor or 0, 6):
                if item == 3 and self.request.retries == 0:
                    raise self.retry(exc=RuntimeError("flaky"))
                processed.append((item, self.request.retries))
                set_cursor(item + 1)
            return 6

        return step_cursor("process", process)

    result = job.apply()

    assert result.state == "SUCCESS"
    assert processed == [(0, 0), (1, 0), (2, 0), (3, 1), (4, 1), (5, 1)]
    checkpoint = checkpoints.get(result.id)
    assert checkpoint is not None and checkpoint.status == "completed"


def test_autoretry_resumes_where_the_task_failed(app: Celery) -> None:
    ran: list[str] = []
    attempts = {"load": 0}

    def load() -> None:
        attempts["load"] += 1
        if attempts["load"] == 1:
            raise ConnectionError("down")
        ran.append("load")

    @app.task(
        base=ResumableTask,
        bind=True,
        autoretry_for=(ConnectionError,),
        retry_backoff=False,
        default_retry_delay=0,
    )
    def job(self: Any) -> None:
        step("extract", ran.append, "extract")
        step("load", load)

    assert job.apply().state == "SUCCESS"
    assert ran == ["extract", "load"]
    assert attempts["load"] == 2


def test_an_eager_call_of_a_completed_id_runs_again_from_the_start(app: Celery) -> None:
    ran: list[str] = []

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> str:
        step("send_email", ran.append, "sent")
        return "done"

    # An eager call is not a delivery (Celery's eager chains reuse ids): it runs afresh.
    # Deliveries of a completed id are skipped: tests/integration/test_edges.py.
    first = job.apply()
    again = job.apply(task_id=first.id)

    assert (first.state, first.result) == ("SUCCESS", "done")
    assert (again.state, again.result) == ("SUCCESS", "done")
    assert ran == ["sent", "sent"]


def test_interruptions_are_counted_and_bounded(app: Celery, checkpoints: CheckpointStore) -> None:
    @app.task(base=ResumableTask, bind=True, resumable_max_interruptions=2)
    def job(self: Any) -> None:
        for _ in iterate("loop", range(10)):
            pass

    # Given a task interrupted as many times as allowed
    with interrupt_at_cursor("loop", 1):
        first = job.apply()
    with interrupt_at_cursor("loop", 1):
        job.apply(task_id=first.id)
    checkpoint = checkpoints.get(first.id)
    assert checkpoint is not None and checkpoint.interruptions == 2

    # When it is interrupted once more
    with interrupt_at_cursor("loop", 1):
        last = job.apply(task_id=first.id)

    # Then it fails with the loop guard's error
    assert last.state == "FAILURE"
    assert isinstance(last.result, TooManyInterruptionsError)
    assert "resumable_max_interruptions=2" in str(last.result)


def test_shutdown_notice_interrupts_at_the_next_boundary(
    app: Celery, checkpoints: CheckpointStore
) -> None:
    processed: list[int] = []

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        for item in iterate("loop", range(10)):
            processed.append(item)
            if item == 4:
                request_shutdown()

    try:
        result = job.apply()
    finally:
        clear_shutdown()

    assert result.state == "IGNORED"
    assert processed == [0, 1, 2, 3, 4]
    checkpoint = checkpoints.get(result.id)
    assert checkpoint is not None
    assert (checkpoint.status, checkpoint.cursor, checkpoint.interruptions) == ("interrupted", 5, 1)


def test_interrupt_is_not_swallowed_by_except_exception(app: Celery) -> None:
    swallowed: list[BaseException] = []

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        try:
            step("first", lambda: None)
        except Exception as exc:  # noqa: BLE001 - the point of the test
            swallowed.append(exc)
        step("second", lambda: None)

    with interrupt_after_step("first"):
        result = job.apply()

    assert result.state == "IGNORED"
    assert swallowed == []


def test_max_runtime_interrupts_after_progress(app: Celery, checkpoints: CheckpointStore) -> None:
    @app.task(base=ResumableTask, bind=True, resumable_max_runtime=0.05)
    def job(self: Any) -> int:
        count = 0
        for _ in iterate("loop", range(5)):
            time.sleep(0.03)
            count += 1
        return count

    runs = 0
    task_id = None
    while True:
        runs += 1
        result = job.apply(task_id=task_id)
        task_id = result.id
        if result.state == "SUCCESS":
            break
        assert result.state == "IGNORED"
        assert runs < 10
    checkpoint = checkpoints.get(task_id)
    assert checkpoint is not None
    assert checkpoint.interruptions == runs - 1 >= 2


def test_a_forced_reset_makes_the_live_run_start_over(
    app: Celery, checkpoints: CheckpointStore
) -> None:
    ran: list[str] = []

    @app.task(base=ResumableTask, bind=True, resumable_checkpoint_interval=0)
    def job(self: Any) -> None:
        step("first", ran.append, "first")
        if len(ran) == 1:
            checkpoints.reset(self.request.id, force=True)
        step("second", ran.append, "second")

    # Given a run whose checkpoint an operator force-resets after its first step
    interrupted = job.apply()

    # Then it stops at its next boundary, leaving no row; the next run starts over
    assert interrupted.state == "IGNORED"
    assert checkpoints.get(interrupted.id) is None
    assert job.apply(task_id=interrupted.id).state == "SUCCESS"
    assert ran == ["first", "first", "second"]


def test_a_task_without_steps_is_claimed_and_completed(
    app: Celery, checkpoints: CheckpointStore
) -> None:
    @app.task(base=ResumableTask, bind=True)
    def plain(self: Any, x: int) -> int:
        return x * 2

    result = plain.apply(args=(21,))

    assert result.result == 42
    checkpoint = checkpoints.get(result.id)
    assert checkpoint is not None
    assert (checkpoint.status, checkpoint.owner) == ("completed", None)


def test_a_store_that_cannot_be_created_fails_the_task_before_it_runs(tmp_path: Path) -> None:
    app = Celery("nodb", broker="memory://")
    app.conf.resumable_store_url = f"sqlite:///{tmp_path / 'missing' / 'dir' / 'x.sqlite3'}"
    calls: list[int] = []

    @app.task(base=ResumableTask, bind=True)
    def plain(self: Any, x: int) -> int:
        calls.append(x)
        return x * 2

    failed = plain.apply(args=(21,))

    assert failed.state == "FAILURE"
    assert str(failed.result).startswith(f"task {failed.id}: could not create the table")
    assert calls == []


def test_a_direct_call_runs_the_steps_without_storing(
    app: Celery, checkpoints: CheckpointStore
) -> None:
    @app.task(base=ResumableTask, bind=True)
    def job(self: Any, x: int) -> int:
        half = step("half", lambda: x // 2)
        return step_cursor("double", lambda cursor: half * 4)

    assert job(10) == 20
    assert checkpoints.list() == []


def test_ack_settings_default_to_late_and_reject_on_worker_lost(app: Celery) -> None:
    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        pass

    assert job.acks_late is True
    assert job.reject_on_worker_lost is True


def test_the_lease_is_renewed_through_a_long_step_without_boundaries(
    app: Celery, checkpoints: CheckpointStore
) -> None:
    claims: list[bool] = []

    @app.task(base=ResumableTask, bind=True, resumable_lease_seconds=0.3)
    def job(self: Any) -> None:
        def long_call() -> None:
            time.sleep(1.0)  # three lease lengths without a boundary
            claim = checkpoints.claim(self.request.id, self.name, "intruder", 60)
            claims.append(claim.claimed)

        step("long", long_call)

    result = job.apply()

    assert result.state == "SUCCESS"
    assert claims == [False]


def test_retry_takes_celerys_arguments_by_position(app: Celery) -> None:
    attempts: list[int] = []

    @app.task(base=ResumableTask, bind=True, max_retries=3)
    def job(self: Any) -> int:
        attempts.append(self.request.retries)
        if self.request.retries == 0:
            # Celery's signature: args, kwargs, exc, throw, eta, countdown, max_retries
            raise self.retry((), {}, KeyError("x"), True, None, 0, 3)
        return len(attempts)

    result = job.apply()

    assert result.state == "SUCCESS"
    assert attempts == [0, 1]


def test_retry_does_not_retry_a_step_mismatch_given_by_position(
    app: Celery, checkpoints: CheckpointStore
) -> None:
    @app.task(base=ResumableTask, bind=True, max_retries=3)
    def job(self: Any) -> None:
        raise self.retry(None, None, StepMismatchError(self.request.id, "a", "b"))

    result = job.apply()

    assert result.state == "FAILURE"
    assert isinstance(result.result, StepMismatchError)


def test_a_retry_without_throw_raised_by_the_body_is_retried(
    app: Celery, checkpoints: CheckpointStore
) -> None:
    ran: list[int] = []

    @app.task(base=ResumableTask, bind=True, max_retries=3)
    def flaky(self: Any) -> int:
        # Given a task that asks for a retry without raising, then raises it itself
        ran.append(self.request.retries)
        if self.request.retries >= 2:
            return 42
        raise self.retry(exc=RuntimeError("not yet"), throw=False, countdown=0)

    # When it runs eagerly, Celery running each retry at once
    result = flaky.apply()

    # Then every retry found the task free to claim, and the last one completed it
    assert result.get() == 42
    assert ran == [0, 1, 2]
    checkpoint = checkpoints.get(result.id)
    assert checkpoint is not None and checkpoint.status == "completed"
