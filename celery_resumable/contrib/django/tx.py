"""The ``Transaction`` of a Django connection inside ``transaction.atomic()``.

``celery_resumable.tx`` runs the transactional flow and finds this adapter by name (its
``transaction_of``) once ``django.db`` is imported. The fenced UPDATE runs on Django's
own cursor, compiled once per statement for the SQLAlchemy dialect of that connection
(``%s`` placeholders, parameters processed as SQLAlchemy would). The run learns how the
transaction ended through ``transaction.on_commit``: Django calls the callback when the
outermost atomic block commits, and drops it when the block, or the savepoint it was
registered in, rolls back. The callback is referenced by Django alone, so dropping it
frees it at once and its finalizer tells the run of the rollback, before the ``atomic``
block has exited.
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

from celery_resumable.contrib.django.database import dialect_of
from celery_resumable.errors import CheckpointStoreError
from celery_resumable.store.engines import secrets_of
from celery_resumable.store.execute import on_cursor
from celery_resumable.store.faults import translated
from celery_resumable.store.prepared import Outcome, Prepared
from celery_resumable.store.store import CheckpointStore
from celery_resumable.tx import TxEnding, TxWrite

__all__ = ["DjangoTransaction", "transaction_of"]


def transaction_of(conn: object, function: str) -> DjangoTransaction | None:
    """The transaction of Django connection ``conn``; None when ``conn`` is no Django connection.

    ``conn`` is ``django.db.connection`` (the proxy of this thread's default connection)
    or ``connections[alias]``. Raises TransactionManagementError outside an atomic
    block, where the checkpoint would commit alone; ``function`` names the caller.
    """
    if not isinstance(conn, BaseDatabaseWrapper | ConnectionProxy):
        return None
    connection = conn if isinstance(conn, BaseDatabaseWrapper) else connections[conn.alias]
    if not connection.in_atomic_block:
        raise TransactionManagementError(
            f"{function}() needs a transaction: call it inside "
            f"`with transaction.atomic(using={connection.alias!r}):` so that the "
            "checkpoint commits with your writes"
        )
    return DjangoTransaction(connection)


# Databases (per store) seen to hold the checkpoint table: checked once per process.
_tables_seen: weakref.WeakKeyDictionary[CheckpointStore, set[tuple[Any, ...]]] = (
    weakref.WeakKeyDictionary()
)


class DjangoTransaction:
    """The open atomic block of one Django connection."""

    __slots__ = ("connection",)

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def save(self, store: CheckpointStore, write: TxWrite) -> bool:
        """Write on Django's cursor, in the atomic block, fenced on the lease."""
        connection = self.connection
        settings = connection.settings_dict
        database = (
            connection.alias,
            settings.get("NAME"),
            settings.get("HOST"),
            settings.get("PORT"),
        )
        seen = _tables_seen.setdefault(store, set())
        try:
            dialect = dialect_of(connection)
            with connection.cursor() as cursor:
                saved = store.save_through(
                    dialect,
                    _Executor(cursor, dialect),
                    lambda name: name in connection.introspection.table_names(cursor),
                    *write,
                    table_seen=database in seen,
                )
        except DjangoDatabaseError as exc:
            raise _translated(exc, connection, write.task_id) from exc
        seen.add(database)
        return saved

    def on_end(self, ending: TxEnding) -> None:
        """Tell ``ending`` of the outermost commit, or of the rollback that drops the write."""
        called = [False]
        callback = _Committed(ending, called)
        finalizer = weakref.finalize(callback, _dropped, ending, called)
        finalizer.atexit = False
        self.connection.on_commit(callback)


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
        return on_cursor(self.cursor, prepared, values, rows=True)


def _translated(error: Exception, connection: Any, task_id: str) -> CheckpointStoreError:
    """``error`` of Django's connection as the store's error, described and classified as
    the store's own errors are (its driver error, the database password masked)."""
    original = error.__cause__ or error
    driver_error = getattr(connection.Database, "Error", None)
    base = driver_error if isinstance(driver_error, type) else Exception
    as_sqlalchemy = sa_exc.DBAPIError.instance(None, None, original, base)
    action = f"write the checkpoint through Django's connection {connection.alias!r}"
    try:
        with translated(task_id, action, secrets_of(f"django://{connection.alias}")):
            raise as_sqlalchemy
    except CheckpointStoreError as translated_error:
        return translated_error
    raise AssertionError("translated() raises every database error")  # pragma: no cover


class _Committed:
    """The ``on_commit`` callback of one write: the run's state follows the commit."""

    __slots__ = ("__weakref__", "called", "ending")

    def __init__(self, ending: TxEnding, called: list[bool]) -> None:
        self.ending = ending
        self.called = called

    def __call__(self) -> None:
        self.called[0] = True
        self.ending.committed()


def _dropped(ending: TxEnding, called: list[bool]) -> None:
    if not called[0]:
        ending.rolled_back()
