"""Completed runs kept in time partitions, dropped whole (``resumable_partitions``).

PostgreSQL only. The checkpoint table keeps the runs in progress; a completion also
writes the run's id, name, times and interruption count to ``<table>_done``, a table
partitioned by the time the run finished (see ``partitions``). Retention is a ``DROP
TABLE`` of a partition instead of a DELETE per row.

Three rules keep a late duplicate from running a completed task again:

- the completion writes the ``_done`` row in the statement that marks the checkpoint row
  completed, and only when that statement finds the row still held by the run;
- a claim inserts a new checkpoint row only where no ``_done`` row of the task exists
  (a claim that meets an existing checkpoint row goes on as before);
- a completed checkpoint row is deleted by ``purge`` only ``MOVED_AFTER`` seconds after
  its ``_done`` row committed, so every claim that can still be running saw that row.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import ColumnElement

from celery_resumable.store.records import Status
from celery_resumable.store.schema import _NO_STEPS, _TASK_ID, _TIME
from celery_resumable.store.statements import Statements, _Clock

__all__ = ["MOVED_AFTER", "DoneStatements", "done_table"]

MOVED_AFTER = 300.0
"""Seconds a completed checkpoint row stays beside its ``_done`` row before purge
deletes it (far longer than any claim statement runs)."""


def done_table(name: str) -> sa.Table:
    """The partitioned table of the runs completed in checkpoint table ``name``.

    Fixed-width columns come first, so that a row has no padding between them. The
    index on ``finished_at`` serves ``list`` (newest first) and nothing else.
    """
    return sa.Table(
        f"{name}_done",
        sa.MetaData(),
        sa.Column("finished_at", _TIME, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("interruptions", sa.Integer, nullable=False),
        sa.Column("task_id", _TASK_ID, nullable=False),
        sa.Column("task_name", sa.String(255), nullable=False),
        # Task ids are only looked up by equality: a hash index holds a 4-byte hash per
        # row where a B-tree would hold the whole id.
        sa.Index(f"ix_{name}_done_task", "task_id", postgresql_using="hash"),
        sa.Index(f"ix_{name}_done_finished", "finished_at"),
        postgresql_partition_by="RANGE (finished_at)",
    )


class DoneStatements(Statements):
    """The statements of a checkpoint table whose completed runs go to ``done``."""

    def __init__(self, checkpoints: sa.Table, done: sa.Table) -> None:
        self.done = done
        super().__init__(checkpoints, "postgresql")
        c, d = checkpoints.c, done.c
        by_id = d.task_id == sa.bindparam("p_task_id")
        # A task's row: its checkpoint row, else its _done row in the same columns.
        live = sa.select(*checkpoints.c, sa.literal(0).label("source")).where(
            c.task_id == sa.bindparam("p_task_id")
        )
        self.select = (
            sa.union_all(
                live, self._done_rows().where(by_id).add_columns(sa.literal(1).label("source"))
            )
            .order_by(sa.literal_column("source"))
            .limit(1)
        )
        self.returns[id(self.complete)] = [c.task_id]
        self.returns[id(self.complete_again)] = [c.task_id]
        self.returns[id(self.select)] = list(checkpoints.c)
        self.reset_done = sa.delete(done).where(by_id)

    def _completion(self, where: ColumnElement[bool]) -> sa.Executable:
        """The completion, which also writes the run's _done row.

        Run again after its answer was lost (``complete_again``), it matches the completed
        row and finds the _done row its first run wrote. Its row count is the checkpoint
        rows marked, 1 or 0, as the plain UPDATE's.
        """
        update = super()._completion(where)
        assert isinstance(update, sa.Update)
        c = self.table.c
        marked = update.returning(
            c.task_id, c.task_name, c.interruptions, c.created_at, c.updated_at
        ).cte("marked")
        written = ~sa.exists().where(self.done.c.task_id == sa.bindparam("p_task_id"))
        archived = sa.insert(self.done).from_select(
            ["finished_at", "created_at", "interruptions", "task_id", "task_name"],
            sa.select(
                marked.c.updated_at,
                marked.c.created_at,
                marked.c.interruptions,
                marked.c.task_id,
                marked.c.task_name,
            ).where(written),
        )
        return sa.select(marked.c.task_id).add_cte(archived.cte("archived"))

    def _new_row(self, values: dict[str, Any]) -> Any:
        """A claim inserts a row only for a task that has no _done row."""
        t, d = self.table, self.done
        gone = sa.exists().where(d.c.task_id == sa.bindparam("p_task_id"))
        row = sa.select(*(sa.cast(_value(v), t.c[k].type).label(k) for k, v in values.items()))
        return postgresql.insert(t).from_select(list(values), row.where(~gone))

    def _done_rows(self) -> sa.Select[Any]:
        """The _done rows in the columns of the checkpoint table."""
        c, d = self.table.c, self.done.c
        blank: dict[str, ColumnElement[Any]] = {
            "task_id": d.task_id,
            "task_name": d.task_name,
            "status": sa.literal("completed", c.status.type),
            "finished_steps": _NO_STEPS,
            "interruptions": d.interruptions,
            "created_at": d.created_at,
            "updated_at": d.finished_at,
        }
        return sa.select(*(blank.get(column.name, sa.null()).label(column.name) for column in c))

    def done_listing(self) -> sa.Select[Any]:
        """Every _done row, in the columns of the checkpoint table, for ``list``."""
        return self._done_rows()

    def moved_candidates(self, batch: int) -> sa.Select[Any]:
        """The ids of at most ``batch`` archived checkpoint rows completed at least
        ``p_age`` seconds ago."""
        return sa.select(self.table.c.task_id).where(self._moved()).limit(batch)

    def moved_rows(self) -> sa.Delete:
        """Delete the rows ``p_task_ids`` that are still archived and that old."""
        ids: sa.BindParameter[list[str]] = sa.bindparam("p_task_ids", expanding=True)
        return sa.delete(self.table).where(self.table.c.task_id.in_(ids), self._moved())

    def archived(self) -> ColumnElement[bool]:
        """A completed checkpoint row whose run has its _done row."""
        c, d = self.table.c, self.done.c
        completed = c.status == sa.literal_column("'completed'")
        return sa.and_(completed, sa.exists().where(d.task_id == c.task_id))

    def _old(self, status: Status, force: bool) -> ColumnElement[bool]:
        """Old rows, less the archived ones: those go ``MOVED_AFTER`` seconds after their
        completion, whatever the age asked (``moved_rows``)."""
        return sa.and_(super()._old(status, force), ~self.archived())

    def _moved(self) -> ColumnElement[bool]:
        # The completion wrote the row's updated_at and its _done row in one statement.
        cutoff = _Clock("postgresql").shifted("p_age", "-")
        return sa.and_(self.archived(), self.table.c.updated_at < cutoff)


def _value(value: Any) -> Any:
    return sa.literal(value) if isinstance(value, str | int) else value
