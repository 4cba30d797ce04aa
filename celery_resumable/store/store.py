"""The checkpoint store: reads and fenced writes of the checkpoint table.

Every statement comes from ``_statements``; this module runs them and turns rows into
records. Writes by a run are fenced on its lease owner token: an UPDATE that matches no
row means the run lost its lease (or an operator reset the task).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from celery import Celery
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from celery_resumable.config import ResumableConfig, config_for
from celery_resumable.errors import CheckpointStoreError, ResumableError
from celery_resumable.store.engines import engine_for, safe_url, secrets_of
from celery_resumable.store.faults import is_conflict, translated
from celery_resumable.store.operations import Operations
from celery_resumable.store.prepared import Outcome, Prepared, StatementTooLargeError, abandon
from celery_resumable.store.records import (
    Claim,
    State,
    Status,
    checkpoint_of,
    request_json,
)
from celery_resumable.store.statements import MAX_TASK_ID, Statements, check_table_name, table
from celery_resumable.store.upgrade import upgrade

__all__ = ["CheckpointStore", "checkpoint_store", "store_for"]

logger = logging.getLogger("celery_resumable.store")

T = TypeVar("T")

# How many times in all a statement chosen as a deadlock victim is run.
DEADLOCK_TRIES = 5


class CheckpointStore(Operations):
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
        self._where = f"the checkpoint store {safe_url(url)} (table {table_name!r})"
        self._statements: dict[str, Statements] = {}
        self._prepared: dict[int, Prepared] = {}
        self._packet: int | None = None  # MySQL's max_allowed_packet
        # Engines of callers' connections whose database was seen to hold the table.
        self._tables_seen: weakref.WeakKeyDictionary[Engine, bool] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"CheckpointStore({safe_url(self.url)!r}, table={self.table_name!r})"

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine of the store (created on first use)."""
        with self._errors(None, "connect to"):
            return engine_for(self.url)

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
            "p_request": request_json(request),
        }

        action = "claim the task in"
        taken = self._hot(task_id, action, lambda sql: sql.claim, params, rows=True)
        if taken.rows:
            row = taken.rows[0]
        else:
            found = self._hot(task_id, action, lambda sql: sql.select, params, rows=True)
            row = found.rows[0]
        checkpoint = checkpoint_of(row)
        return Claim(checkpoint, checkpoint.owner == owner)

    def save(
        self,
        task_id: str,
        owner: str,
        state: State,
        *,
        stored_steps: int = 0,
        status: Status = "running",
        lease_seconds: float | None = None,
    ) -> bool:
        """Write ``state`` if ``owner`` still holds the lease; False when it does not.

        Only the steps after the first ``stored_steps`` (already stored) are sent. With
        ``lease_seconds`` the lease is extended; without, it is released.
        """
        params = _save_params(task_id, owner, state, status, stored_steps, lease_seconds)
        kept = lease_seconds is not None

        steps = "p_new" in params
        written = self._hot(task_id, "save to", lambda sql: sql.save[(steps, kept)], params)
        return written.rowcount == 1

    def mark(self, task_id: str, owner: str, status: Status, interruptions: int) -> bool:
        """Set the status and interruption count, release the lease, keep the progress."""
        params = {
            "p_task_id": task_id,
            "p_owner": owner,
            "p_status": status,
            "p_interruptions": interruptions,
        }
        return self._hot(task_id, "save to", lambda sql: sql.mark, params).rowcount == 1

    def save_in_transaction(
        self,
        connection: Connection,
        task_id: str,
        owner: str,
        state: State,
        lease_seconds: float,
        stored_steps: int = 0,
    ) -> bool:
        """Write ``state`` through the caller's ``connection``, in its open transaction.

        False when ``owner`` no longer holds the lease. Raises CheckpointStoreError when
        the connection's database has no checkpoint table holding the task; an error of
        the caller's database stays reachable as its ``__cause__``.
        """
        action = "write the checkpoint through the given connection to " + self._where
        with translated(task_id, action, self._secrets, chain=True):
            engine = connection.engine

            def execute(statement: Any, params: Mapping[str, Any]) -> Outcome:
                return Outcome.of(connection.execute(statement, dict(params)))

            saved = self.save_through(
                connection.dialect,
                execute,
                lambda name: sa.inspect(connection).has_table(name),
                task_id,
                owner,
                state,
                lease_seconds,
                stored_steps,
                table_seen=engine in self._tables_seen,
            )
            self._tables_seen[engine] = True
            return saved

    def save_through(
        self,
        dialect: Dialect,
        execute: Callable[[Any, Mapping[str, Any]], Outcome],
        has_table: Callable[[str], bool],
        task_id: str,
        owner: str,
        state: State,
        lease_seconds: float,
        stored_steps: int = 0,
        *,
        table_seen: bool = False,
    ) -> bool:
        """Write ``state`` through a connection SQLAlchemy does not manage (Django's).

        Like ``save_in_transaction``, in that connection's open transaction:
        ``execute(statement, params)`` runs one of the store's statements there and
        ``has_table(name)`` says whether its database has a table. Unless ``table_seen``,
        first checks that the checkpoint table holds the task. False when ``owner`` no
        longer holds the lease. Raises CheckpointStoreError when that database has no
        checkpoint table holding the task; errors of ``execute`` and ``has_table`` pass
        through for the caller to translate.
        """
        sql = self._sql(dialect)

        def holds() -> bool:
            if not has_table(self.table_name):
                return False
            return bool(execute(sql.select, {"p_task_id": task_id}).rows)

        if not table_seen and not holds():
            raise self._not_here(task_id)
        params = _save_params(task_id, owner, state, "running", stored_steps, lease_seconds)
        if execute(sql.save[("p_new" in params, True)], params).rowcount == 1:
            return True
        if not holds():
            raise self._not_here(task_id)
        return False

    def renew(self, leases: Sequence[tuple[str, str]], lease_seconds: float) -> set[str]:
        """Extend the leases ``(task_id, owner)`` in one statement; returns the ids renewed.

        An id missing from the result lost its lease to another run (or was reset).
        """
        if not leases:
            return set()
        params = {
            "p_task_ids": [task_id for task_id, _ in leases],
            "p_owners": [owner for _, owner in leases],
            "p_lease": float(lease_seconds),
        }

        def renew(connection: Connection, sql: Statements) -> set[str]:
            if connection.execute(sql.renew, params).rowcount == len(leases):
                return {task_id for task_id, _ in leases}
            found = {"p_task_ids": params["p_task_ids"], "p_owners": params["p_owners"]}
            return set(connection.execute(sql.renewed, found).scalars())

        return self._run(None, "renew the leases in", renew)

    def release(self, task_id: str, owner: str) -> bool:
        """Give up the lease of ``owner`` without changing progress."""
        params = {"p_task_id": task_id, "p_owner": owner}
        action = "release the lease in"
        return self._hot(task_id, action, lambda sql: sql.release, params).rowcount == 1

    def forget(self, task_id: str, owner: str) -> bool:
        """Delete the row while ``owner`` holds its lease (a task replaced by another)."""
        params = {"p_task_id": task_id, "p_owner": owner}
        action = "delete the checkpoint in"
        return self._hot(task_id, action, lambda sql: sql.forget, params).rowcount == 1

    def exists(self, task_id: str) -> bool:
        """Whether the task has a row (a fenced write that failed: lease lost, or reset)."""

        found = self._hot(
            task_id, "read from", lambda sql: sql.owner, {"p_task_id": task_id}, rows=True
        )
        return bool(found.rows)

    # -- plumbing ------------------------------------------------------------------

    def _not_here(self, task_id: str) -> CheckpointStoreError:
        return CheckpointStoreError(
            f"the database of the given connection has no checkpoint table "
            f"{self.table_name!r} holding this task; the _tx functions need the checkpoint "
            "table in the same database as your data (point resumable_store_url at it)",
            task_id,
        )

    def _sql(self, dialect: Dialect) -> Statements:
        statements = self._statements.get(dialect.name)
        if statements is None:
            returning = bool(dialect.insert_returning)
            statements = Statements(self.table, dialect.name, returning)
            self._statements[dialect.name] = statements
        return statements

    def _run(
        self, task_id: str | None, action: str, work: Callable[[Connection, Statements], T]
    ) -> T:
        """Run ``work`` on a connection of the store (autocommit: each statement commits).

        Connections are not pinged before use: a statement that finds its connection
        dropped (a database restart) is run once more on a new one, and one the database
        rolled back to break a deadlock is run again (see ``again``). Every statement of
        the store may run twice without harm.
        """
        self._ensure_table(task_id)

        def once() -> T:
            with engine_for(self.url).connect() as connection:
                try:
                    return work(connection, self._sql(connection.dialect))
                except (SQLAlchemyError, ResumableError):
                    raise
                except BaseException:
                    abandon(connection)
                    raise

        with self._errors(task_id, action):
            return again(once)

    def _hot(
        self,
        task_id: str | None,
        action: str,
        choose: Callable[[Statements], Any],
        values: Mapping[str, Any],
        *,
        rows: bool = False,
    ) -> Outcome:
        """Run one of a run's statements, compiled once, on the driver's cursor.

        Like ``_run``, a statement that finds its connection dropped, or that lost a
        deadlock, runs again.
        """
        self._ensure_table(task_id)
        with self._errors(task_id, action):
            engine = engine_for(self.url)
            sql = self._sql(engine.dialect)
            statement = choose(sql)
            prepared = self._prepared.get(id(statement))
            if prepared is None:
                prepared = Prepared(statement, engine.dialect, sql.returns.get(id(statement), ()))
                if sql.dialect in ("mysql", "mariadb"):
                    prepared.limit = self._packet_limit(engine) - len(prepared.sql) - 1024
                self._prepared[id(statement)] = prepared
            # An instrumented engine (statement listeners) gets SQLAlchemy's own execution,
            # so that its listeners see every statement.
            run = prepared.executed if engine.dispatch.before_cursor_execute else prepared.run
            try:
                return again(lambda: run(engine, values, rows=rows))
            except StatementTooLargeError as large:
                raise CheckpointStoreError(_too_large(large, values), task_id, False) from None

    def _packet_limit(self, engine: Engine) -> int:
        """The most bytes the MySQL/MariaDB server takes in one statement, read once."""
        if self._packet is None:
            with engine.connect() as connection:
                query = sa.text("SELECT @@max_allowed_packet")
                self._packet = int(connection.execute(query).scalar_one())
        return self._packet

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
                upgrade(engine, self.table)
        self._ready = True

    def _errors(self, task_id: str | None, action: str) -> contextlib.AbstractContextManager[None]:
        return translated(task_id, f"{action} {self._where}", self._secrets, url=self.url)


