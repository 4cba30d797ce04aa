"""The checkpoint store at its edges: database clock, exact ids, faults, secrets, upgrades."""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from collections.abc import Callable
from typing import Any

import pymysql
import pytest
import sqlalchemy as sa
from celery import Celery
from sqlalchemy import exc as sa_exc

from celery_resumable import CheckpointStore, checkpoint_store
from celery_resumable.errors import CheckpointStoreError
from celery_resumable.store.execute import again
from celery_resumable.store.faults import is_conflict
from tests.conftest import drop_table


def new_id() -> str:
    return str(uuid.uuid4())


def database_now(store: CheckpointStore) -> float:
    """The database's clock, as seconds since the epoch (UTC)."""
    dialect = store.engine.dialect.name
    query = {
        "postgresql": "SELECT extract(epoch from statement_timestamp())",
        "sqlite": "SELECT (julianday('now') - 2440587.5) * 86400.0",
    }.get(dialect, "SELECT UNIX_TIMESTAMP(NOW(6))")
    with store.engine.connect() as connection:
        return float(connection.execute(sa.text(query)).scalar_one())


def test_leases_are_judged_on_the_database_clock_not_the_workers(
    store: CheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a run whose lease ends 30 s from now on the database's clock
    task_id = new_id()
    first = store.claim(task_id, "t", "owner-1", 30)
    expires = first.checkpoint.lease_expires_at
    assert expires is not None
    assert abs(expires.timestamp() - (database_now(store) + 30)) < 5

    # When a worker whose clock runs an hour ahead tries to claim the task
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 3600)
    second = store.claim(task_id, "t", "owner-2", 30)

    # Then the live lease is not taken
    assert not second.claimed
    assert second.checkpoint.owner == "owner-1"


def test_purge_keeps_the_rows_of_live_runs_unless_forced(store: CheckpointStore) -> None:
    # Given a live run that has not written for a while
    task_id = new_id()
    store.claim(task_id, "t", "o", 60)
    time.sleep(0.05)

    # When old running rows are purged, then purged with force
    kept = store.purge(older_than=0.01, status="running")
    forced = store.purge(older_than=0.01, status="running", force=True)

    # Then the live row survives the first and not the second
    assert kept == 0
    assert forced == 1
    assert store.get(task_id) is None


def lock_rows(url: str, table: str, task_ids: list[str]) -> Callable[[], None]:
    """Update ``task_ids`` in an open transaction; the returned function commits it."""
    engine = sa.create_engine(url)
    connection = engine.connect()
    transaction = connection.begin()
    update = sa.text(f"UPDATE {table} SET interruptions = interruptions WHERE task_id = :task_id")
    for task_id in task_ids:
        connection.execute(update, {"task_id": task_id})

    def commit() -> None:
        transaction.commit()
        connection.close()
        engine.dispose()

    return commit


# SQLite locks the whole database for a writer, not rows: two writers wait, they never
# deadlock, and a purge cannot pass a locked row.
ROW_LOCKING = pytest.mark.parametrize(
    "store_url",
    [
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ],
    indirect=True,
)


@ROW_LOCKING
def test_purge_takes_no_lock_on_the_rows_it_keeps(store: CheckpointStore, store_url: str) -> None:
    # Given an old completed row and a live row another transaction holds locked
    old, live = new_id(), new_id()
    store.claim(old, "t", "o-old", 60)
    store.mark(old, "o-old", "completed", 0)
    store.claim(live, "t", "o-live", 60)
    time.sleep(0.05)
    commit = lock_rows(store_url, store.table_name, [live])

    # When old rows are purged meanwhile
    try:
        started = time.monotonic()
        deleted = store.purge(older_than=0.01, status=["completed", "running"])
        took = time.monotonic() - started
    finally:
        commit()

    # Then the purge deleted the old row without waiting for the live one's lock
    assert deleted == 1
    assert took < 5.0  # a DELETE that waited for the lock would take the 10 s timeout
    assert store.get(old) is None
    assert store.get(live) is not None


