"""The lease keeper renews every run of a process in one statement per tick."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery

from celery_resumable import CheckpointStore, ResumableTask
from celery_resumable.config import config_for
from celery_resumable.run.context import Run
from celery_resumable.store.store import store_for
from celery_resumable.testing import stop_lease_keeper
from celery_resumable.worker import lease_keeper
from celery_resumable.worker.lease_keeper import LeaseKeeper, keeper


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
        keeper.remove(run.checkpoint.lease.door)
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
    one.add(claimed[0].checkpoint.lease.door)
    for run in claimed:
        fifty.add(run.checkpoint.lease.door)
    before = {c.task_id: c.lease_expires_at for c in store.list(limit=100)}
    store.purge_due()  # the purge that a tick runs every ten minutes is done

    # When each keeper ticks once
    try:
        statements = (count_updates(store, one.tick), count_updates(store, fifty.tick))
    finally:
        for run in claimed:
            one.remove(run.checkpoint.lease.door)
            fifty.remove(run.checkpoint.lease.door)

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
        ticker.add(run.checkpoint.lease.door)
    # Given an operator who force-reset one task and another run that took a second one
    store.reset("task-0", force=True)
    table = store.table
    with store.engine.begin() as connection:
        connection.execute(sa.update(table).where(table.c.task_id == "task-1").values(owner="x"))

    # When the keeper ticks
    ticker.tick()
    for run in claimed[:3]:
        ticker.remove(run.checkpoint.lease.door)

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


class Holder:
    """A claimed lease, renewed by the keeper under test; records when it was renewed."""

    def __init__(self, store: CheckpointStore, task_id: str, seconds: float) -> None:
        self.owner = f"owner-{task_id}"
        store.claim(task_id, "job", self.owner, seconds)
        self.lease = (store, task_id, self.owner, seconds)
        self.renewed: list[float] = []

    def lease_renewed(self, sent: float) -> None:
        self.renewed.append(time.monotonic())

    def lease_missing(self) -> None:
        raise AssertionError("the lease was not found")


def test_in_a_worker_a_new_run_is_renewed_within_a_period_without_waking_the_keeper(
    store: CheckpointStore,
) -> None:
    # Given a keeper kept between runs (as in a worker) that has seen one short run end
    # (before its thread could look at it), and has been idle since
    ticker = LeaseKeeper()
    ticker.stay(True)
    first = Holder(store, "first", 0.6)
    ticker.add(first)  # type: ignore[arg-type]
    ticker.remove(first)  # type: ignore[arg-type]
    thread = ticker._thread
    try:
        time.sleep(0.3)

        # When a run with the same lease arrives while the keeper sleeps
        second = Holder(store, "second", 0.6)
        added = time.monotonic()
        ticker.add(second)  # type: ignore[arg-type]
        woken = ticker._wake.is_set()
        deadline = added + 5
        while not second.renewed and time.monotonic() < deadline:
            time.sleep(0.01)
        ticker.remove(second)  # type: ignore[arg-type]
    finally:
        ticker.stay(False)
        if thread is not None:
            thread.join(5)

    # Then the keeper was not woken, and renewed the new run before its lease ran out
    assert not woken
    assert second.renewed
    assert second.renewed[0] - added < 0.6
    assert thread is not None and not thread.is_alive()


def test_eager_runs_in_succession_share_one_thread_which_ends_when_idle(
    app: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lease_keeper, "IDLE_SECONDS", 0.3)
    stop_lease_keeper()

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> int:
        thread = keeper._thread
        assert thread is not None and thread.is_alive()
        return id(thread)

    # When tasks run eagerly one after another, outside a worker
    seen = {job.apply().get() for _ in range(20)}
    thread = keeper._thread

    # Then one keeper thread served them all, and outlives them for a while
    assert thread is not None and seen == {id(thread)}
    assert thread.is_alive()
    # And it ends on its own once idle
    thread.join(5)
    assert not thread.is_alive()
    assert keeper._thread is None


def test_stop_lease_keeper_ends_the_idle_thread_at_once_but_not_a_running_one(
    app: Celery,
) -> None:
    during: list[bool] = []

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        stop_lease_keeper()  # a run is in progress: the thread stays
        during.append(keeper._thread is not None and keeper._thread.is_alive())

    job.apply().get()
    thread = keeper._thread
    assert during == [True]
    assert thread is not None and thread.is_alive()

    started = time.monotonic()
    stop_lease_keeper()

    assert not thread.is_alive()
    assert keeper._thread is None
    assert time.monotonic() - started < 1.0
