"""A run's open transaction holds its checkpoint row locked: the lease keeper leaves that
row alone, so the other runs of the process keep their leases, and the holder counts the
lease its own transactional write extended."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery

from celery_resumable import ResumableTask, iterate, set_step_cursor_tx, step_cursor
from tests.conftest import drop_table
from tests.services import MYSQL_URL, POSTGRES_URL, require

LEASE = 2.0

SERVERS = [
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("mysql", marks=pytest.mark.mysql),
]


@pytest.fixture(params=SERVERS)
def url(request: pytest.FixtureRequest) -> str:
    require(request.param)
    return POSTGRES_URL if request.param == "postgres" else MYSQL_URL


@pytest.fixture
def app(url: str) -> Iterator[Celery]:
    table = f"ckpt_{uuid.uuid4().hex[:12]}"
    celery_app = Celery(f"leases_{uuid.uuid4().hex[:8]}", set_as_current=False)
    celery_app.conf.update(
        resumable_store_url=url,
        resumable_table_name=table,
        resumable_checkpoint_interval=None,
        resumable_lease_seconds=LEASE,
    )
    yield celery_app
    celery_app.close()
    drop_table(url, table)


@pytest.fixture
def engine(url: str) -> Iterator[sa.Engine]:
    database = sa.create_engine(url)
    yield database
    database.dispose()


def tasks(app: Celery, engine: sa.Engine, holding: float) -> tuple[Any, Any]:

    @app.task(base=ResumableTask, bind=True, shared=False)
    def holder(self: Any) -> str:
        def load(cursor: int | None) -> int:
            with engine.begin() as connection:
                set_step_cursor_tx(connection, 1)
                time.sleep(holding)  # the transaction holds the checkpoint row
            return 1

        step_cursor("load", load)
        for _ in iterate("after", range(int(LEASE * 10))):
            time.sleep(0.1)
        return "done"

    @app.task(base=ResumableTask, bind=True, shared=False)
    def bystander(self: Any) -> str:
        # Kept alive by lease renewals alone: it writes nothing until it ends.
        for _ in iterate("wait", range(int(LEASE * 25))):
            time.sleep(0.1)
        return "done"

    return holder, bystander


def run_together(first: Any, second: Any) -> tuple[Any, Any]:
    results: dict[str, Any] = {}

    def run(name: str, task: Any) -> None:
        results[name] = task.apply()

    threads = [
        threading.Thread(target=run, args=("first", first)),
        threading.Thread(target=run, args=("second", second)),
    ]
    for thread in threads:
        thread.start()
        time.sleep(0.2)
    for thread in threads:
        thread.join(60)
    return results["first"], results["second"]


def test_a_long_transaction_does_not_hold_back_the_renewals_of_other_runs(
    app: Celery, engine: sa.Engine
) -> None:
    # Given a run keeping its transaction (and so its row lock) open past its lease
    holder, bystander = tasks(app, engine, holding=LEASE * 1.3)

    # When another run of the process lives on lease renewals meanwhile
    bystanding, _ = run_together(bystander, holder)

    # Then that run kept its lease and finished
    assert bystanding.state == "SUCCESS", bystanding.state


def test_a_transaction_shorter_than_the_lease_keeps_its_run_going(
    app: Celery, engine: sa.Engine
) -> None:
    # Given a run whose transaction stays open for most of its lease
    holder, bystander = tasks(app, engine, holding=LEASE * 0.9)

    # When it commits and goes on, beside another run
    holding, bystanding = run_together(holder, bystander)

    # Then neither was stopped at its lease deadline
    assert holding.state == "SUCCESS", holding.state
    assert bystanding.state == "SUCCESS", bystanding.state
