"""PostgreSQL's own account of a workload: databases of their own, commits and WAL.

``Server`` creates the databases of one benchmark run (``crbench_<random>_<name>``) on the
PostgreSQL of ``RESUMABLE_TEST_POSTGRES`` and drops them when closed, so a benchmark never
touches another database. It reads, from PostgreSQL itself:

- ``pg_stat_database``: the transactions a database committed and rolled back. A server
  process reports them when it is idle (at most once a second, or after ten idle
  seconds) and when it exits: counts read after ``wait_idle`` (no connection to the
  database left) are complete.
- the WAL between two positions (``pg_current_wal_lsn()``), read back with the
  ``pg_walinspect`` extension (PostgreSQL 15 and later, in a database of its own): the
  records of the transactions that wrote to one database (those with a block of that
  database, and their commit or abort records), their bytes, and their COMMIT records.
  A transaction that wrote commits with a WAL flush it waits for (``synchronous_commit``
  on), so the COMMIT records are the flushes. Other databases of the same server (a test
  suite running meanwhile) are not counted. Without ``pg_walinspect`` the whole server's
  WAL is counted and ``WalShare.whole_server`` says so.

Statements are counted in the client (``Statements``: SQLAlchemy's
``before_cursor_execute``, for every engine of the process, by thread).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
import sqlalchemy as sa

from benchmarks.common import POSTGRES_URL

PREFIX = "crbench"

# The records of one database's transactions between two WAL positions: those with a
# block of the database (transaction id 0: pruning and hint bits of its pages), the other
# records of the transactions that wrote them, and their COMMIT and ABORT records (a
# top transaction that wrote only in a subtransaction is found through its subxacts).
_WAL_SHARE = """
WITH r AS MATERIALIZED (
    SELECT xid::text::bigint AS x, resource_manager AS rm, record_type AS kind,
           record_length AS length, fpi_length AS fpi, description, block_ref
    FROM pg_get_wal_records_info(%(start)s::pg_lsn, %(end)s::pg_lsn)
),
touched AS (
    SELECT DISTINCT x FROM r WHERE x <> 0 AND block_ref ~ %(pattern)s
),
ends AS (
    SELECT length, fpi, rm, kind FROM r
    WHERE rm = 'Transaction' AND (kind LIKE 'COMMIT%%' OR kind LIKE 'ABORT%%')
      AND (x IN (SELECT x FROM touched) OR EXISTS (
          SELECT 1
          FROM unnest(string_to_array(substring(description FROM 'subxacts: ([0-9 ]+)'), ' '))
              AS s(sub)
          WHERE s.sub <> '' AND s.sub::bigint IN (SELECT x FROM touched)))
),
ours AS (
    SELECT length, fpi, rm, kind FROM r
    WHERE (x IN (SELECT x FROM touched) OR (x = 0 AND block_ref ~ %(pattern)s))
      AND NOT (rm = 'Transaction' AND (kind LIKE 'COMMIT%%' OR kind LIKE 'ABORT%%'))
    UNION ALL
    SELECT length, fpi, rm, kind FROM ends
)
SELECT coalesce(sum(length), 0)::bigint,
       coalesce(sum(fpi), 0)::bigint,
       count(*),
       count(*) FILTER (WHERE rm = 'Transaction' AND kind LIKE 'COMMIT%%'),
       count(*) FILTER (WHERE rm = 'Transaction' AND kind LIKE 'ABORT%%')
FROM ours
"""


@dataclasses.dataclass(frozen=True)
class Counters:
    """One database's counters at one moment, and the server's WAL position."""

    database: str
    xact_commit: int
    xact_rollback: int
    lsn: str
    at: float  # time.perf_counter()


@dataclasses.dataclass(frozen=True)
class Delta:
    """What one database did between two ``Counters``."""

    seconds: float
    commits: int  # pg_stat_database.xact_commit
    rollbacks: int  # pg_stat_database.xact_rollback
    wal: WalShare


@dataclasses.dataclass(frozen=True)
class WalShare:
    """The WAL of one database's transactions between two positions."""

    bytes: int  # the records' lengths, full-page images included
    fpi_bytes: int  # of which full-page images
    records: int
    commits: int  # COMMIT records: the flushes a client waited for
    aborts: int
    server_bytes: int  # the whole server's WAL between the two positions
    whole_server: bool = False  # True when pg_walinspect was missing: bytes is server_bytes


def conninfo(url: sa.URL, database: str) -> str:
    """A libpq connection string for ``database`` on the server of ``url``."""
    return url.set(drivername="postgresql", database=database).render_as_string(hide_password=False)


