"""Writes that do not grow, renewals in one statement, purges in batches."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from celery_resumable import CheckpointStore, FinishedStep
from celery_resumable.store import held
from celery_resumable.store import operations as _operations
from celery_resumable.store.records import State


def new_id() -> str:
    return str(uuid.uuid4())


def steps(*names: str) -> tuple[FinishedStep, ...]:
    return tuple(FinishedStep(name, {"step": name}) for name in names)


@pytest.fixture
def statements(store: CheckpointStore) -> Iterator[list[tuple[str, Any]]]:
    """The statements the store sends, with their parameters."""
    sent: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    sa.event.listen(store.engine, "before_cursor_execute", record)
    yield sent
    sa.event.remove(store.engine, "before_cursor_execute", record)


def test_a_cursor_write_sends_no_step_results(
    store: CheckpointStore, statements: list[tuple[str, Any]]
) -> None:
    # Given a row holding many finished steps
    task_id = new_id()
    store.claim(task_id, "t", "o", 60)
    finished = steps(*(f"s{i}" for i in range(200)))
    store.save(task_id, "o", State(finished, None, None, 0), lease_seconds=60)
    statements.clear()

    # When the run writes its cursor
    store.save(task_id, "o", State(finished, "loop", 7, 0), stored_steps=200, lease_seconds=60)

    # Then one statement went out, carrying no result
    assert len(statements) == 1
    assert "s199" not in str(statements[0][1])
    checkpoint = store.get(task_id)
    assert checkpoint is not None
    assert len(checkpoint.finished_steps) == 200
    assert (checkpoint.current_step, checkpoint.cursor) == ("loop", 7)


def test_a_step_write_appends_only_the_new_steps_once(
    store: CheckpointStore, statements: list[tuple[str, Any]]
) -> None:
    # Given a row holding two finished steps
    task_id = new_id()
    store.claim(task_id, "t", "o", 60)
    store.save(task_id, "o", State(steps("a", "b"), None, None, 0), lease_seconds=60)
    statements.clear()

    # When a third step finishes, and the same write is sent again (a lost answer)
    state = State(steps("a", "b", "c"), None, None, 0)
    for _ in range(2):
        assert store.save(task_id, "o", state, stored_steps=2, lease_seconds=60)

    # Then only the third step's result was sent, and it is stored once, in order
    assert all("'a'" not in str(params) for _, params in statements)
    checkpoint = store.get(task_id)
    assert checkpoint is not None
    assert checkpoint.finished_steps == steps("a", "b", "c")


def test_leases_of_many_runs_are_renewed_in_one_statement(
    store: CheckpointStore, statements: list[tuple[str, Any]]
) -> None:
    # Given 20 live runs and one whose lease another run took
    leases = [(new_id(), f"owner-{i}") for i in range(20)]
    for task_id, owner in leases:
        store.claim(task_id, "t", owner, 60)
    stale = (leases[0][0], "stale-owner")
    statements.clear()

    # When the lease keeper renews them all
    renewed = store.renew([*leases[1:], stale], 60)

    # Then one statement renewed the live ones, and one more found which was missing
    assert renewed == {task_id for task_id, _ in leases[1:]}
    assert len(statements) == 2
    statements.clear()
    assert store.renew(leases, 60) == {task_id for task_id, _ in leases}
    assert len(statements) == 1


def test_purge_deletes_in_bounded_batches(
    store: CheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 11 old completed rows and a purge batch of 4
    monkeypatch.setattr(_operations, "_PURGE_BATCH", 4)
    ids = [new_id() for _ in range(11)]
    for task_id in ids:
        store.claim(task_id, "t", "o", 60)
        store.save(task_id, "o", State((), None, None, 0), status="completed")
    time.sleep(0.05)

    # When they are purged
    deleted = store.purge(older_than=0.01)

    # Then all went, in batches
    assert deleted == 11
    assert store.list() == []


def test_a_runs_statements_use_the_connection_used_last_without_the_pool(
    store: CheckpointStore,
) -> None:
    # Given a store whose statements have run before, and two idle connections of its
    # URL, the second one given back last
    engine = store.engine
    store.claim("warm", "t", "o", 60)
    first, second = held.take(store.url, engine), held.take(store.url, engine)
    held.give_back(store.url, first, 10)
    held.give_back(store.url, second, 10)
    events: list[str] = []

    def connected(*_: object) -> None:
        events.append("connect")

    def checked_out(*_: object) -> None:
        events.append("checkout")

    sa.event.listen(engine, "connect", connected)
    sa.event.listen(engine, "checkout", checked_out)
    try:
        # When a run claims its task and writes twice
        store.claim("task-1", "t", "owner", 60)
        store.save("task-1", "owner", State((), "loop", 1, 0), lease_seconds=60)
        store.save("task-1", "owner", State((), "loop", 2, 0), lease_seconds=60)
        # Then no connection was made or checked out of the pool, and the one given
        # back last is still the next one taken (SQLite keeps its page cache warm)
        assert events == []
        assert held.take(store.url, engine) is second
    finally:
        sa.event.remove(engine, "connect", connected)
        sa.event.remove(engine, "checkout", checked_out)
        held.give_back(store.url, second, 10)
    assert store.get("task-1").cursor == 2  # type: ignore[union-attr]


_SESSION_ID = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}


def test_a_dropped_connection_drops_every_idle_one_of_its_url(store: CheckpointStore) -> None:
    engine = store.engine
    dialect = engine.dialect.name
    if dialect not in _SESSION_ID:
        pytest.skip("SQLite has no connection to drop")
    # Given two idle connections of the store's URL, both ended by the server (a restart)
    store.claim("warm", "t", "o", 60)
    idle = [held.take(store.url, engine), held.take(store.url, engine)]
    sessions = []
    for connection in idle:
        connection.cursor.execute(_SESSION_ID[dialect])
        sessions.append(connection.cursor.fetchall()[0][0])
        held.give_back(store.url, connection, 10)
    with engine.connect() as admin:
        for session in sessions:
            if dialect == "postgresql":
                admin.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": session})
            else:
                admin.execute(sa.text(f"KILL {int(session)}"))
    time.sleep(0.2)

    # When a run claims a task: the first statement finds its connection dropped
    claim = store.claim("task-1", "t", "owner", 60)

    # Then it ran again once on a new connection, not on the other dropped one
    assert claim.claimed
    taken = held.take(store.url, engine)
    try:
        assert all(taken is not connection for connection in idle)
    finally:
        held.give_back(store.url, taken, 10)
