"""Upgrading the checkpoint table on MariaDB/MySQL: only what differs, with the least rights."""

from __future__ import annotations

import concurrent.futures
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.schema import CreateTable

from celery_resumable import CheckpointStore
from celery_resumable.store.engines import dispose_engine, engine_for
from celery_resumable.store.records import State
from celery_resumable.store.schema import indexes, table
from tests.conftest import drop_table
from tests.services import MYSQL_URL, require

pytestmark = pytest.mark.mysql

BINARY_DEFAULT = " DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
TIMES = ("lease_expires_at", "created_at", "updated_at")


@pytest.fixture
def mysql_url(table_name: str) -> Iterator[str]:
    """The MariaDB/MySQL URL of the tests; the test's table is dropped after it."""
    require("mysql")
    yield MYSQL_URL
    drop_table(MYSQL_URL, table_name)


def execute(url: str, *statements: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(sa.text(statement))
    finally:
        engine.dispose()


def create_0_1_table(url: str, table_name: str, time_type: str, options: str = "") -> None:
    """A checkpoint table as version 0.1 created it, with a row in it."""
    execute(
        url,
        f"CREATE TABLE {table_name} (task_id VARCHAR(255) PRIMARY KEY, "
        "task_name VARCHAR(255) NOT NULL, status VARCHAR(16) NOT NULL, "
        "finished_steps JSON NOT NULL, current_step VARCHAR(255), "
        f"`cursor` JSON, interruptions INTEGER NOT NULL, owner VARCHAR(64), "
        f"lease_expires_at {time_type}, created_at {time_type} NOT NULL, "
        f"updated_at {time_type} NOT NULL){options}",
        f"INSERT INTO {table_name} VALUES ('Old-1', 't', 'interrupted', "
        "'[{\"name\": \"a\", \"result\": 1}]', 'b', '5', 1, NULL, NULL, "
        "'2026-01-01 00:00:00', '2026-01-01 00:00:00')",
    )


def create_current_table(url: str, table_name: str, options: str = "") -> None:
    """The table of this version, its DDL followed by ``options``."""
    checkpoints = table(table_name)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            ddl = str(CreateTable(checkpoints).compile(dialect=engine.dialect)).strip()
            connection.execute(sa.text(ddl + options))
            for index in indexes(checkpoints, engine.dialect.name):
                index.create(connection)
    finally:
        engine.dispose()


def columns(url: str, table_name: str) -> dict[str, dict[str, Any]]:
    """The columns of ``table_name`` as information_schema describes them."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT COLUMN_NAME, COLLATION_NAME, DATA_TYPE, DATETIME_PRECISION, "
                    "IS_NULLABLE FROM information_schema.COLUMNS "
                    "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :name"
                ),
                {"name": table_name},
            ).mappings()
            return {row["COLUMN_NAME"]: dict(row) for row in rows}
    finally:
        engine.dispose()


@pytest.fixture
def statements() -> Iterator[tuple[str, list[str]]]:
    """A URL of the test database with an engine of its own, and the statements it runs."""
    require("mysql")
    url = (
        sa.engine.make_url(MYSQL_URL)
        .update_query_dict({"program_name": f"test_{uuid.uuid4().hex[:8]}"})
        .render_as_string(hide_password=False)
    )
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(str(args[2]))

    # The engine is created here, before the store's first use, so the listener sees all.
    sa.event.listen(engine_for(url), "before_cursor_execute", record)
    yield url, seen
    dispose_engine(url)


@pytest.fixture
def limited_user(table_name: str) -> Iterator[Callable[[], str]]:
    """Make a user allowed SELECT, INSERT, UPDATE and DELETE on the test's table alone.

    The table must exist first: MariaDB grants rights on existing tables only.
    """
    require("mysql")
    name = f"u_{uuid.uuid4().hex[:12]}"
    password = uuid.uuid4().hex
    hosts = ("%", "localhost")
    created: list[str] = []

    def create() -> str:
        for host in hosts:
            execute(MYSQL_URL, f"CREATE USER '{name}'@'{host}' IDENTIFIED BY '{password}'")
            created.append(host)
            execute(
                MYSQL_URL,
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON test.{table_name} TO '{name}'@'{host}'",
            )
        url = sa.make_url(MYSQL_URL).set(username=name, password=password)
        return url.render_as_string(hide_password=False)

    yield create
    for host in created:
        execute(MYSQL_URL, f"DROP USER '{name}'@'{host}'")


def alters(seen: list[str]) -> list[str]:
    return [statement for statement in seen if statement.lstrip().upper().startswith("ALTER")]


@pytest.mark.parametrize("options", ["", BINARY_DEFAULT], ids=["server-default", "binary-default"])
def test_a_user_with_row_rights_alone_uses_a_correct_table(
    mysql_url: str, table_name: str, limited_user: Callable[[], str], options: str
) -> None:
    # Given a table of this version, created by a user with every right
    if options:
        create_current_table(mysql_url, table_name, options)
    else:
        CheckpointStore(mysql_url, table_name).get("nothing")

    user_url = limited_user()

    # When a user with SELECT, INSERT, UPDATE and DELETE alone runs a task on it
    store = CheckpointStore(user_url, table_name)
    try:
        claim = store.claim("Task-1", "t", "o", 60)
        saved = store.save("Task-1", "o", State((), "b", {"n": 1}, 0), lease_seconds=60)
        checkpoint = store.get("Task-1")
    finally:
        dispose_engine(user_url)

    # Then it works
    assert claim.claimed
    assert saved
    assert checkpoint is not None and checkpoint.cursor == {"n": 1}


def test_a_table_whose_default_collation_is_binary_is_not_altered(
    mysql_url: str, table_name: str, statements: tuple[str, list[str]]
) -> None:
    # Given a table of this version whose default collation is utf8mb4_bin
    create_current_table(mysql_url, table_name, BINARY_DEFAULT)
    url, seen = statements

    # When a store uses it
    store = CheckpointStore(url, table_name)
    assert store.claim("Task-1", "t", "o", 60).claimed

    # Then no ALTER runs
    assert alters(seen) == []


def test_a_0_1_table_with_a_binary_default_collation_only_gets_its_new_columns(
    mysql_url: str, table_name: str, statements: tuple[str, list[str]]
) -> None:
    # Given a 0.1 table whose default collation, and so task_id's, is utf8mb4_bin
    create_0_1_table(mysql_url, table_name, "DATETIME(6)", BINARY_DEFAULT)
    url, seen = statements

    # When a store uses it
    store = CheckpointStore(url, table_name)
    assert store.claim("Old-1", "t", "o", 60).claimed

    # Then the missing columns are added and nothing else is altered
    changes = alters(seen)
    assert len(changes) == 3
    assert all(" ADD COLUMN " in change for change in changes)


def test_a_0_1_table_with_whole_second_times_gets_microsecond_times(
    mysql_url: str, table_name: str
) -> None:
    # Given a 0.1 table whose times are DATETIME, whole seconds
    create_0_1_table(mysql_url, table_name, "DATETIME")

    # When a store uses it
    store = CheckpointStore(mysql_url, table_name)
    resumed = store.claim("Old-1", "t", "o", 60)

    # Then its times keep microseconds, nullable as they were, and the old row resumes
    described = columns(mysql_url, table_name)
    assert {name: described[name]["DATETIME_PRECISION"] for name in TIMES} == dict.fromkeys(
        TIMES, 6
    )
    assert {name: described[name]["IS_NULLABLE"] for name in TIMES} == {
        "lease_expires_at": "YES",
        "created_at": "NO",
        "updated_at": "NO",
    }
    assert described["task_id"]["COLLATION_NAME"] == "utf8mb4_bin"
    assert resumed.claimed
    assert resumed.checkpoint.current_step == "b"
    kept = store.get("Old-1")
    assert kept is not None and kept.created_at.year == 2026


def test_processes_upgrading_a_0_1_table_at_once_tolerate_each_other(
    mysql_url: str, table_name: str
) -> None:
    # Given a 0.1 table with whole-second times and the server's default collation
    create_0_1_table(mysql_url, table_name, "DATETIME")
    stores = [CheckpointStore(mysql_url, table_name) for _ in range(4)]
    start = threading.Barrier(len(stores))

    # When four stores use it for the first time at once
    def first_use(store: CheckpointStore) -> bool:
        start.wait()
        return store.get("Old-1") is not None

    with concurrent.futures.ThreadPoolExecutor(len(stores)) as pool:
        found = list(pool.map(first_use, stores))

    # Then every one works, and the table is upgraded once and for all
    assert found == [True] * len(stores)
    described = columns(mysql_url, table_name)
    assert described["task_id"]["COLLATION_NAME"] == "utf8mb4_bin"
    assert all(described[name]["DATETIME_PRECISION"] == 6 for name in TIMES)
    assert {"request", "done", "total"} <= described.keys()
