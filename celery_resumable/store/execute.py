"""The one seam every statement of the store goes through.

``Seam.statement`` runs one of a run's statements (compiled once, on the driver's own
cursor); ``Seam.work`` runs an operator's statements on a SQLAlchemy connection. Both
create the table on first use, run the statement again where that is the cure (``again``:
a dropped connection, a deadlock victim), never reuse a connection an exception
interrupted (``abandon``), and translate every database error into
CheckpointStoreError (``faults.translated``). Statements written in a caller's open
transaction (``set_step_tx``) run on the caller's connection through ``on_cursor`` or
SQLAlchemy's ``execute``; they are the caller's to retry.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from celery_resumable.errors import CheckpointStoreError, ResumableError
from celery_resumable.store import held
from celery_resumable.store.done import DoneStatements
from celery_resumable.store.engines import engine_for, pool_size, safe_url, secrets_of
from celery_resumable.store.faults import TRANSLATED, is_conflict, store_error, translated
from celery_resumable.store.partitions import Upkeep, maintain
from celery_resumable.store.prepared import Outcome, Prepared, StatementTooLargeError, abandon
from celery_resumable.store.statements import Statements
from celery_resumable.store.upgrade import upgrade

__all__ = ["DEADLOCK_TRIES", "Seam", "again", "on_cursor"]

T = TypeVar("T")

# How many times in all a statement chosen as a deadlock victim is run.
DEADLOCK_TRIES = 5


class Seam:
    """Runs the statements of one checkpoint table, on the engine of one store URL."""

    def __init__(
        self,
        url: str,
        table: sa.Table,
        *,
        create_tables: bool = True,
        done: sa.Table | None = None,
        width: dt.timedelta = dt.timedelta(days=1),
    ) -> None:
        self.url = url
        self.table = table
        self.done = done  # the table of completed runs, in time partitions (PostgreSQL only)
        self.width = width  # the width of the partitions made
        self.create_tables = create_tables
        self.secrets = secrets_of(url)
        self.where = f"the checkpoint store {safe_url(url)} (table {table.name!r})"
        self._ready = False
        self._statements: dict[str, Statements] = {}
        self._prepared: dict[int, Prepared] = {}
        self._packet: int | None = None  # MySQL's max_allowed_packet

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine of the store (created on first use)."""
        with self.errors(None, "connect to"):
            return engine_for(self.url)

    def sql(self, dialect: Dialect) -> Statements:
        """The table's statements for ``dialect``, built once."""
        statements = self._statements.get(dialect.name)
        if statements is None:
            if self.done is not None and dialect.name == "postgresql":
                statements = DoneStatements(self.table, self.done)
            else:
                statements = Statements(self.table, dialect.name, bool(dialect.insert_returning))
            self._statements[dialect.name] = statements
        return statements

    def statement(
        self,
        task_id: str | None,
        action: str,
        choose: Callable[[Statements], Any],
        values: Mapping[str, Any],
        *,
        rows: bool = False,
        retry: Callable[[Statements], Any] | None = None,
    ) -> Outcome:
        """Run the statement ``choose`` picks, compiled once, with ``values``; where it
        is run again (``again``), run the one ``retry`` picks instead, if given."""
        if not self._ready:
            self.ensure_table(task_id)
        url = self.url
        try:
            engine = engine_for(url)
            prepared = self._prepare(engine, choose)
            try:
                return _run(url, engine, prepared, values, rows)
            except DBAPIError as failed:
                if retry is not None:
                    prepared = self._prepare(engine, retry)
                return again(lambda: _run(url, engine, prepared, values, rows), failed)
        except StatementTooLargeError as large:
            raise CheckpointStoreError(_too_large(large, values), task_id, False) from None
        except TRANSLATED as exc:
            what = f"{action} {self.where}"
            raise store_error(exc, task_id, what, self.secrets, url) from None

    def work(
        self, task_id: str | None, action: str, work: Callable[[Connection, Statements], T]
    ) -> T:
        """Run ``work`` on a connection of the store (autocommit: each statement commits).

        Connections are not pinged before use: a statement that finds its connection
        dropped (a database restart) is run once more on a new one, and one the database
        rolled back to break a deadlock is run again (see ``again``). Every statement of
        the store may run twice without harm.
        """
        self.ensure_table(task_id)

        def once() -> T:
            with engine_for(self.url).connect() as connection:
                try:
                    return work(connection, self.sql(connection.dialect))
                except (SQLAlchemyError, ResumableError):
                    raise
                except BaseException:
                    abandon(connection)
                    raise

        with self.errors(task_id, action):
            return again(once)

    def ensure_table(self, task_id: str | None) -> None:
        """Create (or upgrade) the table once per process, unless told not to."""
        if self._ready:
            return
        if self.done is not None:
            self._check_partitioned(task_id)
        if self.create_tables:
            with self.errors(task_id, "create the table in"):
                engine = engine_for(self.url)
                for table in (self.table, self.done):
                    if table is None:
                        continue
                    try:
                        table.metadata.create_all(engine, checkfirst=True)
                    except SQLAlchemyError:
                        # Another process may have made it between the check and the CREATE.
                        if not sa.inspect(engine).has_table(table.name):
                            raise
                upgrade(engine, self.table)
            if self.done is not None:
                # Partitions not made now (a lock not granted) are made by the next
                # purge, or by the first completion that misses one.
                self.made_partitions()
        self._ready = True

    def keep_partitions(self, older_than: float | None) -> Upkeep:
        """Make the partitions of the _done table due, and drop those older than
        ``older_than`` seconds (None: none)."""
        assert self.done is not None
        with engine_for(self.url).connect() as connection:
            transactional = connection.execution_options(isolation_level="READ COMMITTED")
            return maintain(transactional, self.done.name, older_than, self.width)

    def made_partitions(self) -> bool:
        """Whether partitions of the _done table were missing and are now made."""
        if self.done is None:
            return False
        try:
            return bool(self.keep_partitions(None).made)
        except SQLAlchemyError:  # the error of the statement that found one missing says more
            return False

    def _check_partitioned(self, task_id: str | None) -> None:
        dialect = self.engine.dialect.name
        if dialect != "postgresql":
            raise CheckpointStoreError(
                f"resumable_partitions needs a PostgreSQL store; {self.where} is "
                f"{dialect}: set resumable_partitions = False, or use PostgreSQL",
                task_id,
                False,
            )

    def errors(self, task_id: str | None, action: str) -> contextlib.AbstractContextManager[None]:
        """Translate the database errors raised in the block into CheckpointStoreError."""
        return translated(task_id, f"{action} {self.where}", self.secrets, url=self.url)

    def _prepare(self, engine: Engine, choose: Callable[[Statements], Any]) -> Prepared:
        sql = self.sql(engine.dialect)
        statement = choose(sql)
        prepared = self._prepared.get(id(statement))
        if prepared is None:
            prepared = Prepared(statement, engine.dialect, sql.returns.get(id(statement), ()))
            if sql.dialect in ("mysql", "mariadb"):
                prepared.limit = self._packet_limit(engine) - len(prepared.sql) - 1024
            self._prepared[id(statement)] = prepared
        return prepared

    def _packet_limit(self, engine: Engine) -> int:
        """The most bytes the MySQL/MariaDB server takes in one statement, read once."""
        if self._packet is None:
            with engine.connect() as connection:
                query = sa.text("SELECT @@max_allowed_packet")
                self._packet = int(connection.execute(query).scalar_one())
        return self._packet