def wait_for_a_lock_wait(connection: sa.Connection, timeout: float = 20.0) -> None:
    """Return once a statement of another connection waits for a row lock."""
    query = (
        "SELECT count(*) FROM pg_locks WHERE NOT granted"
        if connection.dialect.name == "postgresql"
        else "SELECT count(*) FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT'"
    )
    deadline = time.monotonic() + timeout
    with connection.engine.connect() as watcher:
        while not watcher.execute(sa.text(query)).scalar_one():
            assert time.monotonic() < deadline, "no statement came to wait for the lock"
            time.sleep(0.01)


@ROW_LOCKING
def test_a_statement_chosen_as_a_deadlock_victim_runs_again(
    store: CheckpointStore, store_url: str
) -> None:
    # Given two runs, and a transaction that has updated the second run's row (and more
    # rows, so that the database picks the store's lighter statement as the victim)
    first, second = f"a-{new_id()}", f"b-{new_id()}"
    others = [f"c-{new_id()}" for _ in range(6)]
    for task_id in [first, second, *others]:
        store.claim(task_id, "t", f"owner-{task_id}", 60)
    conflicts: list[BaseException] = []

    def seen(context: Any) -> None:
        if is_conflict(context.sqlalchemy_exception):
            conflicts.append(context.sqlalchemy_exception)

    sa.event.listen(store.engine, "handle_error", seen)
    engine = sa.create_engine(store_url)
    connection = engine.connect()
    transaction = connection.begin()
    # A real change: MySQL weighs a transaction by the rows it changed.
    update = sa.text(
        f"UPDATE {store.table_name} SET interruptions = interruptions + 1 WHERE task_id = :task_id"
    )
    for task_id in [*others, second]:
        connection.execute(update, {"task_id": task_id})

    # When one statement renews both leases (it locks the first row, then waits for the
    # second) and the transaction then updates the first row: a deadlock
    leases = [(first, f"owner-{first}"), (second, f"owner-{second}")]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        renewed = pool.submit(store.renew, leases, 60)
        wait_for_a_lock_wait(connection)
        assert not renewed.done()
        connection.execute(update, {"task_id": first})
        transaction.commit()
        connection.close()
        engine.dispose()

        # Then the database broke the deadlock by rolling the renewal back, and the
        # renewal, run again, renewed both leases
        assert renewed.result(timeout=30) == {first, second}
    sa.event.remove(store.engine, "handle_error", seen)
    assert conflicts


def _deadlock_victim() -> sa_exc.DBAPIError:
    return sa_exc.OperationalError(
        "UPDATE checkpoints", None, pymysql.err.OperationalError(1213, "Deadlock found")
    )


def test_a_first_try_chosen_as_a_deadlock_victim_runs_again_until_it_passes() -> None:
    # Given a statement whose first try (made by the caller) was a deadlock victim, and
    # whose second try is one too
    tries: list[int] = []

    def statement() -> str:
        tries.append(1)
        if len(tries) == 1:
            raise _deadlock_victim()
        return "written"

    # When it goes to again with that first failure, then it runs until it passes
    assert again(statement, _deadlock_victim()) == "written"
    assert len(tries) == 2


def test_a_first_failure_that_running_again_would_not_cure_is_raised_as_it_is() -> None:
    refused = sa_exc.DataError(
        "INSERT INTO checkpoints", None, pymysql.err.DataError(1406, "Data too long")
    )
    tries: list[int] = []
    with pytest.raises(sa_exc.DataError) as raised:
        again(lambda: tries.append(1), refused)
    assert raised.value is refused
    assert tries == []


def test_a_first_try_on_a_dropped_connection_runs_once_more_only() -> None:
    def dropped() -> sa_exc.DBAPIError:
        lost = pymysql.err.OperationalError(2013, "Lost connection")
        return sa_exc.OperationalError("SELECT", None, lost, connection_invalidated=True)

    tries: list[int] = []

    def statement() -> None:
        tries.append(1)
        raise dropped()

    with pytest.raises(sa_exc.OperationalError) as raised:
        again(statement, dropped())
    assert raised.value.connection_invalidated
    assert len(tries) == 1  # the caller's try, then one more on a new connection


