"""Signals report steps started, finished and skipped, and runs interrupted and resumed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from celery_resumable import ResumableTask, iterate, signals, step
from celery_resumable.testing import interrupt_at_cursor


@pytest.fixture
def received() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    receivers = {}
    for name in ("step_started", "step_finished", "step_skipped", "task_interrupted",
                 "task_resumed"):  # fmt: skip

        def receiver(sender: Any, name: str = name, **kwargs: Any) -> None:
            kwargs.pop("signal", None)
            events.append((name, kwargs))

        receivers[name] = receiver
        getattr(signals, name).connect(receiver, weak=False)
    yield events
    for name, receiver in receivers.items():
        getattr(signals, name).disconnect(receiver)


def test_signals_of_an_interrupted_and_resumed_run(
    app: Celery, received: list[tuple[str, dict[str, Any]]]
) -> None:
    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        step("prepare", lambda: None)
        for _ in iterate("loop", range(3)):
            pass

    with interrupt_at_cursor("loop", 2):
        first = job.apply()
    job.apply(task_id=first.id)

    task_id = first.id
    assert received == [
        ("step_started", {"task_id": task_id, "step": "prepare", "cursor": None}),
        ("step_finished", {"task_id": task_id, "step": "prepare"}),
        ("step_started", {"task_id": task_id, "step": "loop", "cursor": None}),
        ("task_interrupted",
         {"task_id": task_id, "reason": "requested", "step": "loop", "saved": True}),
        ("task_resumed",
         {"task_id": task_id, "finished_steps": ["prepare"], "current_step": "loop"}),
        ("step_skipped", {"task_id": task_id, "step": "prepare"}),
        ("step_started", {"task_id": task_id, "step": "loop", "cursor": 2}),
        ("step_finished", {"task_id": task_id, "step": "loop"}),
    ]  # fmt: skip
