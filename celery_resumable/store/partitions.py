"""The day partitions of a ``_done`` table: made ahead, dropped whole once old.

A partition holds the runs that finished on one UTC day (by the database's clock) and
is named ``<table>_done_YYYYMMDD``. ``maintain`` makes the partitions of today and the
next ``AHEAD_DAYS`` days, and drops every partition whose last moment is older than the
age it is given. One process at a time does it (a transaction-level advisory lock; the
others skip), and its DDL waits at most ``LOCK_TIMEOUT`` for a lock: a partition that
cannot be made or dropped now is made or dropped at the next pass.
"""

from __future__ import annotations

import datetime as dt
import re
import zlib

import sqlalchemy as sa
from sqlalchemy.engine import Connection

__all__ = ["AHEAD_DAYS", "LOCK_TIMEOUT", "Upkeep", "create_partition", "maintain", "partitions"]

AHEAD_DAYS = 2
LOCK_TIMEOUT = "2s"


class Upkeep:
    """What a pass did: the partitions made, those dropped and their rows (as
    PostgreSQL counts them)."""

    def __init__(self) -> None:
        self.made: list[str] = []
        self.names: list[str] = []
        self.rows = 0


def partitions(connection: Connection, done: str) -> dict[dt.date, str]:
    """The day partitions of the table ``done``, by day (other partitions are left out)."""
    found = connection.execute(
        sa.text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:done AS regclass)"
        ),
        {"done": f'"{done}"'},  # quoted: a name with capitals keeps them
    ).scalars()
    pattern = re.compile(re.escape(done) + r"_(\d{8})")
    days = {}
    for name in found:
        match = pattern.fullmatch(name)
        if match:
            days[dt.datetime.strptime(match.group(1), "%Y%m%d").date()] = name
    return days


def maintain(connection: Connection, done: str, older_than: float | None) -> Upkeep:
    """Make the partitions due, and drop those older than ``older_than`` seconds.

    ``connection`` must not be in autocommit mode: each step is a transaction begun and
    ended here (the partitions made, then each one dropped), so that a partition that
    cannot be dropped now does not undo the others. ``None`` drops nothing.
    """
    dropped = Upkeep()
    with connection.begin():
        if not _first(connection, done):
            return dropped  # another process is at it
        now = connection.execute(sa.text("SELECT timezone('UTC', now())")).scalar_one()
        have = partitions(connection, done)
        for ahead in range(AHEAD_DAYS + 1):
            day = now.date() + dt.timedelta(days=ahead)
            if day not in have:
                connection.execute(sa.text(create_partition(done, day)))
                dropped.made.append(f"{done}_{day:%Y%m%d}")
    if older_than is None:
        return dropped
    cutoff = now - dt.timedelta(seconds=older_than)
    for day, name in sorted(have.items()):
        if dt.datetime.combine(day + dt.timedelta(days=1), dt.time()) > cutoff:
            continue
        with connection.begin():
            if not _first(connection, done):
                return dropped
            rows = _rows(connection, name)
            if rows is None:
                continue  # dropped meanwhile by another process
            connection.execute(sa.text(f'DROP TABLE "{name}"'))
        dropped.names.append(name)
        dropped.rows += rows
    return dropped


def _first(connection: Connection, done: str) -> bool:
    """Take the transaction's lock on ``done``'s partitions, unless another holds it;
    its DDL then waits at most LOCK_TIMEOUT for a lock on the tables."""
    key = zlib.crc32(done.encode()) - 2**31
    lock = sa.text("SELECT pg_try_advisory_xact_lock(:key)")
    if not connection.execute(lock, {"key": key}).scalar():
        return False
    connection.execute(sa.text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    return True


def create_partition(done: str, day: dt.date) -> str:
    """The DDL making the partition of ``day`` of the table ``done`` (if missing)."""
    name = f"{done}_{day:%Y%m%d}"
    return (
        f'CREATE TABLE IF NOT EXISTS "{name}" PARTITION OF "{done}" '
        f"FOR VALUES FROM ('{day.isoformat()}') TO ('{(day + dt.timedelta(days=1)).isoformat()}')"
    )


def _rows(connection: Connection, name: str) -> int | None:
    """The rows of partition ``name``: PostgreSQL's estimate once it analysed the table
    (a count would read the whole partition), counted when it has not; None when the
    partition is gone."""
    estimate = connection.execute(
        sa.text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:name)"),
        {"name": f'"{name}"'},
    ).scalar()
    if estimate is None:
        return None
    if estimate >= 0:
        return int(estimate)
    return int(connection.execute(sa.text(f'SELECT count(*) FROM "{name}"')).scalar_one())