class Server:
    """The databases of one benchmark run on one PostgreSQL server, and their counters.

    Use as a context manager; every database it created is dropped on exit.
    """

    def __init__(self, url: str = POSTGRES_URL, prefix: str = PREFIX) -> None:
        self.server_url = sa.engine.make_url(url)
        self.prefix = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self.created: list[str] = []
        self._admin = psycopg.connect(conninfo(self.server_url, "postgres"), autocommit=True)
        self.version = str(_scalar(self._admin, "SHOW server_version"))
        monitor = self.create("monitor")
        self._monitor = psycopg.connect(conninfo(self.server_url, monitor), autocommit=True)
        self.walinspect = self._try_walinspect()
        self._oids: dict[str, int] = {}

    def _try_walinspect(self) -> bool:
        try:
            self._monitor.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        except psycopg.Error:
            return False
        return True

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def create(self, name: str) -> str:
        """Create the database ``<prefix>_<name>``; return its name."""
        database = f"{self.prefix}_{name}"
        self._admin.execute(f'CREATE DATABASE "{database}"')
        self.created.append(database)
        return database

    def url(self, database: str) -> str:
        """The SQLAlchemy URL (psycopg) of ``database``."""
        return self.server_url.set(
            drivername="postgresql+psycopg", database=database
        ).render_as_string(hide_password=False)

    def connect(self, database: str) -> psycopg.Connection[Any]:
        """A new autocommit psycopg connection to ``database`` (the caller closes it)."""
        return psycopg.connect(conninfo(self.server_url, database), autocommit=True)

    def oid(self, database: str) -> int:
        """The OID of ``database``."""
        if database not in self._oids:
            row = self._monitor.execute(
                "SELECT oid::bigint FROM pg_database WHERE datname = %s", (database,)
            ).fetchone()
            if row is None:
                raise LookupError(f"no database {database}")
            self._oids[database] = int(row[0])
        return self._oids[database]

    def counters(self, database: str) -> Counters:
        """``database``'s commits and rollbacks so far, and the server's WAL position."""
        row = self._monitor.execute(
            "SELECT xact_commit, xact_rollback, pg_current_wal_lsn()::text "
            "FROM pg_stat_database WHERE datname = %s",
            (database,),
        ).fetchone()
        if row is None:
            raise LookupError(f"no statistics for database {database}")
        return Counters(database, int(row[0]), int(row[1]), str(row[2]), time.perf_counter())

    def wal(self, database: str, start: str, end: str) -> WalShare:
        """The WAL of ``database``'s transactions from position ``start`` to ``end``."""
        server_bytes = int(_scalar(self._monitor, "SELECT %s::pg_lsn - %s::pg_lsn", (end, start)))
        if not self.walinspect:
            return WalShare(server_bytes, 0, 0, 0, 0, server_bytes, whole_server=True)
        # pg_walinspect reads flushed WAL only; a write position read before the last
        # record reached the disk may lie after it (by records no client waited for).
        deadline = time.monotonic() + 5.0
        query = "SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn"
        while not _scalar(self._monitor, query, (end,)) and time.monotonic() < deadline:
            time.sleep(0.05)
        end = str(
            _scalar(
                self._monitor, "SELECT least(%s::pg_lsn, pg_current_wal_flush_lsn())::text", (end,)
            )
        )
        pattern = f"rel [0-9]+/{self.oid(database)}/"
        row = self._monitor.execute(
            _WAL_SHARE, {"start": start, "end": end, "pattern": pattern}
        ).fetchone()
        assert row is not None
        return WalShare(
            int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]), server_bytes
        )

    def delta(self, before: Counters, after: Counters) -> Delta:
        """What ``before.database`` did from ``before`` to ``after``."""
        return Delta(
            after.at - before.at,
            after.xact_commit - before.xact_commit,
            after.xact_rollback - before.xact_rollback,
            self.wal(before.database, before.lsn, after.lsn),
        )

    def wait_idle(self, database: str, timeout: float = 10.0) -> None:
        """Wait until no server process is connected to ``database`` (their counts are in)."""
        deadline = time.monotonic() + timeout
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
        while int(_scalar(self._monitor, query, (database,))):
            if time.monotonic() > deadline:
                raise TimeoutError(f"connections to {database} still open after {timeout} s")
            time.sleep(0.01)

    def other_commits(self) -> dict[str, int]:
        """Commits so far of every database this run did not create."""
        rows = self._monitor.execute(
            "SELECT datname, xact_commit FROM pg_stat_database WHERE datname IS NOT NULL"
        ).fetchall()
        return {str(name): int(commits) for name, commits in rows if name not in self.created}

    def close(self) -> None:
        """Drop the databases this run created and close the connections."""
        self._monitor.close()
        for database in reversed(self.created):
            self._admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        self.created.clear()
        self._admin.close()


def _scalar(connection: psycopg.Connection[Any], sql: str, params: Sequence[Any] = ()) -> Any:
    """The first column of the first row of ``sql``."""
    row = connection.execute(sql, params).fetchone()
    if row is None:
        raise LookupError(f"no row from {sql}")
    return row[0]


class Statements:
    """Counts the SQL statements every engine of the process executes, by thread.

    ``count(thread)`` is the number of statements the thread executed while recording;
    ``verbs(thread)`` the same by first word. Attach with ``start`` and detach with
    ``stop``: the listener costs time, so it is attached only around counted runs.
    """

    def __init__(self) -> None:
        self._verbs: dict[int, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )

    def _on_execute(
        self,
        _connection: Any,
        _cursor: Any,
        statement: str,
        _parameters: Any,
        _context: Any,
        _executemany: bool,
    ) -> None:
        words = statement.split(None, 1)
        verb = words[0].upper() if words else ""
        self._verbs[threading.get_ident()][verb] += 1

    def start(self) -> None:
        """Clear the counts and start counting."""
        self._verbs.clear()
        sa.event.listen(sa.Engine, "before_cursor_execute", self._on_execute)

    def stop(self) -> None:
        """Stop counting (the counts stay)."""
        sa.event.remove(sa.Engine, "before_cursor_execute", self._on_execute)

    def verbs(self, thread: int) -> collections.Counter[str]:
        """The statements ``thread`` executed, by their first word."""
        return collections.Counter(self._verbs.get(thread, {}))

    def others(self, thread: int) -> int:
        """The statements every other thread executed."""
        return sum(sum(verbs.values()) for ident, verbs in self._verbs.items() if ident != thread)