def again(call: Callable[[], T]) -> T:
    """Run ``call`` (autocommit statements), again where running it again is the cure.

    A dropped connection (the pool has replaced it) gets one more try; a deadlock
    victim gets up to ``DEADLOCK_TRIES`` in all, after a short random pause, so that
    the two sides of the deadlock do not meet again. Only statements that commit on
    their own come here: a deadlock in the caller's transaction is the caller's.
    """
    reconnected = False
    tries = 0
    while True:
        tries += 1
        try:
            return call()
        except DBAPIError as exc:
            if exc.connection_invalidated and not reconnected:
                reconnected = True
            elif is_conflict(exc) and tries < DEADLOCK_TRIES:
                time.sleep(random.uniform(0.001, 0.01) * tries)
            else:
                raise


def _too_large(large: StatementTooLargeError, values: Mapping[str, Any]) -> str:
    """Say which values make a statement too large, and what to do about it."""
    parts = []
    for step in values.get("p_new") or ():
        size = len(json.dumps(step.get("result"), default=str).encode())
        parts.append((size, f"the result of step {step.get('name')!r} ({size:,} bytes)"))
    if large.sizes.get("p_cursor", 0) > 0:
        size = large.sizes["p_cursor"]
        parts.append((size, f"the cursor of step {values.get('p_current')!r} ({size:,} bytes)"))
    if large.sizes.get("p_request", 0) > 0:
        size = large.sizes["p_request"]
        parts.append((size, f"the task's request ({size:,} bytes)"))
    parts.sort(reverse=True)
    what = ", ".join(text for _, text in parts) or "its values"
    return (
        f"the checkpoint write is {large.size:,} bytes, more than the database takes in one "
        f"statement (max_allowed_packet leaves {large.limit:,} bytes for values): {what}. "
        "Keep large values out of step results and cursors (store them in a file, object "
        "storage or a table of your own and return a reference), or raise the server's "
        "max_allowed_packet"
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
    task_id: str,
    owner: str,
    state: State,
    status: Status,
    stored_steps: int,
    lease_seconds: float | None,
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "p_task_id": task_id,
        "p_owner": owner,
        "p_status": status,
        "p_current": state.current_step,
        "p_cursor": state.cursor,
        "p_interruptions": state.interruptions,
        "p_done": state.done,
        "p_total": state.total,
    }
    if lease_seconds is not None:
        params["p_lease"] = float(lease_seconds)
    if len(state.finished) > stored_steps:
        params["p_known"] = stored_steps
        params["p_new"] = [
            {"name": s.name, "result": s.result} for s in state.finished[stored_steps:]
        ]
    return params


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
