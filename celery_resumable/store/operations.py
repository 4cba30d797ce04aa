"""What operators do with checkpoints: read, list, reset and purge them."""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from celery_resumable.errors import CheckpointBusyError, CheckpointStoreError
from celery_resumable.store.done import MOVED_AFTER, DoneStatements
from celery_resumable.store.execute import Seam, again
from celery_resumable.store.records import STATUSES, Checkpoint, Status, checkpoint_of
from celery_resumable.store.schema import status_in, statuses_of
from celery_resumable.store.statements import Statements

__all__ = ["Operations"]

logger = logging.getLogger("celery_resumable.store")

T = TypeVar("T")

_PURGE_EVERY = 600.0
_PURGE_BATCH = 500


class Operations:
    """The operators' half of CheckpointStore: ``get``, ``list``, ``reset``, ``purge``."""

    table: sa.Table
    _keep_completed: float
    _last_purge: float

    @property
    def keep_completed(self) -> float:
        """Seconds a row is kept before ``purge`` (without ``older_than``) deletes it."""
        return self._keep_completed

    @keep_completed.setter
    def keep_completed(self, seconds: float) -> None:
        # Checked when set (by the constructor): the keeper's background purge uses it.
        self._keep_completed = _seconds("keep_completed", seconds)

    _seam: Seam

    def get(self, task_id: str) -> Checkpoint | None:
        """Return the checkpoint of ``task_id``, or None when there is none."""

        def read(connection: Connection, sql: Statements) -> Any:
            return connection.execute(sql.select, {"p_task_id": task_id}).mappings().first()

        row = self._seam.work(task_id, "read from", read)
        return None if row is None else checkpoint_of(row)

    def list(
        self,
        *,
        status: Status | Sequence[Status] | None = None,
        task_name: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Checkpoint]:
        """Return checkpoints, most recently updated first, filtered by status and task name.

        Returns at most ``limit`` of them, after skipping ``offset``. Raises ValueError for
        an unknown status, or a limit or offset that is not a whole number, zero or more.
        """
        limit = _count("limit", limit)
        offset = _count("offset", offset)
        query = sa.select(self.table)
        if status is not None:
            query = query.where(status_in(self.table, status))
        if task_name is not None:
            query = query.where(self.table.c.task_name == task_name)

        def read(connection: Connection, sql: Statements) -> list[Checkpoint]:
            rows: sa.Select[Any] | sa.CompoundSelect[Any] = query
            if isinstance(sql, DoneStatements):
                rows = _with_done(sql, query, status, task_name)
            ordered = rows.order_by(sa.literal_column("updated_at").desc(), "task_id")
            found = connection.execute(ordered.limit(limit).offset(offset)).mappings()
            return [checkpoint_of(row) for row in found]

        return self._seam.work(None, "list the checkpoints of", read)

    def reset(self, task_id: str, force: bool = False) -> bool:
        """Delete the checkpoint of ``task_id`` so its next run starts over; True if one existed.

        Raises CheckpointBusyError when a live run holds the task's lease, unless
        ``force``: the run then stops at its next boundary (its next write or lease
        renewal finds the row gone) and goes back on the queue to start over.
        """

        def delete(connection: Connection, sql: Statements) -> bool | None:
            statement = sql.reset_forced if force else sql.reset
            if connection.execute(statement, {"p_task_id": task_id}).rowcount > 0:
                found = True
            elif connection.execute(sql.owner, {"p_task_id": task_id}).first() is None:
                found = False
            else:
                return None
            if isinstance(sql, DoneStatements):
                done = connection.execute(sql.reset_done, {"p_task_id": task_id}).rowcount
                found = found or done > 0
            return found

        deleted = self._seam.work(task_id, "reset the checkpoint in", delete)
        if deleted is None:
            raise CheckpointBusyError(task_id)
        return deleted

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

        Raises ValueError for an unknown status, or an ``older_than`` that is not a finite
        number of seconds, zero or more.
        """
        statuses = statuses_of(status)
        age = self.keep_completed if older_than is None else _seconds("older_than", older_than)
        params = {"p_age": age}
        size = _PURGE_BATCH
        deleted = 0

        def delete(connection: Connection, sql: Statements, status: Status) -> tuple[int, int]:
            candidates = sql.purge_candidates(status, force, size)
            ids = list(connection.execute(candidates, params).scalars())
            if not ids:
                return 0, 0
            rows = sql.purge_rows(status, force)
            return len(ids), int(connection.execute(rows, {**params, "p_task_ids": ids}).rowcount)

        # One status at a time: on PostgreSQL each is found through its own index.
        for one in statuses:
            work = functools.partial(delete, status=one)
            while True:
                # Bounded batches, each a read and a delete by primary key: no long lock,
                # no huge transaction, no lock on rows that stay.
                found, batch = self._seam.work(None, "purge", work)
                deleted += batch
                if found < size:
                    break
        if self._seam.done is not None and "completed" in statuses:
            deleted += self._purge_done(age)
        return deleted

    def _purge_done(self, age: float) -> int:
        """Delete the completed checkpoint rows kept in the _done table, and drop its day
        partitions older than ``age``; the rows of the partitions dropped."""
        params = {"p_age": MOVED_AFTER}

        def delete(connection: Connection, sql: Statements) -> int:
            assert isinstance(sql, DoneStatements)
            ids = list(connection.execute(sql.moved_candidates(_PURGE_BATCH), params).scalars())
            if ids:
                connection.execute(sql.moved_rows(), {**params, "p_task_ids": ids})
            return len(ids)

        while self._seam.work(None, "purge", delete) == _PURGE_BATCH:
            pass
        with self._seam.errors(None, "drop the old partitions of"):
            return again(lambda: self._seam.keep_partitions(age)).rows

    def purge_due(self, every: float = _PURGE_EVERY) -> None:
        """Purge the rows older than ``keep_completed`` if ``every`` seconds passed since the last.

        Called from the lease keeper's thread, never from a task's run.
        """
        now = time.monotonic()
        if self._last_purge and now - self._last_purge < every:
            return
        self._last_purge = now
        try:
            deleted = self.purge(status=STATUSES)
        except CheckpointStoreError as exc:
            logger.warning("could not purge old checkpoints: %s", exc)
        else:
            if deleted:
                logger.info("purged %d old checkpoints", deleted)


def _seconds(name: str, value: float) -> float:
    """``value`` as a float if it is a finite number of seconds, zero or more."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of seconds, zero or more, not {value!r}")
    return float(value)


def _count(name: str, value: int) -> int:
    """``value`` if it is a whole number, zero or more."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a whole number, zero or more, not {value!r}")
    return value


def _with_done(
    sql: DoneStatements,
    query: sa.Select[Any],
    status: Status | Sequence[Status] | None,
    task_name: str | None,
) -> sa.CompoundSelect[Any]:
    """``query`` with the _done rows, each task once (a completed checkpoint row that
    has a _done row is left out)."""
    d = sql.done.c
    done = sql.done_listing()
    if status is not None and "completed" not in statuses_of(status):
        done = done.where(sa.false())
    if task_name is not None:
        done = done.where(d.task_name == task_name)
    return sa.union_all(query.where(~sql.archived()), done)
