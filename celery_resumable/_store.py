"""The checkpoint store: reads and fenced writes of the checkpoint table.

Every statement comes from ``_statements``; this module runs them and turns rows into
records. Writes by a run are fenced on its lease owner token: an UPDATE that matches no
row means the run lost its lease (or an operator reset the task).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from celery import Celery
from kombu.utils import json as kombu_json
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from ._config import ResumableConfig, config_for
from ._engines import engine_for, safe_url, secrets_of
from ._faults import translated
from ._records import STATUSES, Checkpoint, Claim, FinishedStep, State, Status
from ._statements import MAX_TASK_ID, Statements, check_table_name, table
from .errors import CheckpointBusyError, CheckpointStoreError

__all__ = ["CheckpointStore", "checkpoint_store", "store_for"]

logger = logging.getLogger("celery_resumable.store")

_PURGE_EVERY = 600.0
_MAX_REQUEST_BYTES = 1_000_000


class CheckpointStore:
    """Reads and writes checkpoints in one SQL table.

    ``get``, ``list``, ``reset`` and ``purge`` are for operators; ``claim``, ``save``,
    ``mark``, ``renew``, ``release`` and ``forget`` are the writes of a run, each fenced
    on the run's lease owner token.
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
        self.table_name = check_table_name(table_name)
        self.table = table(table_name)
        self.create_tables = create_tables
        self.keep_completed = keep_completed
        self._ready = False
        self._last_purge = 0.0
        self._secrets = secrets_of(url)
        self._statements: dict[str, Statements] = {}
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
        with self._begin(task_id, "read from") as (connection, sql):
            row = connection.execute(sql.select, {"p_task_id": task_id}).mappings().first()
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
            query = query.where(self.table.c.status.in_(_statuses(status)))
        if task_name is not None:
            query = query.where(self.table.c.task_name == task_name)
        query = query.order_by(self.table.c.updated_at.desc(), self.table.c.task_id)
        query = query.limit(limit).offset(offset)
        with self._begin(None, "list the checkpoints of") as (connection, _):
            return [_checkpoint(row) for row in connection.execute(query).mappings()]

    def reset(self, task_id: str, force: bool = False) -> bool:
        """Delete the checkpoint of ``task_id`` so its next run starts over; True if one existed.

        Raises CheckpointBusyError when a live run holds the task's lease, unless
        ``force``: the run then stops at its next boundary (its next write or lease
        renewal finds the row gone) and goes back on the queue to start over.
        """
        with self._begin(task_id, "reset the checkpoint in") as (connection, sql):
            statement = sql.reset_forced if force else sql.reset
            if connection.execute(statement, {"p_task_id": task_id}).rowcount > 0:
                return True
            exists = connection.execute(sql.select, {"p_task_id": task_id}).first()
        if exists is not None:
            raise CheckpointBusyError(task_id)
        return False

    def purge(
        self,
        *,
        older_than: float | None = None,
        status: Status | Sequence[Status] = "completed",
        force: bool = False,
    ) -> int:
        """Delete rows of ``status`` untouched for ``older_than`` seconds (default keep_completed).

        A row's age counts from its last write or the end of its lease, whichever is
        later, so the row of a live run is never old. ``force`` judges rows by their last
        write alone and deletes those of live runs too: such a run stops at its next
        boundary and goes back on the queue to start over. Returns the number deleted.
        """
        statuses = _statuses(status)
        age = self.keep_completed if older_than is None else older_than
        with self._begin(None, "purge") as (connection, sql):
            old = sql.older_forced if force else sql.older
            query = sa.delete(self.table).where(self.table.c.status.in_(statuses), old)
            return int(connection.execute(query, {"p_age": float(age)}).rowcount)

    # -- runs ----------------------------------------------------------------------

    def claim(
        self,
        task_id: str,
        task_name: str,
        owner: str,
        lease_seconds: float,
        request: Mapping[str, Any] | None = None,
    ) -> Claim:
        """Take the lease of ``task_id`` unless a live run holds it or the task completed.

        Creates the row on the task's first run, recording ``request`` (its arguments
        and routing, for ``celery resumable retry``) when it can be stored as JSON.
        """
        _check_task_id(task_id)
        params = {
            "p_task_id": task_id,
            "p_task_name": task_name,
            "p_owner": owner,
            "p_lease": float(lease_seconds),
            "p_request": _request_json(request),
        }
        with self._connect(task_id, "claim the task in") as (connection, sql):
            result = connection.execute(sql.claim, params)
            row = result.mappings().first() if sql.claim_returns_row else None
            if row is None:
                row = connection.execute(sql.select, {"p_task_id": task_id}).mappings().one()
        checkpoint = _checkpoint(row)
        return Claim(checkpoint, checkpoint.owner == owner)

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
        with self._connect(task_id, "save to") as (connection, sql):
            statement = sql.save_release if lease_seconds is None else sql.save_keep
            params = _save_params(task_id, owner, state, status, lease_seconds)
            saved = connection.execute(statement, params).rowcount == 1
        if status == "completed":
            self._maybe_purge()
        return saved

    def mark(self, task_id: str, owner: str, status: Status, interruptions: int) -> bool:
        """Set the status and interruption count, release the lease, keep the progress."""
        params = {
            "p_task_id": task_id,
            "p_owner": owner,
            "p_status": status,
            "p_interruptions": interruptions,
        }
        with self._connect(task_id, "save to") as (connection, sql):
            return bool(connection.execute(sql.mark, params).rowcount == 1)

    def save_in_transaction(
        self, connection: Connection, task_id: str, owner: str, state: State, lease_seconds: float
    ) -> bool:
        """Write ``state`` through the caller's ``connection``, in its open transaction.

        False when ``owner`` no longer holds the lease. Raises CheckpointStoreError when
        the connection's database has no checkpoint table holding the task; an error of
        the caller's database stays reachable as its ``__cause__``.
        """
        action = "write the checkpoint through the given connection to " + self._where()
        with translated(task_id, action, self._secrets, chain=True):
            sql = self._sql(connection.dialect.name)
            engine = connection.engine
            if engine not in self._tables_seen:
                if not self._holds(connection, sql, task_id):
                    raise self._not_here(task_id)
                self._tables_seen[engine] = True
            params = _save_params(task_id, owner, state, "running", lease_seconds)
            if connection.execute(sql.save_keep, params).rowcount == 1:
                return True
            if not self._holds(connection, sql, task_id):
                raise self._not_here(task_id)
            return False

    def renew(self, task_id: str, owner: str, lease_seconds: float) -> bool:
        """Extend the lease of ``owner``; False when another run took it (or it was reset)."""
        params = {"p_task_id": task_id, "p_owner": owner, "p_lease": float(lease_seconds)}
        with self._connect(task_id, "renew the lease in") as (connection, sql):
            return bool(connection.execute(sql.renew, params).rowcount == 1)

    def release(self, task_id: str, owner: str) -> bool:
        """Give up the lease of ``owner`` without changing progress."""
        params = {"p_task_id": task_id, "p_owner": owner}
        with self._connect(task_id, "release the lease in") as (connection, sql):
            return bool(connection.execute(sql.release, params).rowcount == 1)

    def forget(self, task_id: str, owner: str) -> bool:
        """Delete the row while ``owner`` holds its lease (a task replaced by another)."""
        params = {"p_task_id": task_id, "p_owner": owner}
        with self._connect(task_id, "delete the checkpoint in") as (connection, sql):
            return bool(connection.execute(sql.forget, params).rowcount == 1)

    def exists(self, task_id: str) -> bool:
        """Whether the task has a row (a fenced write that failed: lease lost, or reset)."""
        with self._connect(task_id, "read from") as (connection, sql):
            return connection.execute(sql.owner, {"p_task_id": task_id}).first() is not None

    # -- plumbing ------------------------------------------------------------------

    def _not_here(self, task_id: str) -> CheckpointStoreError:
        return CheckpointStoreError(
            f"the database of the given connection has no checkpoint table "
            f"{self.table_name!r} holding this task; the _tx functions need the checkpoint "
            "table in the same database as your data (point resumable_store_url at it)",
            task_id,
        )

    def _holds(self, connection: Connection, sql: Statements, task_id: str) -> bool:
        """Whether ``connection``'s database has this table with a row for ``task_id``."""
        if not sa.inspect(connection).has_table(self.table_name):
            return False
        return connection.execute(sql.select, {"p_task_id": task_id}).first() is not None

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

    def _sql(self, dialect: str) -> Statements:
        statements = self._statements.get(dialect)
        if statements is None:
            statements = self._statements[dialect] = Statements(self.table, dialect)
        return statements

    @contextlib.contextmanager
    def _begin(self, task_id: str | None, action: str) -> Iterator[tuple[Connection, Statements]]:
        """A connection in a transaction, for the operators' reads and deletes."""
        self._ensure_table(task_id)
        with self._errors(task_id, action), self.engine.begin() as connection:
            yield connection, self._sql(connection.dialect.name)

    @contextlib.contextmanager
    def _connect(self, task_id: str | None, action: str) -> Iterator[tuple[Connection, Statements]]:
        """A connection in autocommit: each statement of a run commits on its own."""
        self._ensure_table(task_id)
        with self._errors(task_id, action), self.engine.connect() as connection:
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            yield connection, self._sql(connection.dialect.name)

    def _ensure_table(self, task_id: str | None) -> None:
        if self._ready:
            return
        if self.create_tables:
            with self._errors(task_id, "create the table in"):
                engine = engine_for(self.url)
                try:
                    self.table.metadata.create_all(engine, checkfirst=True)
                except SQLAlchemyError:
                    # Another process may have created it between the check and the CREATE.
                    if not sa.inspect(engine).has_table(self.table_name):
                        raise
                _upgrade(engine, self.table)
        self._ready = True

    def _where(self) -> str:
        return f"the checkpoint store {safe_url(self.url)} (table {self.table_name!r})"

    def _errors(self, task_id: str | None, action: str) -> contextlib.AbstractContextManager[None]:
        return translated(task_id, f"{action} {self._where()}", self._secrets)


