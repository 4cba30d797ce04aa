"""The checkpoint store: reads and fenced writes of the checkpoint table.

Every statement comes from ``_statements``; this module runs them and turns rows into
records. Writes by a run are fenced on its lease owner token: an UPDATE that matches no
row means the run lost its lease (or an operator reset the task).
"""

from __future__ import annotations

import logging
import operator
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from celery import Celery
from sqlalchemy.engine import Connection, Dialect, Engine

from celery_resumable.config import ResumableConfig, check_table_name, config_for
from celery_resumable.errors import CheckpointStoreError
from celery_resumable.store.done import done_table
from celery_resumable.store.engines import safe_url
from celery_resumable.store.execute import Seam
from celery_resumable.store.faults import translated
from celery_resumable.store.operations import Operations
from celery_resumable.store.partitions import width_for
from celery_resumable.store.prepared import Outcome
from celery_resumable.store.records import (
    Claim,
    Found,
    State,
    Status,
    request_json,
)
from celery_resumable.store.schema import check_task_id, table
from celery_resumable.store.statements import Statements

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
        keep_completed: float = 86400.0,
        partitions: bool = False,
    ) -> None:
        self.table_name = check_table_name(table_name)
        self.table = table(table_name)
        self.create_tables = create_tables
        self.keep_completed = keep_completed
        self.partitions = partitions
        self._last_purge = 0.0
        done = done_table(table_name) if partitions else None
        self._seam = Seam(
            url, self.table, create_tables=create_tables, done=done, width=width_for(keep_completed)
        )
        # Engines of callers' connections whose database was seen to hold the table.
        self._tables_seen: weakref.WeakKeyDictionary[Engine, bool] = weakref.WeakKeyDictionary()

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the store."""
        return self._seam.url

    @url.setter
    def url(self, url: str) -> None:
        self._seam.url = url

    def __repr__(self) -> str:
        return f"CheckpointStore({safe_url(self.url)!r}, table={self.table_name!r})"

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine of the store (created on first use)."""
        return self._seam.engine

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

        Creates the row on the task's first run, recording ``request`` when given (its
        arguments and routing, for ``celery resumable retry``) and storable as JSON. A
        run gives none: its request is recorded by a write that ends it unfinished.
        """
        check_task_id(task_id)
        params = {
            "p_task_id": task_id,
            "p_task_name": task_name,
            "p_owner": owner,
            "p_lease": float(lease_seconds),
            "p_request": None if request is None else request_json(request),
        }

        action = "claim the task in"
        taken = self._seam.statement(task_id, action, lambda sql: sql.claim, params, rows=True)
        if taken.rows:
            row = taken.rows[0]
        else:
            read = self._seam.statement(task_id, action, lambda sql: sql.select, params, rows=True)
            row = read.rows[0]
        found = Found(row)
        return Claim(found, found.owner == owner)

    def save(
        self,
        task_id: str,
        owner: str,
        state: State,
        *,
        stored_steps: int = 0,
        status: Status = "running",
        lease_seconds: float | None = None,
        request: Mapping[str, Any] | None = None,
    ) -> bool:
        """Write ``state`` if ``owner`` still holds the lease; False when it does not.

        Only the steps after the first ``stored_steps`` (already stored) are sent. With
        ``lease_seconds`` the lease is extended; without, it is released and ``request``
        (when given) recorded. A ``completed`` status is written by ``complete``.
        """
        if status == "completed":
            return self.complete(task_id, owner, state.interruptions)
        params = _save_params(task_id, owner, state, status, stored_steps, lease_seconds)
        kept = lease_seconds is not None
        if not kept:
            params["p_request"] = request_json(request)

        steps = "p_new" in params
        written = self._seam.statement(
            task_id, "save to", lambda sql: sql.save[(steps, kept)], params
        )
        return written.rowcount == 1

    def mark(
        self,
        task_id: str,
        owner: str,
        status: Status,
        interruptions: int,
        request: Mapping[str, Any] | None = None,
    ) -> bool:
        """Set the status and interruption count, release the lease, keep the progress.

        ``request`` (when given) is recorded; a ``completed`` status is written by
        ``complete``.
        """
        if status == "completed":
            return self.complete(task_id, owner, interruptions)
        params = {
            "p_task_id": task_id,
            "p_owner": owner,
            "p_status": status,
            "p_interruptions": interruptions,
            "p_request": request_json(request),
        }
        return self._seam.statement(task_id, "save to", lambda sql: sql.mark, params).rowcount == 1

    def complete(self, task_id: str, owner: str, interruptions: int) -> bool:
        """Mark the task completed and release the lease; False when ``owner`` no longer
        holds it. The row's owner token, progress and request are dropped: a completed
        row only keeps a late duplicate from running the task again. Run again after its
        answer was lost, the write counts a completed row as its own success."""
        params = {
            "p_task_id": task_id,
            "p_owner": owner,
            "p_status": "completed",
            "p_interruptions": interruptions,
        }
        try:
            outcome = self._seam.statement(
                task_id, "save to", _COMPLETE, params, retry=_COMPLETE_AGAIN
            )
        except CheckpointStoreError as error:
            if error.transient or not self._seam.made_partitions():
                raise
            # The partition of the moment was missing (no purge made it): made now, the
            # completion, which wrote nothing, runs once more.
            outcome = self._seam.statement(task_id, "save to", _COMPLETE, params)
        return outcome.rowcount == 1

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
        action = "write the checkpoint through the given connection to " + self._seam.where
        with translated(task_id, action, self._seam.secrets, chain=True):
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
        sql = self._seam.sql(dialect)

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

        return self._seam.work(None, "renew the leases in", renew)

    def release(self, task_id: str, owner: str) -> bool:
        """Give up the lease of ``owner`` without changing progress."""
        params = {"p_task_id": task_id, "p_owner": owner}
        action = "release the lease in"
        return self._seam.statement(task_id, action, lambda sql: sql.release, params).rowcount == 1

    def forget(self, task_id: str, owner: str) -> bool:
        """Delete the row while ``owner`` holds its lease (a task replaced by another)."""
        params = {"p_task_id": task_id, "p_owner": owner}
        action = "delete the checkpoint in"
        return self._seam.statement(task_id, action, lambda sql: sql.forget, params).rowcount == 1

    def exists(self, task_id: str) -> bool:
        """Whether the task has a row (a fenced write that failed: lease lost, or reset)."""

        found = self._seam.statement(
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


_COMPLETE = operator.attrgetter("complete")
_COMPLETE_AGAIN = operator.attrgetter("complete_again")
_STORES: dict[tuple[str, str, bool, float, bool], CheckpointStore] = {}


def store_for(config: ResumableConfig) -> CheckpointStore:
    """Return the store for ``config``, one per URL and table in a process."""
    key = (
        config.store_url,
        config.table_name,
        config.create_tables,
        config.keep_completed,
        config.partitions,
    )
    store = _STORES.get(key)
    if store is None:
        store = CheckpointStore(
            config.store_url,
            config.table_name,
            create_tables=config.create_tables,
            keep_completed=config.keep_completed,
            partitions=config.partitions,
        )
        _STORES[key] = store
    return store


def checkpoint_store(app: Celery) -> CheckpointStore:
    """Return the checkpoint store configured by ``app.conf`` (``resumable_store_url``).

    The store reads and manages checkpoints: ``get(task_id)``, ``list(...)``,
    ``reset(task_id, force=False)`` and ``purge(...)``.
    """
    return store_for(config_for(app))
