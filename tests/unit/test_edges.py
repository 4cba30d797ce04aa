"""Where Celery's own features meet resumable runs: replace, direct calls, lost leases."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from celery import Celery

from celery_resumable import CheckpointStore, ResumableTask, iterate, step
from celery_resumable.errors import LeaseLostError, RunStopped, StepMismatchError, TaskInterrupted
from celery_resumable.testing import interrupt_when


def test_a_replacement_starts_fresh_under_the_same_task_id(
    app: Celery, checkpoints: CheckpointStore
) -> None:
    fetched: list[int] = []

    @app.task(base=ResumableTask, bind=True)
    def paginate(self: Any, page: int) -> int:
        # Given a task that fetches a page, then replaces itself with the next page
        items = step("fetch", lambda: fetched.append(page) or page)
        if page < 3:
            return self.replace(paginate.si(page + 1))  # type: ignore[no-any-return]
        return items

    # When it runs
    result = paginate.apply(args=(0,))

    # Then every replacement fetched its own page, under the one task id
    assert result.state == "SUCCESS"
    assert fetched == [0, 1, 2, 3]
    checkpoint = checkpoints.get(result.id)
    assert checkpoint is not None and checkpoint.status == "completed"
    assert result.result == 3


def test_an_interrupt_inside_a_direct_call_reaches_the_outer_run(
    app: Celery, checkpoints: CheckpointStore
) -> None:
    ran: list[str] = []

    @app.task(base=ResumableTask, bind=True)
    def inner(self: Any) -> None:
        step("inner-a", ran.append, "inner-a")
        step("inner-b", ran.append, "inner-b")

    @app.task(base=ResumableTask, bind=True)
    def outer(self: Any) -> None:
        step("outer-a", ran.append, "outer-a")
        inner()  # a direct call: no task id of its own
        step("outer-b", ran.append, "outer-b")

    # Given a shutdown noticed inside the inner call
    with interrupt_when(
        lambda run, boundary: run.task.name == inner.name and boundary == "step_end"
    ):
        first = outer.apply()

    # Then the outer run saved and stopped like any interrupted run
    checkpoint = checkpoints.get(first.id)
    assert first.state == "IGNORED"
    assert checkpoint is not None and checkpoint.status == "interrupted"
    assert [s.name for s in checkpoint.finished_steps] == ["outer-a"]

    # And the next run resumes after the outer step that finished
    assert outer.apply(task_id=first.id).state == "SUCCESS"
    assert ran == ["outer-a", "inner-a", "inner-a", "inner-b", "outer-b"]


def test_a_direct_call_outside_a_run_is_never_stopped(app: Celery) -> None:
    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> int:
        return sum(iterate("loop", range(5)))

    with interrupt_when(lambda run, boundary: True):
        assert job() == 10


def test_a_lost_lease_is_not_swallowed_by_except_exception(
    app: Celery, checkpoints: CheckpointStore
) -> None:
    processed: list[int] = []

    @app.task(base=ResumableTask, bind=True, resumable_checkpoint_interval=0)
    def job(self: Any) -> None:
        for item in iterate("loop", range(10)):
            try:
                if item == 3:
                    # Given another run that takes the task over (this run's lease ran out)
                    expire_lease(checkpoints, self.request.id)
                    checkpoints.claim(self.request.id, self.name, "intruder", 60)
                processed.append(item)
            except Exception:  # noqa: BLE001 - a log-and-go-on loop, the point of the test
                continue

    # When the stale run reaches its next write
    result = job.apply()

    # Then it stops there, however broad the task's own except clauses
    assert result.state == "IGNORED"
    assert processed == [0, 1, 2, 3]
    assert issubclass(LeaseLostError, RunStopped) and not issubclass(LeaseLostError, Exception)
    assert issubclass(TaskInterrupted, RunStopped)
    checkpoint = checkpoints.get(result.id)
    assert checkpoint is not None and checkpoint.owner == "intruder"


def test_code_before_the_first_step_runs_under_the_lease(
    app: Celery, checkpoints: CheckpointStore
) -> None:
    claims: list[bool] = []

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        # Before any step, a second delivery of the same id cannot claim the task
        claims.append(checkpoints.claim(self.request.id, self.name, "second", 60).claimed)

    assert job.apply().state == "SUCCESS"
    assert claims == [False]


def test_a_step_mismatch_leaves_the_row_failed_and_free(
    app: Celery, checkpoints: CheckpointStore
) -> None:
    version = {"second": "load"}

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        step("extract", lambda: 1)
        step(version["second"], lambda: 2)

    with interrupt_when(lambda run, boundary: run.active == "load"):
        first = job.apply()
    # Given the task's code changed between deploys
    version["second"] = "transform"

    # When the next delivery runs
    mismatched = job.apply(task_id=first.id)

    # Then it fails, and the row is failed with its lease released and its progress kept
    assert mismatched.state == "FAILURE"
    assert isinstance(mismatched.result, StepMismatchError)
    checkpoint = checkpoints.get(first.id)
    assert checkpoint is not None
    assert (checkpoint.status, checkpoint.owner) == ("failed", None)
    assert [s.name for s in checkpoint.finished_steps] == ["extract"]
    # And once the code is right again, a new delivery of the failed id resumes
    version["second"] = "load"
    assert job.apply(task_id=first.id).state == "SUCCESS"


def expire_lease(checkpoints: CheckpointStore, task_id: str) -> None:
    """End the lease of ``task_id`` now, as if its run had stopped renewing it."""
    table = checkpoints.table
    with checkpoints.engine.begin() as connection:
        connection.execute(
            sa.update(table)
            .where(table.c.task_id == task_id)
            .values(lease_expires_at=sa.func.datetime("now", "-1 hour"))
        )


def test_another_task_under_a_completed_id_starts_fresh(
    app: Celery, checkpoints: CheckpointStore
) -> None:
    ran: list[str] = []

    @app.task(base=ResumableTask, bind=True)
    def first(self: Any) -> None:
        step("work", ran.append, "first")

    @app.task(base=ResumableTask, bind=True)
    def second(self: Any) -> None:
        step("work", ran.append, "second")

    # Given a completed task id, then another task under the same id (eager chains do this)
    done = first.apply()
    again = second.apply(task_id=done.id)

    # Then the second task runs its own steps; it does not skip them as completed
    assert again.state == "SUCCESS"
    assert ran == ["first", "second"]
    checkpoint = checkpoints.get(done.id)
    assert checkpoint is not None
    assert (checkpoint.task_name, checkpoint.status) == (second.name, "completed")


def test_a_task_calling_itself_directly_runs_inline(app: Celery) -> None:
    ran: list[int] = []

    @app.task(base=ResumableTask, bind=True)
    def countdown(self: Any, depth: int) -> int:
        step(f"level-{depth}", ran.append, depth)
        return countdown(depth - 1) if depth else 0  # type: ignore[no-any-return]

    # The nested call's request copies the caller's id; it must not wait for its own lease
    assert countdown.apply(args=(2,)).state == "SUCCESS"
    assert ran == [2, 1, 0]
