"""The lease keeper renews every run of a process in one statement per tick."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery

from celery_resumable import CheckpointStore, ResumableTask
from celery_resumable._config import config_for
from celery_resumable._context import Run
from celery_resumable._lease import LeaseKeeper, keeper
from celery_resumable._store import store_for


@pytest.fixture
def runs(store_url: str, table_name: str) -> Iterator[tuple[CheckpointStore, list[Run]]]:
    """Fifty claimed runs of one task, on each database, left out of the process's keeper."""
    app = Celery("keeper", broker="memory://")
    app.conf.update(resumable_store_url=store_url, resumable_table_name=table_name)

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        pass

    config = config_for(app, job)
    store = store_for(config)
    claimed = []
    for number in range(50):
        run = Run(job, f"task-{number}", config, store)
        run.claim()
        keeper.remove(run)
        claimed.append(run)
    yield store, claimed
    store.table.drop(store.engine)


def count_updates(store: CheckpointStore, tick: Any) -> int:
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", record)
    try:
        tick()
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", record)
    return len(sent)


def test_one_statement_renews_one_run_or_fifty(runs: tuple[CheckpointStore, list[Run]]) -> None:
    store, claimed = runs
    one, fifty = LeaseKeeper(), LeaseKeeper()
    one.add(claimed[0])
    for run in claimed:
        fifty.add(run)
    before = {c.task_id: c.lease_expires_at for c in store.list(limit=100)}
    store.purge_due()  # the purge that a tick runs every ten minutes is done

    # When each keeper ticks once
    try:
        statements = (count_updates(store, one.tick), count_updates(store, fifty.tick))
    finally:
        for run in claimed:
            one.remove(run)
            fifty.remove(run)

    # Then each sent one statement, and every lease moved forward
    assert statements == (1, 1)
    after = {c.task_id: c.lease_expires_at for c in store.list(limit=100)}
    assert all(after[task_id] > before[task_id] for task_id in before)  # type: ignore[operator]


def test_a_run_whose_lease_was_taken_learns_it_at_the_next_tick(
    runs: tuple[CheckpointStore, list[Run]],
) -> None:
    store, claimed = runs
    ticker = LeaseKeeper()
    for run in claimed[:3]:
        ticker.add(run)
    # Given an operator who force-reset one task and another run that took a second one
    store.reset("task-0", force=True)
    table = store.table
    with store.engine.begin() as connection:
        connection.execute(sa.update(table).where(table.c.task_id == "task-1").values(owner="x"))

    # When the keeper ticks
    ticker.tick()
    for run in claimed[:3]:
        ticker.remove(run)

    # Then the first stops to start over, the second stops as a stale run, the third goes on
    stops = []
    for run in claimed[:3]:
        try:
            run.check_stop("cursor")
        except BaseException as exc:  # noqa: BLE001 - the run-stopping exceptions
            stops.append(f"{type(exc).__name__}:{getattr(exc, 'reason', '')}")
        else:
            stops.append("running")
    assert stops == ["TaskInterrupted:reset", "LeaseLostError:", "running"]
