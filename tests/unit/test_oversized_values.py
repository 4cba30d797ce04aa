"""A value larger than the database takes in one statement (MariaDB's
max_allowed_packet) fails the task at once with an error naming the step and the size,
instead of failing every write in silence and running the step again and again."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from celery_resumable import CheckpointStore, ResumableTask, iterate, step
from celery_resumable.errors import CheckpointStoreError
from celery_resumable.testing import interrupt_after_step
from tests.conftest import drop_table
from tests.services import MYSQL_URL, require

pytestmark = pytest.mark.mysql

BIG = 20 * 1024 * 1024  # more than MariaDB's default max_allowed_packet (16 MiB)


@pytest.fixture
def app() -> Iterator[Celery]:
    require("mysql")
    table = f"ckpt_{uuid.uuid4().hex[:12]}"
    celery_app = Celery(f"oversized_{uuid.uuid4().hex[:8]}", set_as_current=False)
    celery_app.conf.update(
        resumable_store_url=MYSQL_URL,
        resumable_table_name=table,
        resumable_checkpoint_interval=0,
        resumable_max_interruptions=2,
    )
    yield celery_app
    celery_app.close()
    drop_table(MYSQL_URL, table)


def job_of(app: Celery, ran: list[str]) -> Any:
    @app.task(base=ResumableTask, bind=True, shared=False)
    def job(self: Any) -> None:
        step("small", lambda: ran.append("small") or 1)
        step("download", lambda: ran.append("download") or "x" * BIG)
        for _ in iterate("rest", range(3)):
            ran.append("rest")

    return job


def test_a_step_result_too_large_for_the_store_fails_the_task_naming_the_step(
    app: Celery,
) -> None:
    ran: list[str] = []
    job = job_of(app, ran)

    # When a step returns more than the database takes in one statement
    result = job.apply()

    # Then the task failed at once, saying which step and how large
    assert result.state == "FAILURE"
    error = result.result
    assert isinstance(error, CheckpointStoreError) and not error.transient
    message = str(error)
    assert "'download'" in message and "max_allowed_packet" in message
    assert f"step 'download' ({BIG + 2:,} bytes)" in message  # the JSON string
    assert ran == ["small", "download"]
    # And the row says so, its lease released, its last good progress kept
    checkpoint = CheckpointStore(MYSQL_URL, app.conf.resumable_table_name).get(result.id)
    assert checkpoint is not None
    assert (checkpoint.status, checkpoint.lease_expires_at) == ("failed", None)
    assert [s.name for s in checkpoint.finished_steps] == ["small"]


def test_an_interrupt_that_cannot_store_a_step_result_fails_the_task(app: Celery) -> None:
    ran: list[str] = []
    app.conf.resumable_checkpoint_interval = None  # the interrupt write is the first
    job = job_of(app, ran)

    # When the run is stopped right after the oversized step
    with interrupt_after_step("download"):
        result = job.apply()

    # Then it fails with the clear error instead of going back to run the step again
    assert result.state == "FAILURE"
    assert "'download'" in str(result.result)
    checkpoint = CheckpointStore(MYSQL_URL, app.conf.resumable_table_name).get(result.id)
    assert checkpoint is not None and checkpoint.status == "failed"
    assert ran == ["small", "download"]
