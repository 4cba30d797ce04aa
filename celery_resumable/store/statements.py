"""The SQL of every statement a run executes, per database.

Times come from the database's clock (UTC), never from a worker's: a lease written by
one worker and judged by another is compared on one clock.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from celery_resumable.errors import CheckpointStoreError
from celery_resumable.store.records import CLAIM_COLUMNS, Status
from celery_resumable.store.schema import _JSON, _NO_STEPS, _REQUEST, _TIME, status_in

__all__ = ["DIALECTS", "Statements"]

DIALECTS = ("sqlite", "postgresql", "mysql", "mariadb")


class _Clock:
    """The database's UTC clock in one dialect's SQL."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect

    def now(self) -> ColumnElement[Any]:
        return self.shifted(None)

    def shifted(self, seconds: str | None, sign: str = "+") -> ColumnElement[Any]:
        """Now, moved by the float bind parameter ``seconds`` (None: not moved)."""
        amount = None if seconds is None else sa.bindparam(seconds, type_=sa.Float)
        if self.dialect == "postgresql":
            now: ColumnElement[Any] = sa.literal_column(
                "timezone('UTC', statement_timestamp())", _TIME
            )
            if amount is None:
                return now
            moved: ColumnElement[Any] = sa.literal_column("interval '1 second'") * amount
            return now + moved if sign == "+" else now - moved
        if self.dialect in ("mysql", "mariadb"):
            now = sa.func.utc_timestamp(6, type_=_TIME)
            if amount is None:
                return now
            micro = sa.cast(amount * (1_000_000 if sign == "+" else -1_000_000), sa.Integer)
            return sa.func.timestampadd(sa.literal_column("MICROSECOND"), micro, now, type_=_TIME)
        # SQLite: the storage format of SQLAlchemy's DateTime, microseconds included.
        if amount is None:
            return sa.func.strftime("%Y-%m-%d %H:%M:%f000", "now", type_=_TIME)
        modifier = sa.func.printf(f"{sign}%.6f seconds", amount)
        return sa.func.strftime("%Y-%m-%d %H:%M:%f000", "now", modifier, type_=_TIME)


