"""The checkpoint table's indexes: on PostgreSQL the completed rows are indexed by their
last write alone and the other statuses by status and time, and purge and ``list`` read
through them; elsewhere one index of status and time serves both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from celery_resumable import CheckpointStore
from celery_resumable.store.schema import indexes, status_in, table
from tests.conftest import drop_table
from tests.services import POSTGRES_URL, require


@pytest.fixture
def postgres_store(table_name: str) -> Iterator[CheckpointStore]:
    """A store on PostgreSQL, its table dropped after the test."""
    require("postgres")
    store = CheckpointStore(POSTGRES_URL, table_name)
    yield store
    drop_table(POSTGRES_URL, table_name)


def _indexes(store: CheckpointStore) -> dict[str, tuple[list[str], str | None]]:
    found = sa.inspect(store.engine).get_indexes(store.table_name)
    return {
        str(index["name"]): (
            [str(name) for name in index["column_names"]],
            index.get("dialect_options", {}).get("postgresql_where"),
        )
        for index in found
    }


def _plan(store: CheckpointStore, statement: Any) -> str:
    """PostgreSQL's plan of ``statement``, sequential scans ruled out: an index the
    statement cannot use shows as a sequential scan all the same."""
    with store.engine.connect() as connection:
        connection.exec_driver_sql("SET enable_seqscan = off")
        sql = statement.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True})
        rows = connection.exec_driver_sql(f"EXPLAIN {sql}").scalars()
        return "\n".join(rows)


def test_the_table_has_the_indexes_of_its_database(store: CheckpointStore) -> None:
    store.get("task-1")  # the table is made on first use
    made = _indexes(store)
    name = store.table_name
    if store.engine.dialect.name == "postgresql":
        assert made == {
            f"ix_{name}_completed": (["updated_at"], "((status)::text = 'completed'::text)"),
            f"ix_{name}_open": (["status", "updated_at"], "((status)::text <> 'completed'::text)"),
        }
    else:
        assert {key: columns for key, (columns, _) in made.items()} == {
            f"ix_{name}_status_updated": ["status", "updated_at"]
        }


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite", "mysql", "mariadb"])
def test_the_indexes_made_on_each_database_are_the_ones_named(dialect: str) -> None:
    names = {index.name for index in indexes(table("t"), dialect)}
    if dialect == "postgresql":
        assert names == {"ix_t_completed", "ix_t_open"}
    else:
        assert names == {"ix_t_status_updated"}


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("status", "index"), [("completed", "completed"), ("failed", "open"), ("running", "open")]
)
def test_purge_finds_the_old_rows_of_each_status_through_its_index(
    postgres_store: CheckpointStore, status: str, index: str
) -> None:
    store = postgres_store
    store.get("task-1")
    with store.engine.connect() as connection:
        sql = store._seam.sql(connection.dialect)
    for forced in (False, True):
        query = sql.purge_candidates(status, forced, 500).params(p_age=86400.0)
        plan = _plan(store, query)
        # The index is read from the age asked on, not walked whole
        assert f"Index Scan using ix_{store.table_name}_{index} " in plan
        assert "Index Cond: " in plan and "updated_at < " in plan.split("Index Cond: ")[1]


@pytest.mark.postgres
def test_the_newest_completed_rows_are_listed_through_their_index(
    postgres_store: CheckpointStore,
) -> None:
    store = postgres_store
    store.get("task-1")
    t = store.table
    query = (
        sa.select(t)
        .where(status_in(t, ["completed"]))
        .order_by(t.c.updated_at.desc(), t.c.task_id)
        .limit(50)
    )
    plan = _plan(store, query)
    assert f"Index Scan Backward using ix_{store.table_name}_completed " in plan


def test_an_unknown_status_is_refused_before_any_sql_is_made() -> None:
    with pytest.raises(ValueError, match="unknown checkpoint status 'done'"):
        status_in(table("t"), ["done"])


@pytest.mark.postgres
def test_a_table_made_with_the_earlier_index_works_and_moves_as_the_docs_say(
    postgres_store: CheckpointStore,
) -> None:
    store = postgres_store
    name = store.table_name
    # Given a table made by an earlier version: its one index of status and time
    engine = store.engine
    with engine.begin() as connection:
        connection.execute(sa.schema.CreateTable(store.table))
        connection.exec_driver_sql(
            f"CREATE INDEX ix_{name}_status_updated ON {name} (status, updated_at)"
        )
    assert set(_indexes(store)) == {f"ix_{name}_status_updated"}

    # Then runs complete and old rows are purged on it
    assert store.claim("task-1", "t", "owner-1", 60).claimed
    assert store.complete("task-1", "owner-1", 0)
    assert store.claim("task-2", "t", "owner-2", 60).claimed
    assert store.purge(older_than=0) == 1
    assert store.get("task-1") is None and store.get("task-2") is not None

    # And the statements of docs/configuration.md move it to the indexes of this version
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for statement in _moving_statements(name):
            connection.exec_driver_sql(statement)
    assert _indexes(store) == {
        f"ix_{name}_completed": (["updated_at"], "((status)::text = 'completed'::text)"),
        f"ix_{name}_open": (["status", "updated_at"], "((status)::text <> 'completed'::text)"),
    }


def _moving_statements(name: str) -> list[str]:
    """The statements docs/configuration.md gives, for table ``name``."""
    docs = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    after = docs.read_text().split("two smaller ones, without locking out the runs", 1)[1]
    block = after.split("```sql\n", 1)[1].split("```", 1)[0]
    sql = block.replace("celery_resumable_checkpoints", name)
    return [statement.strip() for statement in sql.split(";") if statement.strip()]
