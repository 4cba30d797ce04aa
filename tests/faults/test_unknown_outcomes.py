"""A write whose outcome the run cannot learn (its answer lost, and the database out of
reach for the second try) leaves the run unsure of what the row holds: its next write
reads the row first instead of guessing, so no finished step is dropped."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from celery_resumable import ResumableTask, step
from celery_resumable.testing import interrupt_after_step
from tests.faults.conftest import Faulty

# The write appending step "b", as each driver sends it (PyMySQL quotes JSON inline).
NAMED_B = {"postgres": b'"name": "b"', "mysql": b'\\"name\\": \\"b\\"'}


@pytest.fixture
def app(faulty: Faulty) -> Iterator[Celery]:
    celery_app = Celery(f"unknown_{uuid.uuid4().hex[:8]}", set_as_current=False)
    celery_app.conf.update(
        resumable_store_url=faulty.url,
        resumable_table_name=faulty.table,
        resumable_checkpoint_interval=0,
    )
    yield celery_app
    celery_app.close()


def test_a_step_finished_after_an_unknown_write_is_stored(app: Celery, faulty: Faulty) -> None:
    ran: list[str] = []

    def work(name: str) -> str:
        ran.append(name)
        if name == "b":
            # The write that appends step "b" commits, its answer is lost, and the
            # store cannot be reached for the second try.
            faulty.proxy.fail_on(NAMED_B[faulty.server], "after", then_cut=True)
        if name == "c":
            faulty.proxy.restore()
        return name

    @app.task(base=ResumableTask, bind=True, shared=False)
    def job(self: Any) -> None:
        for name in ("a", "b", "c", "d"):
            step(name, work, name)

    # Given a run whose write after step "b" has an unknown outcome, interrupted after "c"
    with interrupt_after_step("c"):
        first = job.apply()
    assert faulty.proxy.struck.is_set()
    checkpoint = faulty.direct.get(first.id)
    assert checkpoint is not None
    assert [s.name for s in checkpoint.finished_steps] == ["a", "b", "c"]

    # When the task runs again
    ran.clear()
    job.apply(task_id=first.id)

    # Then it resumes after "c": no finished step runs twice
    assert ran == ["d"]
