"""The checkpoint table and every SQL statement of celery-resumable.

Nothing else in the package builds SQL. Writes by a run are fenced on its lease owner
token: an UPDATE that matches no row means another run holds the task.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from ._engines import engine_for, password_of, safe_url
from ._records import STATUSES, Checkpoint, Claim, FinishedStep, State, Status
from .errors import CheckpointStoreError

__all__ = ["Checkpoint", "CheckpointStore", "Claim", "FinishedStep", "State", "Status"]

logger = logging.getLogger("celery_resumable.store")

_PURGE_EVERY = 600.0


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else value.replace(tzinfo=dt.UTC)


_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
_TIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _table(name: str) -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("task_id", sa.String(255), primary_key=True),
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
        sa.Index(f"ix_{name}_status_updated", "status", "updated_at"),
    )


class _Statements:
    """The statements a run executes, built once per store: SQLAlchemy caches their SQL."""

    def __init__(self, table: sa.Table) -> None:
        self.table = table
        c = table.c
        by_id = c.task_id == sa.bindparam("p_task_id")
        fenced = sa.and_(by_id, c.owner == sa.bindparam("p_owner"))
        self.select = sa.select(table).where(by_id)
        self.take = (
            sa.update(table)
            .where(
                by_id,
                c.status != "completed",
                sa.or_(c.owner.is_(None), c.lease_expires_at < sa.bindparam("p_now")),
            )
            .values(
                owner=sa.bindparam("p_owner"),
                lease_expires_at=sa.bindparam("p_expires"),
                status="running",
                updated_at=sa.bindparam("p_now"),
            )
        )
        self.save = (
            sa.update(table)
            .where(fenced)
            .values(
                status=sa.bindparam("p_status"),
                finished_steps=sa.bindparam("p_finished"),
                current_step=sa.bindparam("p_current"),
                cursor=sa.bindparam("p_cursor"),
                interruptions=sa.bindparam("p_interruptions"),
                owner=sa.bindparam("p_new_owner"),
                lease_expires_at=sa.bindparam("p_expires"),
                updated_at=sa.bindparam("p_now"),
            )
        )
        self.renew = (
            sa.update(table).where(fenced).values(lease_expires_at=sa.bindparam("p_expires"))
        )
        self.release = sa.update(table).where(fenced).values(owner=None, lease_expires_at=None)
        self._inserts: dict[str, sa.Executable] = {}

    def insert_if_absent(self, dialect: str) -> sa.Executable:
        """An INSERT that does nothing when the task's row exists, in ``dialect``'s SQL."""
        statement = self._inserts.get(dialect)
        if statement is None:
            if dialect == "postgresql":
                statement = postgresql.insert(self.table).on_conflict_do_nothing()
            elif dialect == "sqlite":
                statement = sqlite.insert(self.table).on_conflict_do_nothing()
            elif dialect in ("mysql", "mariadb"):
                statement = mysql.insert(self.table).prefix_with("IGNORE")
            else:
                raise CheckpointStoreError(
                    f"unsupported database {dialect!r}; use SQLite, PostgreSQL or MySQL/MariaDB"
                )
            self._inserts[dialect] = statement
        return statement


class CheckpointStore:
    """Reads and writes checkpoints in one SQL table.

    ``get``, ``list``, ``reset`` and ``purge`` are for operators; the run methods
    (``claim``, ``save``, ``renew``, ``complete``) are used by ResumableTask.
    """

    def __init__(
        self,
        url: str,
        table_name: str = "celery_resumable_checkpoints",
        *,
        create_tables: bool = True,
        keep_completed: float = 604800.0,
    ) -> None:
        self.url = url
        self.table_name = table_name
        self.table = _table(table_name)
        self.create_tables = create_tables
        self.keep_completed = keep_completed
        self._ready = False
        self._last_purge = 0.0
        self._password = password_of(url)
        self._statements = _Statements(self.table)
        # Engines of callers' connections whose database was seen to hold the table.
        self._tables_seen: weakref.WeakKeyDictionary[Engine, bool] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"CheckpointStore({safe_url(self.url)!r}, table={self.table_name!r})"

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine of the store (created on first use)."""
        with self._errors(None, "connect to"):
            return engine_for(self.url)

    # -- operators -----------------------------------------------------------------

    def get(self, task_id: str) -> Checkpoint | None:
        """Return the checkpoint of ``task_id``, or None when there is none."""
        with self._begin(task_id, "read from") as connection:
            result = connection.execute(self._statements.select, {"p_task_id": task_id})
            row = result.mappings().first()
        return None if row is None else _checkpoint(row)

    def list(
        self,
        *,
        status: Status | Sequence[Status] | None = None,
        task_name: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Checkpoint]:
        """Return checkpoints, most recently updated first, filtered by status and task name."""
        query = sa.select(self.table)
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            _check_statuses(statuses)
            query = query.where(self.table.c.status.in_(statuses))
        if task_name is not None:
            query = query.where(self.table.c.task_name == task_name)
        query = query.order_by(self.table.c.updated_at.desc(), self.table.c.task_id)
        query = query.limit(limit).offset(offset)
        with self._begin(None, "list the checkpoints of") as connection:
            return [_checkpoint(row) for row in connection.execute(query).mappings()]

    def reset(self, task_id: str) -> bool:
        """Delete the checkpoint of ``task_id`` so its next run starts over; True if one existed."""
        query = sa.delete(self.table).where(self.table.c.task_id == task_id)
        with self._begin(task_id, "reset the checkpoint in") as connection:
            return connection.execute(query).rowcount > 0

    def purge(
        self,
        *,
        older_than: float | None = None,
        status: Status | Sequence[Status] = "completed",
    ) -> int:
        """Delete rows of ``status`` untouched for ``older_than`` seconds (default keep_completed).

        Returns the number of rows deleted.
        """
        statuses = [status] if isinstance(status, str) else list(status)
        _check_statuses(statuses)
        age = self.keep_completed if older_than is None else older_than
        cutoff = _utcnow() - dt.timedelta(seconds=age)
        query = sa.delete(self.table).where(
            self.table.c.status.in_(statuses), self.table.c.updated_at < cutoff
        )
        with self._begin(None, "purge") as connection:
            return int(connection.execute(query).rowcount)

    # -- runs ----------------------------------------------------------------------

    def claim(self, task_id: str, task_name: str, owner: str, lease_seconds: float) -> Claim:
        """Take the lease of ``task_id`` unless a live run holds it or the task completed."""
        now = _utcnow()
        statements = self._statements
        with self._begin(task_id, "claim the task in") as connection:
            connection.execute(
                statements.insert_if_absent(connection.dialect.name),
                {
                    "task_id": task_id,
                    "task_name": task_name,
                    "status": "running",
                    "finished_steps": [],
                    "interruptions": 0,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            taken = connection.execute(
                statements.take,
                {
                    "p_task_id": task_id,
                    "p_now": now,
                    "p_owner": owner,
                    "p_expires": now + dt.timedelta(seconds=lease_seconds),
                },
            )
            row = connection.execute(statements.select, {"p_task_id": task_id})
            checkpoint = _checkpoint(row.mappings().one())
        return Claim(checkpoint, taken.rowcount == 1)

    def save(
        self,
        task_id: str,
        owner: str,
        state: State,
        *,
        status: Status = "running",
        lease_seconds: float | None = None,
    ) -> bool:
        """Write ``state`` if ``owner`` still holds the lease; False when it does not.

        With ``lease_seconds`` the lease is extended; without, it is released.
        """
        params = self._save_params(task_id, owner, state, status, lease_seconds)
        with self._begin(task_id, "save to") as connection:
            saved = connection.execute(self._statements.save, params).rowcount == 1
        if status == "completed":
            self._maybe_purge()
        return saved

    def save_in_transaction(
        self, connection: Connection, task_id: str, owner: str, state: State, lease_seconds: float
    ) -> bool:
        """Write ``state`` through the caller's ``connection``, in its open transaction.

        False when ``owner`` no longer holds the lease. Raises CheckpointStoreError when
        the connection's database has no checkpoint table holding the task.
        """
        action = "write the checkpoint through the given connection to"
        with self._errors(task_id, action):
            engine = connection.engine
            if engine not in self._tables_seen:
                if not self._holds(connection, task_id):
                    raise self._not_here(task_id)
                self._tables_seen[engine] = True
            params = self._save_params(task_id, owner, state, "running", lease_seconds)
            if connection.execute(self._statements.save, params).rowcount == 1:
                return True
            if not self._holds(connection, task_id):
                raise self._not_here(task_id)
            return False

    def _save_params(
        self,
        task_id: str,
        owner: str,
        state: State,
        status: Status,
        lease_seconds: float | None,
    ) -> dict[str, Any]:
        now = _utcnow()
        keep = lease_seconds is not None
        expires = None if lease_seconds is None else now + dt.timedelta(seconds=lease_seconds)
        params = {
            "p_task_id": task_id,
            "p_owner": owner,
            "p_status": status,
            "p_finished": [{"name": s.name, "result": s.result} for s in state.finished],
            "p_current": state.current_step,
            "p_cursor": state.cursor,
            "p_interruptions": state.interruptions,
            "p_new_owner": owner if keep else None,
            "p_expires": expires,
            "p_now": now,
        }
        return params

    def renew(self, task_id: str, owner: str, lease_seconds: float) -> bool:
        """Extend the lease of ``owner``; False when another run took it."""
        params = {
            "p_task_id": task_id,
            "p_owner": owner,
            "p_expires": _utcnow() + dt.timedelta(seconds=lease_seconds),
        }
        with self._begin(task_id, "renew the lease in") as connection:
            return bool(connection.execute(self._statements.renew, params).rowcount == 1)

    def release(self, task_id: str, owner: str) -> bool:
        """Give up the lease of ``owner`` without changing progress."""
        params = {"p_task_id": task_id, "p_owner": owner}
        with self._begin(task_id, "release the lease in") as connection:
            return bool(connection.execute(self._statements.release, params).rowcount == 1)

    def _not_here(self, task_id: str) -> CheckpointStoreError:
        return CheckpointStoreError(
            f"the database of the given connection has no checkpoint table "
            f"{self.table_name!r} holding this task; the _tx functions need the checkpoint "
            "table in the same database as your data (point resumable_store_url at it)",
            task_id,
        )

    def _holds(self, connection: Connection, task_id: str) -> bool:
        """Whether ``connection``'s database has this table with a row for ``task_id``."""
        if not sa.inspect(connection).has_table(self.table_name):
            return False
        return (
            connection.execute(self._statements.select, {"p_task_id": task_id}).first() is not None
        )

    # -- plumbing ------------------------------------------------------------------

    def _maybe_purge(self) -> None:
        now = time.monotonic()
        if now - self._last_purge < _PURGE_EVERY:
            return
        self._last_purge = now
        try:
            deleted = self.purge()
        except CheckpointStoreError as exc:
            logger.warning("could not purge completed checkpoints: %s", exc)
        else:
            if deleted:
                logger.info("purged %d completed checkpoints", deleted)

    @contextlib.contextmanager
    def _begin(self, task_id: str | None, action: str) -> Iterator[Connection]:
        self._ensure_table(task_id)
        with self._errors(task_id, action), self.engine.begin() as connection:
            yield connection

    def _ensure_table(self, task_id: str | None) -> None:
        if self._ready:
            return
        if self.create_tables:
            with self._errors(task_id, "create the table in"):
                try:
                    self.table.metadata.create_all(engine_for(self.url), checkfirst=True)
                except SQLAlchemyError:
                    # Another process may have created it between the check and the CREATE.
                    if not sa.inspect(engine_for(self.url)).has_table(self.table_name):
                        raise
        self._ready = True

    @contextlib.contextmanager
    def _errors(self, task_id: str | None, action: str) -> Iterator[None]:
        try:
            yield
        except CheckpointStoreError:
            raise
        except (SQLAlchemyError, OSError, ImportError) as exc:
            detail = _describe(exc)
            if self._password:
                detail = detail.replace(self._password, "***")
            raise CheckpointStoreError(
                f"could not {action} the checkpoint store {safe_url(self.url)} "
                f"(table {self.table_name!r}): {detail}",
                task_id,
            ) from None


def _describe(exc: BaseException) -> str:
    original = getattr(exc, "orig", None)
    text = str(original if original is not None else exc).strip()
    first_line = text.splitlines()[0] if text else type(exc).__name__
    return f"{type(original or exc).__name__}: {first_line}"[:500]


def _check_statuses(statuses: Sequence[str]) -> None:
    for status in statuses:
        if status not in STATUSES:
            raise ValueError(f"unknown checkpoint status {status!r}; use one of {STATUSES}")


def _checkpoint(row: Any) -> Checkpoint:
    return Checkpoint(
        task_id=row["task_id"],
        task_name=row["task_name"],
        status=row["status"],
        finished_steps=tuple(
            FinishedStep(item["name"], item["result"]) for item in row["finished_steps"]
        ),
        current_step=row["current_step"],
        cursor=row["cursor"],
        interruptions=row["interruptions"],
        owner=row["owner"],
        lease_expires_at=_aware(row["lease_expires_at"]),
        created_at=_aware(row["created_at"]),  # type: ignore[arg-type]
        updated_at=_aware(row["updated_at"]),  # type: ignore[arg-type]
    )
