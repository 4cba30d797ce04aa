"""The checkpoint table: its columns and indexes, per database."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.elements import ColumnElement

from celery_resumable.errors import CheckpointStoreError
from celery_resumable.store.records import STATUSES, Status

__all__ = ["MAX_TASK_ID", "check_task_id", "indexes", "status_in", "statuses_of", "table"]

MAX_TASK_ID = 255

_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
_TIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
# Task ids compare exactly: MySQL/MariaDB's default collations would make "Abc" and
# "abc" (or "é" and "e") one row.
_TASK_ID = sa.String(MAX_TASK_ID).with_variant(
    mysql.VARCHAR(MAX_TASK_ID, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
)
_REQUEST = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")

# An empty list of finished steps, written into the SQL: as a bound value the driver
# would encode it as JSON again at every execution.
_NO_STEPS = sa.literal_column("'[]'", _JSON)


def table(name: str) -> sa.Table:
    """The checkpoint table named ``name``."""
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("task_id", _TASK_ID, primary_key=True),
        sa.Column("task_name", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("finished_steps", _JSON, nullable=False),
        sa.Column("current_step", sa.String(255), nullable=True),
        sa.Column("cursor", _JSON, nullable=True),
        sa.Column("interruptions", sa.Integer, nullable=False, default=0),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", _TIME, nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.Column("request", _REQUEST, nullable=True),
        sa.Column("done", sa.Integer, nullable=True),
        sa.Column("total", sa.Integer, nullable=True),
        # PostgreSQL: the completed rows, nearly all of a table, are read by age only
        # (purge, ``list``), through an index of their last write alone; the few rows of
        # the other statuses through one of status and time. Elsewhere one index of
        # status and time serves both.
        _only(
            ("sqlite", "mysql", "mariadb"),
            sa.Index(f"ix_{name}_status_updated", "status", "updated_at"),
        ),
        _only(
            ("postgresql",),
            sa.Index(
                f"ix_{name}_completed",
                "updated_at",
                postgresql_where=sa.text("status = 'completed'"),
            ),
        ),
        _only(
            ("postgresql",),
            sa.Index(
                f"ix_{name}_open",
                "status",
                "updated_at",
                postgresql_where=sa.text("status <> 'completed'"),
            ),
        ),
    )


def indexes(checkpoints: sa.Table, dialect: str) -> list[sa.Index]:
    """The indexes of ``checkpoints`` made on ``dialect``."""
    return [index for index in checkpoints.indexes if dialect in index.info["dialects"]]


def statuses_of(status: Status | Sequence[Status]) -> list[Status]:
    """``status`` as a list of statuses; raises ValueError for an unknown one."""
    statuses = [status] if isinstance(status, str) else list(status)
    for value in statuses:
        if value not in STATUSES:
            raise ValueError(f"unknown checkpoint status {value!r}; use one of {STATUSES}")
    return statuses


def status_in(checkpoints: sa.Table, status: Status | Sequence[Status]) -> ColumnElement[bool]:
    """The rows of ``status`` (one or several), written into the SQL: PostgreSQL's planner
    then picks the partial index of those statuses in every plan, generic ones included.
    Raises ValueError for an unknown status."""
    statuses = statuses_of(status)
    return checkpoints.c.status.in_([sa.literal_column(f"'{one}'") for one in statuses])


def _only(dialects: tuple[str, ...], index: sa.Index) -> sa.Index:
    """``index``, made on ``dialects`` only."""
    index.info["dialects"] = dialects

    def made_on(*args: Any, dialect: Dialect, **kwargs: Any) -> bool:
        return dialect.name in dialects

    index.ddl_if(callable_=made_on)
    return index


def check_task_id(task_id: str) -> None:
    """Raise CheckpointStoreError unless ``task_id`` is a non-empty string the table holds."""
    if not isinstance(task_id, str) or not task_id:
        raise CheckpointStoreError(f"a task id must be a non-empty string, not {task_id!r}")
    if len(task_id) > MAX_TASK_ID:
        raise CheckpointStoreError(
            f"the task id is {len(task_id)} characters long; the checkpoint table holds "
            f"ids of at most {MAX_TASK_ID}",
            task_id[:40] + "…",
        )
