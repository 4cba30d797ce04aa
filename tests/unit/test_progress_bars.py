"""The PROGRESS info carries the keys celery-progress's bars read, beside our own."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery
from celery.result import AsyncResult

from celery_resumable import ResumableTask, iterate, set_cursor, step, step_cursor

celery_progress = pytest.importorskip("celery_progress.backend")


def test_a_known_total_gives_current_total_and_percent(app: Celery) -> None:
    seen: list[dict[str, Any]] = []

    @app.task(base=ResumableTask, bind=True, shared=False, resumable_checkpoint_interval=0)
    def job(self: Any) -> int:
        step("prepare", lambda: None)
        for item in iterate("import", list(range(8))):
            if item == 3:
                seen.append(
                    celery_progress.Progress(AsyncResult(self.request.id, app=app)).get_info()
                )
        return 8

    # When the task runs
    assert job.apply().state == "SUCCESS"

    # Then, mid-loop, celery-progress read a bar it can draw, and our keys are there too
    [info] = seen
    assert info["state"] == "PROGRESS"
    assert info["complete"] is False
    progress = info["progress"]
    assert progress["current"] == 3
    assert progress["total"] == 8
    assert progress["percent"] == 37.5
    assert progress["pending"] is False
    assert progress["description"] == "step import, cursor 3"
    assert progress["step"] == "import"
    assert progress["cursor"] == 3
    assert progress["done"] == 3
    assert progress["finished_steps"] == ["prepare"]


def test_an_unknown_total_gives_percent_zero(app: Celery) -> None:
    seen: list[dict[str, Any]] = []

    @app.task(base=ResumableTask, bind=True, shared=False, resumable_checkpoint_interval=0)
    def job(self: Any) -> None:
        def walk(cursor: dict[str, Any] | None) -> None:
            for page in range(3):
                set_cursor({"page": page})
                if page == 2:
                    result = AsyncResult(self.request.id, app=app)
                    seen.append(celery_progress.Progress(result).get_info()["progress"])

        step_cursor("walk", walk)

    assert job.apply().state == "SUCCESS"

    [progress] = seen
    assert progress["current"] == 3
    assert progress["total"] is None
    assert progress["percent"] == 0
    assert progress["pending"] is False
    assert progress["description"] == 'step walk, cursor {"page": 2}'
