"""The cost of set_step_cursor_tx: a batch transaction with and without the checkpoint.

Run: ``python benchmarks/bench_tx.py [--batches 500] [--store URL ...]`` (SQLite in a
temporary directory, and PostgreSQL on 127.0.0.1 when reachable, by default). Each batch
inserts 10 rows in one transaction; the resumable task also saves its cursor in it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from celery import Celery

from celery_resumable import ResumableTask, set_step_cursor_tx, step_cursor

ROWS_PER_BATCH = 10


def measure(url: str, batches: int) -> tuple[float, float]:
    """Return the seconds per batch without and with set_step_cursor_tx."""
    table_suffix = uuid.uuid4().hex[:8]
    engine = sa.create_engine(url)
    rows = sa.Table(
        f"bench_rows_{table_suffix}", sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    )  # fmt: skip
    rows.create(engine)
    app = Celery("bench_tx", broker="memory://")
    app.conf.update(
        resumable_store_url=url,
        resumable_table_name=f"bench_checkpoints_{table_suffix}",
        resumable_checkpoint_interval=None,
    )

    def insert(connection: sa.Connection, batch: int) -> None:
        first = batch * ROWS_PER_BATCH
        connection.execute(rows.insert(), [{"id": first + i} for i in range(ROWS_PER_BATCH)])

    @app.task(bind=True)
    def plain(self: Any) -> None:
        for batch in range(batches):
            with engine.begin() as connection:
                insert(connection, batch)

    @app.task(base=ResumableTask, bind=True)
    def resumable(self: Any) -> None:
        def load(cursor: int | None) -> None:
            for batch in range(cursor or 0, batches):
                with engine.begin() as connection:
                    insert(connection, batch)
                    set_step_cursor_tx(connection, batch + 1)

        step_cursor("load", load)

    timings = []
    try:
        # Warm both up first: the store's first connection switches a SQLite file to WAL
        # mode, which would otherwise favour whichever task is timed second.
        for task in (resumable, plain):
            with engine.begin() as connection:
                connection.execute(rows.delete())
            task.apply(task_id=str(uuid.uuid4()), throw=True)
        for task in (plain, resumable):
            best = float("inf")
            for _ in range(3):
                with engine.begin() as connection:
                    connection.execute(rows.delete())
                started = time.perf_counter()
                assert task.apply(task_id=str(uuid.uuid4()), throw=True).state == "SUCCESS"
                best = min(best, time.perf_counter() - started)
            timings.append(best / batches)
    finally:
        rows.drop(engine)
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP TABLE IF EXISTS bench_checkpoints_{table_suffix}"))
        engine.dispose()
    return timings[0], timings[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--store", action="append", help="database URL (repeatable)")
    args = parser.parse_args()
    stores = args.store or [
        f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.sqlite3'}",
        "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    ]
    print(f"A transaction of {ROWS_PER_BATCH} inserted rows per batch, {args.batches} batches")
    print(
        f"{'database':12}  {'plain batch':>12}  {'with set_step_cursor_tx':>24}  {'overhead':>10}"
    )
    for url in stores:
        name = sa.engine.make_url(url).get_backend_name()
        try:
            plain, resumable = measure(url, args.batches)
        except sa.exc.OperationalError as exc:
            print(f"{name:12}  skipped: {exc.orig}")
            continue
        print(
            f"{name:12}  {plain * 1e3:>9.3f} ms  {resumable * 1e3:>21.3f} ms  "
            f"{(resumable - plain) * 1e3:>+7.3f} ms"
        )


if __name__ == "__main__":
    main()
