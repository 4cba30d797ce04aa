"""What a completed short run leaves in the checkpoint table of PostgreSQL, in bytes.

Runs ``--runs`` short tasks (three small steps, Celery's own uuid4 task ids, a task name
of 21 characters) through ``task.apply()`` into a fresh table, then reads:

- the mean size of a completed row (``pg_column_size`` of the row) and of its columns;
- the table's size per row with its indexes, once compacted (``VACUUM FULL``): what the
  rows kept for de-duplication cost at rest, heap and both indexes, page overhead
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
from celery_resumable.testing import stop_lease_keeper

DESCRIPTION = "Bytes a completed short run leaves in the PostgreSQL checkpoint table."
TARGET = 200
DAY = 86_400


def measure(url: str, runs: int) -> dict[str, float]:
    """Run ``runs`` short tasks into a new table and read its sizes."""
    tasks = build_tasks(url, table_name())
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
            columns = ", ".join(
                f"avg(pg_column_size(t.{column.name}))" for column in store.table.columns
            )
            row = db.execute(
                sa.text(f"SELECT count(*), avg(pg_column_size(t.*)), {columns} FROM {name} AS t")
            ).one()
            count = int(row[0])
            sizes = {
                column.name: float(value or 0)
                for column, value in zip(store.table.columns, row[2:], strict=True)
            }
            before = int(
                db.execute(sa.text(f"SELECT pg_total_relation_size('{name}')")).scalar_one()
            )
            db.execute(sa.text(f"VACUUM FULL {name}"))
            heap = int(db.execute(sa.text(f"SELECT pg_relation_size('{name}')")).scalar_one())
            total = int(
                db.execute(sa.text(f"SELECT pg_total_relation_size('{name}')")).scalar_one()
            )
        return {
            "count": count,
            "row": float(row[1]),
            "heap": heap / count,
            "indexes": (total - heap) / count,
            "total": total / count,
            "before": before / count,
            **{f"column {key}": value for key, value in sizes.items()},
        }
    finally:
        stop_lease_keeper()  # it would purge the dropped table next
        store.table.drop(store.engine, checkfirst=True)
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
    sizes = measure(args.store, args.runs)
    print_table(
        f"(a) Per completed run, {sizes['count']:,.0f} runs of 3 small steps",
        ["what", "bytes", f"<= {TARGET}"],
        [
            ["row (pg_column_size)", f"{sizes['row']:.0f}", ""],
            ["heap per row, compacted", f"{sizes['heap']:.0f}", ""],
            ["indexes per row, compacted", f"{sizes['indexes']:.0f}", ""],
            [
                "table per row, compacted",
                f"{sizes['total']:.0f}",
                "yes" if sizes["total"] <= TARGET else "no",
            ],
            ["table per row, before VACUUM", f"{sizes['before']:.0f}", ""],
        ],
        [
            "compacted: after VACUUM FULL (heap pages, both indexes, page overhead "
            "included); before: with the dead version each completion write leaves",
        ],
    )
    print_table(
        "(b) The row's columns (mean pg_column_size, bytes; 0: NULL)",
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
            rows.append(
                [
                    f"{rate:,} tasks/s, kept {days} day{'s' if days > 1 else ''}",
                    f"{held / 1e6:,.0f} M",
                    f"{held * sizes['total'] / 1e9:,.1f} GB",
                ]
            )
    print_table(
        "(c) The table at rest for a fleet (rows kept x compacted bytes per row)",
        ["fleet", "rows", "table"],
        rows,
    )
    print(f"total time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