def _upgrade(engine: Engine, checkpoints: sa.Table) -> None:
    """Bring a table created by an earlier version up to date."""
    inspector = sa.inspect(engine)
    columns = {column["name"]: column for column in inspector.get_columns(checkpoints.name)}
    preparer = engine.dialect.identifier_preparer
    name = preparer.quote(checkpoints.name)
    with engine.begin() as connection:
        if "request" not in columns:
            kind = checkpoints.c.request.type.compile(dialect=engine.dialect)
            connection.execute(sa.text(f"ALTER TABLE {name} ADD COLUMN request {kind}"))
        collation = getattr(columns["task_id"]["type"], "collation", None)
        if engine.dialect.name in ("mysql", "mariadb") and collation != "utf8mb4_bin":
            connection.execute(
                sa.text(
                    f"ALTER TABLE {name} MODIFY task_id VARCHAR({MAX_TASK_ID}) "
                    "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL"
                )
            )


def _check_task_id(task_id: str) -> None:
    if not isinstance(task_id, str) or not task_id:
        raise CheckpointStoreError(f"a task id must be a non-empty string, not {task_id!r}")
    if len(task_id) > MAX_TASK_ID:
        raise CheckpointStoreError(
            f"the task id is {len(task_id)} characters long; the checkpoint table holds "
            f"ids of at most {MAX_TASK_ID}",
            task_id[:40] + "…",
        )


