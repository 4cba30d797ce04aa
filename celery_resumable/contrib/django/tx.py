"""Checkpoint writes inside a Django transaction (``transaction.atomic()``).

The fenced UPDATE runs on Django's own cursor, compiled once per statement for the
SQLAlchemy dialect of that connection (``%s`` placeholders, parameters processed as
SQLAlchemy would). The run learns how the transaction ended through
``transaction.on_commit``: Django calls the callback when the outermost atomic block
commits, and drops it when the block, or the savepoint it was registered in, rolls back.
The callback is referenced by Django alone, so dropping it frees it at once and its
finalizer tells the run of the rollback, before the ``atomic`` block has exited.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

from django.db import Error as DjangoDatabaseError
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.transaction import TransactionManagementError
from django.utils.connection import ConnectionProxy
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect

from celery_resumable.codec.encode import encode
from celery_resumable.contrib.django.database import dialect_of
from celery_resumable.errors import CheckpointStoreError, NotInStepError
from celery_resumable.run.context import Run, TxChange
from celery_resumable.store.faults import is_transient
from celery_resumable.store.prepared import Outcome, Prepared
from celery_resumable.store.store import CheckpointStore

__all__ = ["is_django_connection", "write"]


def is_django_connection(conn: object) -> bool:
    """Whether ``conn`` is ``django.db.connection`` or one of ``django.db.connections``."""
    return isinstance(conn, BaseDatabaseWrapper | ConnectionProxy)


def write(run: Run, conn: Any, function: str, finish: bool, value: object, what: str) -> None:
    """Write the running step's cursor or finish through Django connection ``conn``."""
    # django.db.connection is a proxy of this thread's connection of its alias.
    connection = conn if isinstance(conn, BaseDatabaseWrapper) else connections[conn.alias]
    if not connection.in_atomic_block:
        raise TransactionManagementError(
            f"{function}() needs a transaction: call it inside "
            f"`with transaction.atomic(using={connection.alias!r}):` so that the "
            "checkpoint commits with your writes"
        )
    step = run.active
    if step is None:
        raise NotInStepError(function)
    encoded = encode(value, f"{what} of step {step!r}")
    # Validates the call and stops the run here, before anything is written.
    change = run.tx_change(function, finish, encoded)
    store = run.store
    if store is None or run.task_id is None or not run.claimed:
        return  # a direct call: nothing is persisted, like every other write
    if not _save(store, connection, run, change):
        run.tx_lost()
    run.tx_written(change)
    _on_end(connection, run, change)


# Databases (per store) seen to hold the checkpoint table: checked once per process.
_tables_seen: weakref.WeakKeyDictionary[CheckpointStore, set[tuple[Any, ...]]] = (
    weakref.WeakKeyDictionary()
)


def _save(store: CheckpointStore, connection: Any, run: Run, change: TxChange) -> bool:
    task_id = run.task_id or "?"
    settings = connection.settings_dict
    database = (connection.alias, settings.get("NAME"), settings.get("HOST"), settings.get("PORT"))
    seen = _tables_seen.setdefault(store, set())
    try:
        dialect = dialect_of(connection)
        with connection.cursor() as cursor:
            saved = store.save_through(
                dialect,
                _Executor(cursor, dialect),
                lambda name: name in connection.introspection.table_names(cursor),
                task_id,
                run.owner,
                change.state,
                run.lease_seconds,
                run.stored_steps,
                table_seen=database in seen,
            )
    except DjangoDatabaseError as exc:
        raise _translated(exc, connection, task_id) from exc
    seen.add(database)
    return saved


# Statements compiled for a Django connection's dialect, by statement and dialect.
_compiled: dict[tuple[int, int], Prepared] = {}


class _Executor:
    """Runs the store's statements on a Django cursor, each compiled once per dialect."""

    def __init__(self, cursor: Any, dialect: Dialect) -> None:
        self.cursor = cursor
        self.dialect = dialect

    def __call__(self, statement: Any, values: Mapping[str, Any]) -> Outcome:
        key = (id(statement), id(self.dialect))
        prepared = _compiled.get(key)
        if prepared is None:
            # The Prepared keeps the statement alive, so its id stays its own.
            prepared = _compiled[key] = Prepared(statement, self.dialect)
        cursor = self.cursor
        cursor.execute(prepared.sql, prepared.parameters(values))
        if cursor.description is None:
            return Outcome([], cursor.rowcount)
        names = [column[0] for column in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        return Outcome(rows, cursor.rowcount)


def _translated(error: Exception, connection: Any, task_id: str) -> CheckpointStoreError:
    original = error.__cause__ or error
    text = str(original).strip()
    first_line = text.splitlines()[0] if text else "no message"
    detail = f"{type(original).__name__}: {first_line}"[:500]
    password = str(connection.settings_dict.get("PASSWORD") or "")
    if password:
        detail = detail.replace(password, "***")
    dbapi_error = getattr(connection.Database, "Error", None)
    transient = False
    if isinstance(dbapi_error, type) and isinstance(original, dbapi_error):
        wrapped = sa_exc.DBAPIError.instance(None, None, original, dbapi_error)
        transient = is_transient(wrapped)
    return CheckpointStoreError(
        f"could not write the checkpoint through Django's connection {connection.alias!r}: "
        f"{detail}",
        task_id,
        transient,
    )


class _Committed:
    """The ``on_commit`` callback of one write: the run's state follows the commit."""

    __slots__ = ("__weakref__", "called", "change", "run")

    def __init__(self, run: Run, change: TxChange, called: list[bool]) -> None:
        self.run = run
        self.change = change
        self.called = called

    def __call__(self) -> None:
        self.called[0] = True
        self.run.tx_committed(self.change)


def _dropped(run: Run, change: TxChange, called: list[bool]) -> None:
    if not called[0]:
        run.tx_rolled_back(change)


def _on_end(connection: Any, run: Run, change: TxChange) -> None:
    called = [False]
    callback = _Committed(run, change, called)
    finalizer = weakref.finalize(callback, _dropped, run, change, called)
    finalizer.atexit = False
    connection.on_commit(callback)