class Statements:
    """The statements of one table in one dialect, built once: SQLAlchemy caches their SQL."""

    def __init__(self, checkpoints: sa.Table, dialect: str, returning: bool = True) -> None:
        if dialect not in DIALECTS:
            raise CheckpointStoreError(
                f"unsupported database {dialect!r}; use SQLite, PostgreSQL or MySQL/MariaDB"
            )
        self.table = checkpoints
        self.dialect = dialect
        self.returning = returning  # INSERT … RETURNING (MariaDB has it, MySQL not)
        clock = _Clock(dialect)
        c = checkpoints.c
        by_id = c.task_id == sa.bindparam("p_task_id")
        fenced = sa.and_(by_id, c.owner == sa.bindparam("p_owner"))
        lease_ends = clock.shifted("p_lease")
        self.now = clock.now()
        self.free = sa.or_(
            c.owner.is_(None), c.lease_expires_at.is_(None), c.lease_expires_at < self.now
        )
        self.select: sa.Executable = sa.select(checkpoints).where(by_id)
        # Run twice: the second execution finds the row its first one took, owned by the
        # same token, so the claim reads it back as its own (see ``_claim``).
        self.claimed = [c[name] for name in CLAIM_COLUMNS]  # what a claim reads back
        self.claim = self._claim(clock, lease_ends)
        # A write sends the cursor, and the results of the steps finished since the last
        # write only: appended to the stored list, guarded by its length so that a write
        # retried after a lost answer cannot append them twice. Run twice, a write sets
        # the same values again and still matches its row: the owner token stays, even
        # in a write that releases the lease.
        cursor_only = {
            "status": sa.bindparam("p_status"),
            "current_step": sa.bindparam("p_current"),
            "cursor": sa.bindparam("p_cursor", type_=_JSON),
            "interruptions": sa.bindparam("p_interruptions"),
            "done": sa.bindparam("p_done", type_=sa.Integer),
            "total": sa.bindparam("p_total", type_=sa.Integer),
            "updated_at": self.now,
        }
        with_steps = {
            **cursor_only,
            "finished_steps": sa.case(
                (self._steps_length() == sa.bindparam("p_known"), self._steps_appended()),
                else_=c.finished_steps,
            ),
        }
        keep = {"lease_expires_at": lease_ends}
        # Releasing ends the lease but keeps the owner token: a release re-run after its
        # answer was lost still matches its row, and so recognises its own success. A row
        # without a lease is free to claim whoever its last owner was. A release (a failed
        # or interrupted run) records the task's request for ``celery resumable retry``,
        # unless it has none to give (the recorded one stays).
        request = sa.func.coalesce(sa.bindparam("p_request", type_=_REQUEST), c.request)
        release = {"lease_expires_at": None, "request": request}
        write = sa.update(checkpoints).where(fenced)
        self.save = {
            (steps, kept): write.values(
                **(with_steps if steps else cursor_only), **(keep if kept else release)
            )
            for steps in (True, False)
            for kept in (True, False)
        }
        # Run twice: the same status and count again, on a row that keeps its owner token.
        self.mark = (
            sa.update(checkpoints)
            .where(fenced)
            .values(
                status=sa.bindparam("p_status"),
                interruptions=sa.bindparam("p_interruptions"),
                lease_expires_at=None,
                updated_at=self.now,
                request=request,
            )
        )
        # A completed row keeps what skipping a late duplicate needs (its id, name,
        # status and times); the owner token, the progress and the request go. The status
        # is a parameter, so that the statement is told apart on the wire.
        self.complete = self._completion(fenced)
        # Run again after its answer was lost (a dropped connection), the completion
        # cannot find its token any more: it matches the completed row instead. Only
        # the run's own completion or another run's can have made that row (a claim
        # never takes a completed row), and either way the task is completed.
        done_already = sa.and_(c.owner.is_(None), c.status == "completed")
        self.complete_again = self._completion(
            sa.and_(by_id, sa.or_(c.owner == sa.bindparam("p_owner"), done_already))
        )
        # One statement renews every lease of a process; owner tokens are unique per run.
        # A released lease is never renewed: a renewal that crossed a run's release must
        # not hold the row for a run that has ended. Run twice, a renewal only moves the
        # lease's end again.
        held = sa.and_(
            c.task_id.in_(sa.bindparam("p_task_ids", expanding=True)),
            c.owner.in_(sa.bindparam("p_owners", expanding=True)),
            c.lease_expires_at.is_not(None),
        )
        self.renew = sa.update(checkpoints).where(held).values(lease_expires_at=lease_ends)
        self.renewed = sa.select(c.task_id).where(held)
        # Run twice: the lease is already ended; the row still matches.
        self.release = sa.update(checkpoints).where(fenced).values(lease_expires_at=None)
        # Run twice: the second finds no row (0 rows), which the caller does not read as
        # a lost lease: the row was to go either way.
        self.forget = sa.delete(checkpoints).where(fenced)
        self.owner = sa.select(c.owner).where(by_id)
        # The columns of the rows each statement returns, for its prepared form.
        self.returns: dict[int, list[sa.Column[Any]]] = {
            id(self.claim): self.claimed,
            id(self.select): list(checkpoints.c),
            id(self.owner): [c.owner],
        }
        # Run twice: the second finds no row; an operator's reset reports what it found.
        self.reset = sa.delete(checkpoints).where(by_id, self.free)
        self.reset_forced = sa.delete(checkpoints).where(by_id)
        # Age is judged by the later of the last write and the lease's end, so a live
        # run that renews but has not written for a while is not old.
        last_seen = sa.case(
            (
                sa.and_(c.lease_expires_at.is_not(None), c.lease_expires_at > c.updated_at),
                c.lease_expires_at,
            ),
            else_=c.updated_at,
        )
        cutoff = clock.shifted("p_age", "-")
        # The last write is never later than the last sight: its own test, implied by
        # the other, lets the index of the last write find the old rows.
        self.older = sa.and_(c.updated_at < cutoff, last_seen < cutoff, self.free)
        self.older_forced = c.updated_at < cutoff

    def _completion(self, where: ColumnElement[bool]) -> sa.Executable:
        """The completion write of the row ``where`` matches."""
        return (
            sa.update(self.table)
            .where(where)
            .values(
                status=sa.bindparam("p_status"),
                finished_steps=_NO_STEPS,
                current_step=None,
                cursor=sa.null(),
                interruptions=sa.bindparam("p_interruptions"),
                owner=None,
                lease_expires_at=None,
                updated_at=self.now,
                request=None,
                done=None,
                total=None,
            )
        )

    def purge_candidates(self, status: Status, force: bool, batch: int) -> sa.Select[Any]:
        """The ids of at most ``batch`` old rows of ``status`` (a read that takes no lock)."""
        return sa.select(self.table.c.task_id).where(self._old(status, force)).limit(batch)

    def purge_rows(self, status: Status, force: bool) -> sa.Delete:
        """Delete the rows ``p_task_ids`` that are still old.

        Rows are found by primary key, so the DELETE locks what it deletes and nothing
        else: it takes its locks in the same order as a run's writes and cannot deadlock
        with them (a DELETE that scanned an index would lock every row it passed on
        MySQL). Run twice, it finds the rows already gone; a row that a run took again
        meanwhile is no longer old and stays.
        """
        ids: sa.BindParameter[list[str]] = sa.bindparam("p_task_ids", expanding=True)
        return sa.delete(self.table).where(self.table.c.task_id.in_(ids), self._old(status, force))

    def _old(self, status: Status, force: bool) -> ColumnElement[bool]:
        """The rows of ``status`` older than ``p_age`` seconds."""
        return sa.and_(status_in(self.table, status), self.older_forced if force else self.older)

    def _steps_length(self) -> ColumnElement[Any]:
        column = self.table.c.finished_steps
        if self.dialect == "postgresql":
            return sa.func.jsonb_array_length(column)
        if self.dialect == "sqlite":
            return sa.func.json_array_length(column)
        return sa.func.json_length(column)

    def _steps_appended(self) -> ColumnElement[Any]:
        column = self.table.c.finished_steps
        new = sa.bindparam("p_new", type_=_JSON)
        if self.dialect == "postgresql":
            return column.op("||")(new)
        if self.dialect in ("mysql", "mariadb"):
            return sa.func.json_merge_preserve(column, new)
        stored = sa.func.json_each(column).table_valued("value")
        added = sa.func.json_each(new).table_valued("value")
        both = sa.union_all(sa.select(stored.c.value), sa.select(added.c.value)).subquery()
        return sa.select(sa.func.json_group_array(sa.func.json(both.c.value))).scalar_subquery()

    def _claim(self, clock: _Clock, lease_ends: ColumnElement[Any]) -> sa.Executable:
        """One statement inserting the row, or taking it when no live run holds it.

        Run a second time by the same run (its first answer lost), it finds the row held
        by its own token under a live lease: nothing changes, and the row read back
        (returned, or selected after) names this run as the owner, which the store
        takes as claimed.
        """
        t = self.table
        values = self._claim_values(clock, lease_ends)
        takeable = sa.and_(t.c.status != "completed", self.free)
        if self.dialect in ("mysql", "mariadb"):
            insert = mysql.insert(t).values(values)
            new_owner = insert.inserted.owner
            # MySQL assigns left to right and later assignments see earlier ones: the
            # owner is decided first, then every other column follows it.
            upsert = insert.on_duplicate_key_update(
                [
                    ("owner", sa.case((takeable, new_owner), else_=t.c.owner)),
                    (
                        "lease_expires_at",
                        sa.case(
                            (t.c.owner == new_owner, insert.inserted.lease_expires_at),
                            else_=t.c.lease_expires_at,
                        ),
                    ),
                    ("status", sa.case((t.c.owner == new_owner, "running"), else_=t.c.status)),
                    (
                        "updated_at",
                        sa.case(
                            (t.c.owner == new_owner, insert.inserted.updated_at),
                            else_=t.c.updated_at,
                        ),
                    ),
                ]
            )
            # MariaDB returns the row as the statement left it, inserted, taken or not.
            return upsert.returning(*self.claimed) if self.returning else upsert
        conflict = self._new_row(values)
        claim: sa.Executable = conflict.on_conflict_do_update(
            index_elements=[t.c.task_id],
            set_={
                "owner": conflict.excluded.owner,
                "lease_expires_at": conflict.excluded.lease_expires_at,
                "status": "running",
                "updated_at": conflict.excluded.updated_at,
            },
            where=takeable,
        ).returning(*self.claimed)
        return claim

    def _new_row(self, values: dict[str, Any]) -> Any:
        """The INSERT of a claim on PostgreSQL or SQLite, before its ON CONFLICT."""
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        return dialect_insert(self.table).values(values)

    def _claim_values(self, clock: _Clock, lease_ends: ColumnElement[Any]) -> dict[str, Any]:
        """The columns of a row a claim inserts."""
        return {
            "task_id": sa.bindparam("p_task_id"),
            "task_name": sa.bindparam("p_task_name"),
            "status": "running",
            "finished_steps": _NO_STEPS,
            "interruptions": 0,
            "owner": sa.bindparam("p_owner"),
            "lease_expires_at": lease_ends,
            "created_at": clock.now(),
            "updated_at": clock.now(),
            "request": sa.bindparam("p_request", type_=_REQUEST),
        }