def _save_params(
    task_id: str, owner: str, state: State, status: Status, lease_seconds: float | None
) -> dict[str, Any]:
    return {
        "p_task_id": task_id,
        "p_owner": owner,
        "p_status": status,
        "p_finished": [{"name": s.name, "result": s.result} for s in state.finished],
        "p_current": state.current_step,
        "p_cursor": state.cursor,
        "p_interruptions": state.interruptions,
        "p_lease": None if lease_seconds is None else float(lease_seconds),
    }


def _request_json(request: Mapping[str, Any] | None) -> str | None:
    """The request as kombu JSON (typed values kept), or None when it cannot be stored."""
    if request is None:
        return None
    try:
        text = str(kombu_json.dumps(dict(request)))  # type: ignore[no-untyped-call]
    except (TypeError, ValueError):
        return None
    return text if len(text) <= _MAX_REQUEST_BYTES else None


def request_of(checkpoint: Checkpoint) -> dict[str, Any] | None:
    """The recorded request of a checkpoint: ``args``, ``kwargs`` and routing options."""
    if checkpoint.request is None:
        return None
    try:
        value = kombu_json.loads(checkpoint.request)  # type: ignore[no-untyped-call]
    except (TypeError, ValueError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _statuses(status: Status | Sequence[Status]) -> list[Status]:
    statuses = [status] if isinstance(status, str) else list(status)
    for value in statuses:
        if value not in STATUSES:
            raise ValueError(f"unknown checkpoint status {value!r}; use one of {STATUSES}")
    return statuses


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
        request=row["request"],
    )


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else value.replace(tzinfo=dt.UTC)


_STORES: dict[tuple[str, str, bool, float], CheckpointStore] = {}


def store_for(config: ResumableConfig) -> CheckpointStore:
    """Return the store for ``config``, one per URL and table in a process."""
    key = (config.store_url, config.table_name, config.create_tables, config.keep_completed)
    store = _STORES.get(key)
    if store is None:
        store = CheckpointStore(
            config.store_url,
            config.table_name,
            create_tables=config.create_tables,
            keep_completed=config.keep_completed,
        )
        _STORES[key] = store
    return store


def checkpoint_store(app: Celery) -> CheckpointStore:
    """Return the checkpoint store configured by ``app.conf`` (``resumable_store_url``).

    The store reads and manages checkpoints: ``get(task_id)``, ``list(...)``,
    ``reset(task_id, force=False)`` and ``purge(...)``.
    """
    return store_for(config_for(app))