def on_cursor(cursor: Any, prepared: Prepared, values: Mapping[str, Any], rows: bool) -> Outcome:
    """Run ``prepared`` on a DBAPI cursor; its rows (when wanted) go through the type
    processors a Core ``execute`` would apply. Driver errors pass as they are."""
    parameters = prepared.parameters(values)
    if prepared.limit is not None:
        prepared.check_size(parameters)
    cursor.execute(prepared.sql, parameters)
    if not prepared.returns_rows:
        return Outcome([], cursor.rowcount)
    # Read even when not wanted: SQLite finishes a statement with RETURNING (and ends
    # its write) only once its rows are read, and the cursor is used again.
    fetched = cursor.fetchall()
    if not rows:
        return Outcome([], cursor.rowcount)
    if prepared.columns:
        return Outcome([prepared.row(row) for row in fetched], cursor.rowcount)
    # A statement compiled without its returned columns: rows by the driver's names.
    names = [column[0] for column in cursor.description]
    found = [dict(zip(names, row, strict=True)) for row in fetched]
    return Outcome(found, cursor.rowcount)


def _run(
    url: str, engine: Engine, prepared: Prepared, values: Mapping[str, Any], rows: bool
) -> Outcome:
    if engine.dispatch.before_cursor_execute:
        # An instrumented engine (statement listeners) gets SQLAlchemy's own execution,
        # so that its listeners see every statement.
        return _through_core(engine, prepared, values, rows)
    dialect = engine.dialect
    dbapi_error = dialect.loaded_dbapi.Error
    try:
        connection, cursor = kept = held.take(url, engine)
    except dbapi_error as error:  # could not connect
        raise sa_exc.DBAPIError.instance(None, None, error, dbapi_error, dialect=dialect) from error
    try:
        outcome = on_cursor(cursor, prepared, values, rows)
    except StatementTooLargeError:
        held.give_back(url, kept, pool_size())  # nothing was sent
        raise
    except dbapi_error as error:
        disconnect = dialect.is_disconnect(error, connection, cursor)
        if disconnect:
            # A database restart drops every connection: none of the idle ones is tried.
            held.close(kept)
            held.drop_all(url)
        else:
            held.give_back(url, kept, pool_size())
        raise sa_exc.DBAPIError.instance(
            prepared.sql,
            None,
            error,
            dbapi_error,
            hide_parameters=True,
            connection_invalidated=disconnect,
            dialect=dialect,
        ) from error
    except BaseException:
        held.close(kept)  # interrupted mid-statement: never used again (see ``abandon``)
        raise
    held.give_back(url, kept, pool_size())
    return outcome


def _through_core(
    engine: Engine, prepared: Prepared, values: Mapping[str, Any], rows: bool
) -> Outcome:
    with engine.connect() as connection:
        try:
            return Outcome.of(connection.execute(prepared.statement, dict(values)), rows)
        except sa_exc.SQLAlchemyError:
            raise
        except BaseException:
            abandon(connection)
            raise


def again(call: Callable[[], T], failed: DBAPIError | None = None) -> T:
    """Run ``call`` (autocommit statements), again where running it again is the cure.

    A dropped connection (the pool has replaced it) gets one more try; a deadlock
    victim gets up to ``DEADLOCK_TRIES`` in all, after a short random pause, so that
    the two sides of the deadlock do not meet again. Only statements that commit on
    their own come here: a deadlock in the caller's transaction is the caller's.
    ``failed`` is the error of a first try the caller made itself, if any.
    """
    reconnected = False
    tries = 0
    while True:
        tries += 1
        if failed is None:
            try:
                return call()
            except DBAPIError as exc:
                failed = exc
        if failed.connection_invalidated and not reconnected:
            reconnected = True
        elif is_conflict(failed) and tries < DEADLOCK_TRIES:
            time.sleep(random.uniform(0.001, 0.01) * tries)
        else:
            raise failed
        failed = None


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
