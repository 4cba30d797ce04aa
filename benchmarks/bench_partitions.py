"""A run's cost beside retention: a large DELETE against a partition dropped whole.

Two stores on one PostgreSQL, each holding ``--old`` completed runs past their
retention: the default checkpoint table, whose purge deletes them in batches of rows,
and a store with ``resumable_partitions``, whose old runs sit in one partition of the
``_done`` table that purge drops. Short runs (three small steps, ``task.apply``)
go on in the main thread while purge runs in another; the table prints their latency
beside each purge, and with no purge at all, and how long each purge took.

    python -m benchmarks.bench_partitions [--old 200000] [--store postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Sequence

import sqlalchemy as sa

from benchmarks.bench_overhead import STEPS_RESULT, BenchTasks, build_tasks, positive
from benchmarks.common import POSTGRES_URL, print_header, print_table, reachable, table_name
from celery_resumable import CheckpointStore, checkpoint_store
from celery_resumable.store.partitions import create_partition
from celery_resumable.testing import stop_lease_keeper

DESCRIPTION = "A short run's latency beside a large DELETE and beside a partition drop."
WINDOW = 2.0  # seconds of runs at least, the purge starting with them


def fill_table(store: CheckpointStore, rows: int) -> None:
    """Put ``rows`` completed runs, two days old, in the checkpoint table."""
    store.get("warm-up")
    with store.engine.begin() as db:
        db.execute(
            sa.text(
                f"INSERT INTO {store.table_name} (task_id, task_name, status, finished_steps, "
                "interruptions, owner, created_at, updated_at) "
                "SELECT gen_random_uuid()::text, 'bench.resumable_steps', 'completed', "
                "'[]'::jsonb, 0, md5(i::text), now() - interval '2 days', "
                "now() - interval '2 days' FROM generate_series(1, :n) AS i"
            ),
            {"n": rows},
        )
        db.execute(sa.text(f"ANALYZE {store.table_name}"))


def fill_partition(store: CheckpointStore, rows: int) -> None:
    """Put ``rows`` completed runs, three days old, in a partition of their own."""
    store.get("warm-up")
    done = f"{store.table_name}_done"
    with store.engine.begin() as db:
        today = db.execute(sa.text("SELECT timezone('UTC', now())::date")).scalar_one()
        day = dt.datetime.combine(today - dt.timedelta(days=3), dt.time())
        db.execute(sa.text(create_partition(done, day, day + dt.timedelta(days=1))))
        db.execute(
            sa.text(
                f"INSERT INTO {done} SELECT CAST(:at AS timestamp), CAST(:at AS timestamp), "
                "0, gen_random_uuid()::text, 'bench.resumable_steps' "
                "FROM generate_series(1, :n)"
            ),
            {"n": rows, "at": day + dt.timedelta(hours=12)},
        )
        db.execute(sa.text(f"ANALYZE {done}"))


def runs_beside(tasks: BenchTasks, purge: Callable[[], int] | None) -> dict[str, float]:
    """Run short tasks from when ``purge`` starts (in a thread) until it ended and
    WINDOW seconds passed; their latencies, in ms."""
    task = tasks.resumable_steps
    latencies: list[float] = []
    ended = threading.Event()
    took: list[float] = []
    purged: list[int] = []

    def purging() -> None:
        started = time.perf_counter()
        try:
            if purge is not None:
                purged.append(purge())
        finally:
            took.append(time.perf_counter() - started)
            ended.set()

    for _ in range(50):  # warm the connections and the statements
        task.apply(task_id=str(uuid.uuid4()), throw=True)
    thread = threading.Thread(target=purging)
    deadline = time.perf_counter() + WINDOW
    thread.start()
    while not ended.is_set() or time.perf_counter() < deadline:
        started = time.perf_counter()
        result = task.apply(task_id=str(uuid.uuid4()), throw=True)
        latencies.append(time.perf_counter() - started)
        if result.result != STEPS_RESULT:
            raise RuntimeError(f"{task.name} ended {result.state}")
    thread.join()
    ordered = sorted(latencies)
    return {
        "runs": len(latencies),
        "median": statistics.median(ordered) * 1e3,
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3,
        "max": ordered[-1] * 1e3,
        "purge": took[0] if purge is not None else 0.0,
        "purged": purged[0] if purged else 0,
    }


def measure(url: str, old: int) -> dict[str, dict[str, float]]:
    """The runs beside no purge, a DELETE purge and a partition drop."""
    results = {}
    for partitioned in (False, True):
        tasks = build_tasks(url, table_name(), resumable_partitions=partitioned)
        store = checkpoint_store(tasks.app)
        try:
            layout = "partitions" if partitioned else "checkpoint table"
            results[f"{layout}, no purge"] = runs_beside(tasks, None)
            (fill_partition if partitioned else fill_table)(store, old)
            verb = "DROP of the old partition" if partitioned else "DELETE of the old rows"
            results[f"{layout}, beside the {verb}"] = runs_beside(
                tasks, lambda store=store: store.purge()
            )
        finally:
            stop_lease_keeper()
            with store.engine.begin() as db:
                name = store.table_name
                db.execute(sa.text(f"DROP TABLE IF EXISTS {name}, {name}_done"))
            store.engine.dispose()
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--old", type=positive, default=200_000, help="old runs to purge")
    parser.add_argument("--store", default=POSTGRES_URL, help="a PostgreSQL URL")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the table."""
    args = parse_args(argv)
    if not reachable(args.store):
        print(f"skipped: {args.store} does not answer")
        return
    started = time.perf_counter()
    print_header(DESCRIPTION)
    results = measure(args.store, args.old)
    print_table(
        f"A 3-step run (task.apply) while purge retires {args.old:,} old completed runs",
        ["beside", "runs", "median ms", "p99 ms", "max ms", "purge s", "rows purged"],
        [
            [
                what,
                f"{r['runs']:,.0f}",
                f"{r['median']:.2f}",
                f"{r['p99']:.2f}",
                f"{r['max']:.2f}",
                f"{r['purge']:.2f}" if r["purge"] else "-",
                f"{r['purged']:,.0f}" if r["purge"] else "-",
            ]
            for what, r in results.items()
        ],
        [
            "purge: store.purge() in a second thread of the same process; the runs go on "
            f"in the main thread until it returned and {WINDOW:.0f} s passed",
            "a partition is counted by PostgreSQL's estimate of its rows (reltuples)",
        ],
    )
    print(f"total time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
