"""The time partitions of a ``_done`` table: made ahead, dropped whole once old.

A partition holds the runs that finished in one span of UTC time (by the database's
clock), aligned on midnight, and is named ``<table>_done_YYYYMMDDHH`` after its first
hour. Its width is picked from the retention (``width_for``): at most an eighth of it,
in whole hours that divide a day, so that a partition is dropped at most an eighth of the
retention after its oldest run is due, and a table holds about nine partitions past and
at most nine ahead whatever the retention. A width that changes (a new retention)
applies to the partitions made from then on; the older ones keep theirs.

``maintain`` makes the partitions from now to ``ahead(width)`` later, and drops every
partition whose end is older than the age it is given. One process at a time does it (a
transaction-level advisory lock; the others skip), and its DDL waits at most
``LOCK_TIMEOUT`` for a lock: a partition that cannot be made or dropped now is made or
dropped at the next pass.
"""

from __future__ import annotations

import datetime as dt
import re
import zlib
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

__all__ = [
    "AHEAD",
    "LOCK_TIMEOUT",
    "Partition",
    "Upkeep",
    "ahead",
    "create_partition",
    "due",
    "maintain",
    "partition_name",
    "partitions",
    "width_for",
]

AHEAD = dt.timedelta(days=1)
"""How far ahead partitions are made: a day, or eight partitions when they are narrower
than three hours (see ``ahead``)."""
LOCK_TIMEOUT = "2s"
# Partition widths, in hours: each divides a day, so that every width starts on midnight.
_WIDTHS = (1, 2, 3, 4, 6, 8, 12, 24)
# A partition spans at most this fraction of the retention.
_SLICES = 8
_DAY = dt.timedelta(days=1)
_BOUNDS = re.compile(r"FOR VALUES FROM \('([^']+)'\) TO \('([^']+)'\)")


class Partition(NamedTuple):
    """A partition of a ``_done`` table: its name and the span of time it holds."""

    name: str
    start: dt.datetime
    end: dt.datetime


class Upkeep:
    """What a pass did: the partitions made, those dropped and their rows (as
    PostgreSQL counts them)."""

    def __init__(self) -> None:
        self.made: list[str] = []
        self.names: list[str] = []
        self.rows = 0


def width_for(keep: float | None) -> dt.timedelta:
    """The width of new partitions for a retention of ``keep`` seconds: the widest of
    1, 2, 3, 4, 6, 8, 12 or 24 hours that is at most an eighth of it (one hour at
    least; one day when nothing is dropped)."""
    if keep is None:
        return _DAY
    fits = [hours for hours in _WIDTHS if hours * 3600 * _SLICES <= keep]
    return dt.timedelta(hours=fits[-1] if fits else _WIDTHS[0])


def ahead(width: dt.timedelta) -> dt.timedelta:
    """How far ahead of now the partitions ``width`` wide are made: ``AHEAD``, or eight
    of them when that is shorter (a claim looks in every partition)."""
    return min(AHEAD, _SLICES * width)


def partitions(connection: Connection, done: str) -> list[Partition]:
    """The time partitions of the table ``done``, oldest first (a default partition, or
    one not named as this module names them, is left out)."""
    found = connection.execute(
        sa.text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:done AS regclass)"
        ),
        {"done": f'"{done}"'},  # quoted: a name with capitals keeps them
    ).all()
    name_of = re.compile(re.escape(done) + r"_\d{8}(\d{2})?")
    spans = []
    for name, bound in found:
        bounds = _BOUNDS.fullmatch(bound or "")
        if name_of.fullmatch(name) and bounds:
            start, end = (dt.datetime.fromisoformat(value) for value in bounds.groups())
            spans.append(Partition(name, start, end))
    return sorted(spans, key=lambda partition: partition.start)


def due(done: str, have: list[Partition], now: dt.datetime, width: dt.timedelta) -> list[Partition]:
    """The partitions of ``done`` to make so that every moment from ``now`` to
    ``ahead(width)`` later has one, given the partitions the table has (``have``): each
    ``width`` wide and aligned on midnight, cut short where a partition made earlier (at
    another width) begins."""
    made = []
    start = _floor(now, width)
    until = now + ahead(width)
    while start <= until:
        covering = [p.end for p in have if p.start <= start < p.end]
        if covering:
            start = max(covering)
            continue
        end = min([_floor(start, width) + width, *(p.start for p in have if p.start > start)])
        made.append(Partition(partition_name(done, start), start, end))
        start = end
    return made


def maintain(
    connection: Connection, done: str, older_than: float | None, width: dt.timedelta
) -> Upkeep:
    """Make the partitions due (``width`` wide), and drop those whose end is older
    than ``older_than`` seconds.

    ``connection`` must not be in autocommit mode: each step is a transaction begun and
    ended here (the partitions made, then each one dropped), so that a partition that
    cannot be dropped now does not undo the others. ``None`` drops nothing.
    """
    upkeep = Upkeep()
    with connection.begin():
        if not _first(connection, done):
            return upkeep  # another process is at it
        now = connection.execute(sa.text("SELECT timezone('UTC', now())")).scalar_one()
        have = partitions(connection, done)
        for span in due(done, have, now, width):
            connection.execute(sa.text(create_partition(done, span.start, span.end)))
            upkeep.made.append(span.name)
    if older_than is None:
        return upkeep
    cutoff = now - dt.timedelta(seconds=older_than)
    for partition in have:
        if partition.end > cutoff:
            continue
        with connection.begin():
            if not _first(connection, done):
                return upkeep
            rows = _rows(connection, partition.name)
            if rows is None:
                continue  # dropped meanwhile by another process
            connection.execute(sa.text(f'DROP TABLE "{partition.name}"'))
        upkeep.names.append(partition.name)
        upkeep.rows += rows
    return upkeep


def partition_name(done: str, start: dt.datetime) -> str:
    """The name of the partition of ``done`` that starts at ``start``."""
    return f"{done}_{start:%Y%m%d%H}"


def create_partition(done: str, start: dt.datetime, end: dt.datetime) -> str:
    """The DDL making the partition of the table ``done`` for ``[start, end)`` (if
    missing)."""
    return (
        f'CREATE TABLE IF NOT EXISTS "{partition_name(done, start)}" PARTITION OF "{done}" '
        f"FOR VALUES FROM ('{start.isoformat(' ')}') TO ('{end.isoformat(' ')}')"
    )


def _floor(moment: dt.datetime, width: dt.timedelta) -> dt.datetime:
    """The start of the ``width`` slot (counted from midnight) that holds ``moment``."""
    midnight = dt.datetime.combine(moment.date(), dt.time(), moment.tzinfo)
    return midnight + (moment - midnight) // width * width


def _first(connection: Connection, done: str) -> bool:
    """Take the transaction's lock on ``done``'s partitions, unless another holds it;
    its DDL then waits at most LOCK_TIMEOUT for a lock on the tables."""
    key = zlib.crc32(done.encode()) - 2**31
    lock = sa.text("SELECT pg_try_advisory_xact_lock(:key)")
    if not connection.execute(lock, {"key": key}).scalar():
        return False
    connection.execute(sa.text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    return True


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
