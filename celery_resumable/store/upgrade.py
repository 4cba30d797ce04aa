"""Bringing a checkpoint table made by an earlier version up to date, altering only what
differs, so that an up-to-date table needs no right beyond reading and writing rows."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from celery_resumable.store.schema import MAX_TASK_ID

__all__ = ["upgrade"]


def upgrade(engine: Engine, checkpoints: sa.Table) -> None:
    """Bring a table created by an earlier version up to date.

    Only what differs is altered: a table already up to date needs no right beyond
    SELECT, INSERT, UPDATE and DELETE, and its first use does not wait behind open
    transactions as an ALTER would. Several workers may start at once: a change another
    process made first is not an error.
    """
    columns = _columns(engine, checkpoints.name)
    name = engine.dialect.identifier_preparer.quote(checkpoints.name)
    for added in ("request", "done", "total"):
        if added not in columns:
            kind = checkpoints.c[added].type.compile(dialect=engine.dialect)
            _alter(
                engine,
                f"ALTER TABLE {name} ADD COLUMN {added} {kind}",
                functools.partial(_has_column, engine, checkpoints.name, added),
            )
    if engine.dialect.name in ("mysql", "mariadb"):
        changes = _mysql_changes(engine, checkpoints.name)
        if changes:
            # One statement: the table is rebuilt once, however many columns change.
            _alter(
                engine,
                f"ALTER TABLE {name} {', '.join(changes)}",
                lambda: not _mysql_changes(engine, checkpoints.name),
            )


_MYSQL_TIMES = ("lease_expires_at", "created_at", "updated_at")
_MYSQL_COLUMNS = sa.text(
    "SELECT COLUMN_NAME AS name, COLLATION_NAME AS collation, DATA_TYPE AS data_type, "
    "DATETIME_PRECISION AS fsp, IS_NULLABLE AS nullable FROM information_schema.COLUMNS "
    "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :table_name"
)


def _mysql_changes(engine: Engine, table_name: str) -> list[str]:
    """The MODIFY clauses that bring a MySQL/MariaDB table's columns up to date.

    Read from information_schema, which reports the effective collation and precision:
    SQLAlchemy's reflection leaves out a column's collation when it is the table's
    default, so a table created with the binary collation as default would look wrong.
    """
    with engine.connect() as connection:
        rows = connection.execute(_MYSQL_COLUMNS, {"table_name": table_name}).mappings().all()
    described = {str(row["name"]).lower(): row for row in rows}
    changes = []
    task_id = described.get("task_id")
    if task_id is not None and task_id["collation"] != "utf8mb4_bin":
        changes.append(
            f"MODIFY task_id VARCHAR({MAX_TASK_ID}) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin "
            "NOT NULL"
        )
    # Version 0.1 may have made whole-second times, which judge leases to the second.
    for column in _MYSQL_TIMES:
        time = described.get(column)
        if time is None or str(time["data_type"]).lower() != "datetime":
            continue
        if time["fsp"] is not None and int(time["fsp"]) < 6:
            null = "NULL" if time["nullable"] == "YES" else "NOT NULL"
            changes.append(f"MODIFY {column} DATETIME(6) {null}")
    return changes


def _has_column(engine: Engine, table_name: str, column: str) -> bool:
    return column in _columns(engine, table_name)


def _columns(engine: Engine, table_name: str) -> dict[str, Any]:
    return {column["name"]: column for column in sa.inspect(engine).get_columns(table_name)}


def _alter(engine: Engine, statement: str, done_elsewhere: Callable[[], bool]) -> None:
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(statement))
    except SQLAlchemyError:
        if not done_elsewhere():
            raise