def test_task_ids_compare_exactly(store: CheckpointStore) -> None:
    # Given ids that differ only by case or accent
    ids = ["Abc-1", "abc-1", "café-1", "cafe-1"]

    # When each is claimed
    claims = [store.claim(task_id, "t", f"owner-{i}", 60) for i, task_id in enumerate(ids)]

    # Then each has a row of its own
    assert all(claim.claimed for claim in claims)
    assert sorted(c.task_id for c in store.list()) == sorted(ids)


def test_an_over_long_task_id_is_refused_not_truncated(store: CheckpointStore) -> None:
    with pytest.raises(CheckpointStoreError, match="256 characters long") as raised:
        store.claim("x" * 256, "t", "o", 60)

    assert raised.value.transient is False
    assert store.list() == []


@pytest.mark.parametrize("name", ["x" * 46, "bad-name", "1table", ""])
def test_a_table_name_that_cannot_work_everywhere_is_refused_up_front(name: str) -> None:
    with pytest.raises(ValueError, match="resumable_table_name"):
        CheckpointStore("sqlite://", name)
    app = Celery("names")
    app.conf.resumable_table_name = name
    with pytest.raises(ValueError, match="resumable_table_name"):
        checkpoint_store(app)


def test_a_missing_table_is_a_permanent_error(store_url: str) -> None:
    store = CheckpointStore(store_url, f"absent_{uuid.uuid4().hex[:8]}", create_tables=False)

    with pytest.raises(CheckpointStoreError) as raised:
        store.claim(new_id(), "t", "o", 60)

    assert raised.value.transient is False


def test_an_unreachable_store_is_a_transient_error() -> None:
    store = CheckpointStore("postgresql+psycopg://celery@127.0.0.1:1/test")

    with pytest.raises(CheckpointStoreError) as raised:
        store.claim("task-1", "t", "o", 60)

    assert raised.value.transient is True


def test_a_password_in_the_query_string_never_shows() -> None:
    url = "postgresql+psycopg://celery@127.0.0.1:1/test?password=s3cr3t-pw&sslmode=disable"
    store = CheckpointStore(url)

    with pytest.raises(CheckpointStoreError) as raised:
        store.claim("task-42", "t", "o", 60)

    assert "s3cr3t-pw" not in str(raised.value)
    assert "s3cr3t-pw" not in repr(store)
    assert "password=***" in repr(store)


def test_a_table_of_version_0_1_is_upgraded_on_first_use(store_url: str, table_name: str) -> None:
    # Given a checkpoint table as version 0.1 created it, with a row in it
    engine = sa.create_engine(store_url)
    json_type = "JSONB" if engine.dialect.name == "postgresql" else "JSON"
    time_type = "DATETIME(6)" if engine.dialect.name in ("mysql", "mariadb") else "TIMESTAMP"
    cursor = engine.dialect.identifier_preparer.quote("cursor")
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                f"CREATE TABLE {table_name} (task_id VARCHAR(255) PRIMARY KEY, "
                f"task_name VARCHAR(255) NOT NULL, status VARCHAR(16) NOT NULL, "
                f"finished_steps {json_type} NOT NULL, current_step VARCHAR(255), "
                f"{cursor} {json_type}, interruptions INTEGER NOT NULL, owner VARCHAR(64), "
                f"lease_expires_at {time_type}, created_at {time_type} NOT NULL, "
                f"updated_at {time_type} NOT NULL)"
            )
        )
        connection.execute(
            sa.text(
                f"INSERT INTO {table_name} VALUES ('Old-1', 't', 'interrupted', "
                "'[{\"name\": \"a\", \"result\": 1}]', 'b', '5', 1, NULL, NULL, "
                "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        )
    engine.dispose()
    try:
        # When the new version uses it
        store = CheckpointStore(store_url, table_name)
        resumed = store.claim("Old-1", "t", "o", 60)
        other = store.claim("old-1", "t", "o2", 60, {"args": [1], "kwargs": {}})

        # Then the old row resumes and ids compare exactly
        assert resumed.claimed
        found = resumed.checkpoint
        assert (found.current_step, found.cursor, found.interruptions) == ("b", 5, 1)
        assert [s.name for s in found.finished_steps] == ["a"]
        assert other.claimed and other.checkpoint.finished_steps == ()
        recorded = store.get("old-1")
        assert recorded is not None and recorded.request is not None
    finally:
        drop_table(store_url, table_name)
