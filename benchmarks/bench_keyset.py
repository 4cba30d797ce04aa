"""What keyset() costs next to a plain loop over a query, and that its memory stays flat.

Run: ``python benchmarks/bench_keyset.py [--rows 100000] [--batch-size 500] [--store URL]``
(SQLite in a temporary directory, and PostgreSQL on 127.0.0.1 when reachable, by default). Each
database gets a table of ``--rows`` rows; the script times a loop over all of them, and
traces (tracemalloc) the peak memory of a loop over a tenth of them and over all:

- plain: ``for row in connection.execute(select(t))`` on one connection;
- plain ``.all()``: the same rows fetched into a list first (the naive loop);
- keyset: ``for key, row in keyset(select(t), key="id", connection=engine)(None)``;
- iterate(keyset): the same source in ``iterate`` inside a resumable task (eager).
"""

from __future__ import annotations

import argparse
import functools
import gc
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from celery import Celery

from benchmarks.bench_overhead import peak_bytes
from celery_resumable import ResumableTask, iterate, keyset

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
INSERT_CHUNK = 10_000


def make_table(engine: sa.Engine, rows: int) -> sa.Table:
    """A table of ``rows`` rows: an integer key, a name and a number."""
    table = sa.Table(
        f"bench_keyset_{uuid.uuid4().hex[:8]}",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("value", sa.Integer, nullable=False),
    )
    table.create(engine)
    with engine.begin() as connection:
        for start in range(0, rows, INSERT_CHUNK):
            chunk = range(start, min(start + INSERT_CHUNK, rows))
            connection.execute(
                table.insert(), [{"id": i, "name": f"name {i}", "value": i % 7} for i in chunk]
            )
    # Statistics, as a table in use has: without them PostgreSQL's planner reads and
    # sorts every row after the key for each batch instead of reading the key's index.
    analyze = "ANALYZE TABLE" if engine.dialect.name == "mysql" else "ANALYZE"
    with engine.begin() as connection:
        connection.exec_driver_sql(f"{analyze} {table.name}")
    return table


def loops(
    engine: sa.Engine, app: Celery, table: sa.Table, batch_size: int
) -> dict[str, Callable[[int], int]]:
    """The loops compared: each sums ``value`` over the rows whose id is below ``limit``."""

    def query(limit: int) -> sa.Select[Any]:
        return sa.select(table).where(table.c.id < limit)

    def plain(limit: int) -> int:
        total = 0
        with engine.connect() as connection:
            for row in connection.execute(query(limit)):
                total += row.value
        return total

    def plain_all(limit: int) -> int:
        total = 0
        with engine.connect() as connection:
            rows = connection.execute(query(limit)).all()
        for row in rows:
            total += row.value
        return total

    def by_keyset(limit: int) -> int:
        total = 0
        for _, row in keyset(query(limit), key="id", batch_size=batch_size, connection=engine)(
            None
        ):
            total += row.value
        return total

    @app.task(base=ResumableTask, bind=True)
    def resumable(self: Any, limit: int) -> int:
        total = 0
        for row in iterate(
            "rows", keyset(query(limit), key="id", batch_size=batch_size, connection=engine)
        ):
            total += row.value
        return total

    def in_task(limit: int) -> int:
        return int(resumable.apply(args=(limit,), task_id=str(uuid.uuid4()), throw=True).result)

    return {
        "plain loop": plain,
        "plain .all()": plain_all,
        "keyset": by_keyset,
        "iterate(keyset)": in_task,
    }


def best_seconds(loop: Callable[[int], int], rows: int, repeat: int) -> float:
    """The shortest of ``repeat`` timings of a loop over ``rows`` rows."""
    gc.collect()
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        loop(rows)
        timings.append(time.perf_counter() - start)
    return min(timings)


def queries(engine: sa.Engine, loop: Callable[[int], int], rows: int) -> int:
    """How many statements a loop over ``rows`` rows sends on ``engine``."""
    sent = 0

    def count(*_: Any) -> None:
        nonlocal sent
        sent += 1

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        loop(rows)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    return sent


def kib(size: int) -> str:
    return f"{size / 1024:,.1f} KiB"


def measure(url: str, rows: int, batch_size: int, repeat: int) -> None:
    """Print the table of one database."""
    engine = sa.create_engine(url)
    suffix = uuid.uuid4().hex[:8]
    app = Celery("bench_keyset", broker="memory://")
    app.conf.update(
        resumable_store_url=url,
        resumable_table_name=f"bench_checkpoints_{suffix}",
        resumable_checkpoint_interval=None,
    )
    table = make_table(engine, rows)
    small = rows // 10
    expected = {n: sum(i % 7 for i in range(n)) for n in (small, rows)}
    try:
        cases = loops(engine, app, table, batch_size)
        for loop in cases.values():  # warm up: tables, statement caches, the lease thread
            if loop(small) != expected[small]:
                raise RuntimeError("a loop summed the wrong rows")
        name = sa.engine.make_url(url).get_backend_name()
        print(f"\n{name}: {rows:,} rows, batch_size {batch_size}")
        print(
            f"{'loop':16}  {'time':>9}  {'per row':>9}  {'queries':>7}  "
            f"{f'peak, {small:,} rows':>20}  {f'peak, {rows:,} rows':>20}"
        )
        for name, loop in cases.items():
            if loop(rows) != expected[rows]:
                raise RuntimeError(f"{name} summed the wrong rows")
            seconds = best_seconds(loop, rows, repeat)
            sent = queries(engine, loop, rows)  # on the caller's engine: not the store's
            peaks = [peak_bytes(functools.partial(loop, n), repeat) for n in (small, rows)]
            print(
                f"{name:16}  {seconds * 1e3:>6.1f} ms  {seconds / rows * 1e6:>6.2f} us  "
                f"{sent:>7}  {kib(peaks[0]):>20}  {kib(peaks[1]):>20}"
            )
    finally:
        table.drop(engine)
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP TABLE IF EXISTS bench_checkpoints_{suffix}"))
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--store", action="append", help="database URL (repeatable)")
    args = parser.parse_args()
    stores = args.store or [
        f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.sqlite3'}",
        POSTGRES_URL,
    ]
    print(f"time: best of {args.repeat}; peak: tracemalloc, median of {args.repeat}")
    for url in stores:
        try:
            measure(url, args.rows, args.batch_size, args.repeat)
        except sa.exc.OperationalError as exc:
            print(f"\n{sa.engine.make_url(url).get_backend_name()}: skipped: {exc.orig}")


if __name__ == "__main__":
    main()
