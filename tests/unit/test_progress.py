"""A running task shows PROGRESS in the result backend; progress never fails a task."""

from __future__ import annotations

import time
from typing import Any

import pytest
from celery import Celery
from celery.result import AsyncResult

from celery_resumable import CheckpointStore, ResumableTask, iterate, step
from celery_resumable.testing import interrupt_at_cursor


def test_a_running_task_shows_its_step_cursor_and_counts(
    app: Celery, checkpoints: CheckpointStore
) -> None:
    seen: list[tuple[str, Any]] = []
    stored: list[tuple[int | None, int | None]] = []

    @app.task(base=ResumableTask, bind=True, resumable_checkpoint_interval=0)
    def job(self: Any) -> int:
        step("prepare", lambda: None)
        for item in iterate("loop", list(range(5))):
            if item == 3:
                result = AsyncResult(self.request.id, app=app)
                seen.append((result.state, result.info))
                row = checkpoints.get(self.request.id)
                assert row is not None
                stored.append((row.done, row.total))
        return 5

    # When the task runs
    assert job.apply().state == "SUCCESS"

    # Then, mid-loop, the result backend showed its progress
    assert seen == [
        (
            "PROGRESS",
            {
                "step": "loop",
                "cursor": 3,
                "finished_steps": ["prepare"],
                "done": 3,
                "total": 5,
                "current": 3,
                "percent": 60.0,
                "description": "step loop, cursor 3",
                "pending": False,
            },
        )
    ]
    assert stored == [(3, 5)]


def test_no_progress_for_a_task_that_ignores_its_result(app: Celery) -> None:
    states: list[str] = []

    @app.task(base=ResumableTask, bind=True, ignore_result=True, resumable_checkpoint_interval=0)
    def job(self: Any) -> None:
        for _ in iterate("loop", range(3)):
            states.append(AsyncResult(self.request.id, app=app).state)

    job.apply()

    assert states == ["PENDING", "PENDING", "PENDING"]


def test_progress_can_be_turned_off(app: Celery) -> None:
    app.conf.resumable_track_progress = False
    states: list[str] = []

    @app.task(base=ResumableTask, bind=True, resumable_checkpoint_interval=0)
    def job(self: Any) -> None:
        for _ in iterate("loop", range(3)):
            states.append(AsyncResult(self.request.id, app=app).state)

    job.apply()

    assert states == ["PENDING", "PENDING", "PENDING"]


def test_a_failing_result_backend_does_not_fail_the_task(
    app: Celery, caplog: pytest.LogCaptureFixture
) -> None:
    app.conf.result_backend = "redis://127.0.0.1:1/0"

    @app.task(base=ResumableTask, bind=True, resumable_checkpoint_interval=0)
    def job(self: Any) -> int:
        return sum(iterate("loop", range(4)))

    assert job.apply().get(propagate=False) == 6
    assert "could not publish the progress of task" in caplog.text


def test_an_interrupt_publishes_the_position_it_saved(
    app: Celery, checkpoints: CheckpointStore
) -> None:
    @app.task(base=ResumableTask, bind=True, resumable_checkpoint_interval=0.05)
    def job(self: Any) -> None:
        for _ in iterate("loop", range(1000)):
            time.sleep(0.002)

    # Given a run that published its progress now and then, stopped between two writes
    with interrupt_at_cursor("loop", lambda cursor: cursor == 500):
        result = job.apply()

    # Then the result backend shows the position the interrupt saved, not an older one
    checkpoint = checkpoints.get(result.id)
    assert checkpoint is not None and checkpoint.status == "interrupted"
    info = AsyncResult(result.id, app=app).info
    assert (info["cursor"], info["done"]) == (checkpoint.cursor, checkpoint.done) == (500, 500)
