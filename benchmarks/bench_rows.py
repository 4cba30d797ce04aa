"""What a completed short run leaves in the checkpoint table of PostgreSQL, in bytes.

Runs ``--runs`` short tasks (three small steps, Celery's own uuid4 task ids, a task name
of 21 characters) through ``task.apply()`` into a fresh table, then reads:

- the mean size of a completed row (``pg_column_size`` of the row) and of its columns;
- the table's size per row with its indexes, once compacted (``VACUUM FULL``): what the
  rows kept for de-duplication cost at rest, heap and indexes, page overhead
  included;
- the same before compaction: the claim inserts the row and the completion write
  updates it, leaving a dead version until autovacuum reclaims it.

Then it prints what the table holds at 1,000 and 10,000 short tasks a second for the
default retention (one day) and for a week.

    python -m benchmarks.bench_rows [--runs 20000] [--store postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Sequence

import sqlalchemy as sa

from benchmarks.bench_overhead import STEPS_RESULT, build_tasks, positive
from benchmarks.common import POSTGRES_URL, print_header, print_table, reachable, table_name
from celery_resumable import checkpoint_store
from celery_resumable.store.done import done_table
from celery_resumable.store.partitions import width_for
from celery_resumable.testing import stop_lease_keeper

DESCRIPTION = "Bytes a completed short run leaves in the PostgreSQL checkpoint table."
TARGET = 200
DAY = 86_400


def measure(url: str, runs: int, parted: bool = False) -> dict[str, float]:
    """Run ``runs`` short tasks into a new table and read its sizes.

    With ``parted`` (``resumable_partitions``) the completed runs are read in the
    partitions of the ``_done`` table, once purge deleted the completed checkpoint
    rows beside them.
    """
    tasks = build_tasks(url, table_name(), resumable_partitions=parted)
    store = checkpoint_store(tasks.app)
    name = store.table_name
    try:
        task = tasks.resumable_steps
        for _ in range(runs):
            # Celery's own task ids: str(uuid4()), 36 characters
            result = task.apply(task_id=str(uuid.uuid4()), throw=True)
            if result.result != STEPS_RESULT:
                raise RuntimeError(f"{task.name} ended {result.state} with {result.result!r}")
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as db:
            if parted:
                db.execute(sa.text(f"UPDATE {name} SET updated_at = updated_at - interval '1h'"))
                store.purge()  # the completed checkpoint rows go; their _done rows stay
                # The partitions holding the runs: the empty ones made ahead (a few pages
                # each, whatever the fleet) would only weigh on a benchmark's few rows.
                holding = f"SELECT DISTINCT tableoid::regclass::text FROM {name}_done"
                tables = sorted(db.execute(sa.text(holding)).scalars())
                columns = done_table(name).columns
                rows_of = f"{name}_done"
            else:
                tables, columns, rows_of = [name], store.table.columns, name
            sizes = ", ".join(f"avg(pg_column_size(t.{column.name}))" for column in columns)
            row = db.execute(
                sa.text(f"SELECT count(*), avg(pg_column_size(t.*)), {sizes} FROM {rows_of} AS t")
            ).one()
            count = int(row[0])
            by_column = {
                column.name: float(value or 0)
                for column, value in zip(columns, row[2:], strict=True)
            }
            # The checkpoint table is left out of the partitions' count: once purge
            # deleted its completed rows it holds only the runs in progress.
            every = tables
            before = sum(_size(db, f"pg_total_relation_size('{t}')") for t in every)
            for each in every:
                db.execute(sa.text(f"VACUUM FULL {each}"))
            heap = sum(_size(db, f"pg_relation_size('{t}')") for t in every)
            total = sum(_size(db, f"pg_total_relation_size('{t}')") for t in every)
        return {
            "count": count,
            "row": float(row[1]),
            "heap": heap / count,
            "indexes": (total - heap) / count,
            "total": total / count,
            "before": before / count,
            **{f"column {key}": value for key, value in by_column.items()},
        }
    finally:
        stop_lease_keeper()  # it would purge the dropped table next
        with store.engine.begin() as db:
            db.execute(sa.text(f"DROP TABLE IF EXISTS {name}, {name}_done"))
        store.engine.dispose()


def _size(db: sa.Connection, expression: str) -> int:
    return int(db.execute(sa.text(f"SELECT {expression}")).scalar_one())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--runs", type=positive, default=20_000, help="short runs to store")
    parser.add_argument("--store", default=POSTGRES_URL, help="a PostgreSQL URL")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the tables."""
    args = parse_args(argv)
    if not reachable(args.store):
        print(f"skipped: {args.store} does not answer")
        return
    started = time.perf_counter()
    print_header("Bytes a completed short run leaves in the PostgreSQL checkpoint table")
    plain = measure(args.store, args.runs)
    parted = measure(args.store, args.runs, parted=True)

    def verdict(sizes: dict[str, float]) -> str:
        return "yes" if sizes["total"] <= TARGET else "no"

    print_table(
        f"(a) Per completed run, {plain['count']:,.0f} runs of 3 small steps",
        ["what (bytes)", "checkpoint table", "partitions"],
        [
            ["row (pg_column_size)", f"{plain['row']:.0f}", f"{parted['row']:.0f}"],
            ["heap per row, compacted", f"{plain['heap']:.0f}", f"{parted['heap']:.0f}"],
            ["indexes per row, compacted", f"{plain['indexes']:.0f}", f"{parted['indexes']:.0f}"],
            ["table per row, compacted", f"{plain['total']:.0f}", f"{parted['total']:.0f}"],
            [f"  <= {TARGET}", verdict(plain), verdict(parted)],
            ["table per row, before VACUUM", f"{plain['before']:.0f}", f"{parted['before']:.0f}"],
        ],
        [
            "checkpoint table: completed rows kept in it (the default); partitions: "
            "resumable_partitions, completed runs in the _done table",
            "compacted: after VACUUM FULL (heap pages, every index, page overhead "
            "included); before: with the dead versions the writes leave",
        ],
    )
    for title, sizes in (("checkpoint table", plain), ("_done table", parted)):
        print_table(
            f"(b) The columns of a row of the {title} (mean pg_column_size, bytes; 0: NULL)",
            ["column", "bytes"],
            [
                [key.removeprefix("column "), f"{value:.1f}"]
                for key, value in sizes.items()
                if key.startswith("column ")
            ],
        )
    rows = []
    for rate in (1_000, 10_000):
        for days in (1, 7):
            held = rate * DAY * days
            # A partition goes once its last run is older than the retention: the table
            # holds between the retention and one partition's width more.
            width = width_for(days * DAY).total_seconds()
            most = rate * (DAY * days + width) * parted["total"]
            rows.append(
                [
                    f"{rate:,} tasks/s, kept {days} day{'s' if days > 1 else ''}",
                    f"{held / 1e6:,.0f} M",
                    f"{held * plain['total'] / 1e9:,.1f} GB",
                    f"{held * parted['total'] / 1e9:,.1f}-{most / 1e9:,.1f} GB",
                ]
            )
    print_table(
        "(c) The table at rest for a fleet (rows kept x compacted bytes per row)",
        ["fleet", "rows", "checkpoint table", "partitions"],
        rows,
        [
            "partitions: a partition (3 hours wide for a retention of one day, 12 hours for "
            "7 days) is dropped whole once its last run is older than the retention, so "
            "between the retention and one partition more is held"
        ],
    )
    print(f"total time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
