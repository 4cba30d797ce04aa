"""A fleet on one PostgreSQL: P worker processes sustaining short resumable runs.

For each P of ``--workers``, a database of its own (``benchmarks/pg_meter.py``) holds the
checkpoint table, and P ``celery worker -P solo`` processes (``benchmarks/fleet_app.py``)
take a resumable task of 3 small steps from one Redis queue, which a thread of this
script keeps filled. After a warm-up, a window of ``--seconds`` seconds is measured:

- runs/s: finished runs (a Redis counter, from Celery's ``task_postrun``);
- commits/s and per run: ``pg_stat_database.xact_commit`` of the store's database;
- flushes and WAL bytes per run: the WAL of that database's transactions
  (``pg_walinspect``): their COMMIT records and their bytes;
- table bytes per run: the growth of ``pg_total_relation_size`` of the checkpoint table
  (indexes and TOAST included) over the rows added, before the first purge;
- purge: meanwhile this script calls ``checkpoint_store(app).purge(older_than=--keep)``
  every ``--purge-every`` seconds, from ``--keep`` seconds into the window on. It keeps
  pace when no completed row older than ``--keep`` plus twice the interval is left at the
  end, and no call took longer than the interval.

Everything shares the machine: the producer thread, Redis, PostgreSQL and the workers.

    python benchmarks/bench_fleet.py [--workers 1 2 4] [--seconds 60] [--keep 15]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python benchmarks/bench_fleet.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
import redis
from celery import Celery

from benchmarks.bench_overhead import positive
from benchmarks.common import (
    POSTGRES_URL,
    REDIS_URL,
    print_header,
    print_table,
    reachable,
    safe,
)
from benchmarks.pg_meter import Delta, Server
from benchmarks.workers import (
    Worker,
    WorkerError,
    delete_keys,
    wait_for_count,
    worker_env,
)
from celery_resumable import checkpoint_store
from celery_resumable.store.done import MOVED_AFTER

DESCRIPTION = "P worker processes sustaining short resumable runs against one PostgreSQL."
APP = "benchmarks.fleet_app"
TASK = "bench.fleet_steps"
TABLE = "celery_resumable_checkpoints"
WARM_UP_RUNS = 50  # per worker
WARM_UP_SECONDS = 3.0
START_TIMEOUT = 90.0
QUEUE_LOW = 2000  # the producer tops the queue up below this many messages
QUEUE_BATCH = 1000


@dataclasses.dataclass
class Table:
    """The checkpoint table at one moment."""

    bytes: int
    rows: int


@dataclasses.dataclass
class Purges:
    """What the concurrent purge did."""

    calls: int = 0
    deleted: int = 0
    longest: float = 0.0
    before_first: Table | None = None  # the table just before the first purge
    errors: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class FleetResult:
    """One window of P workers."""

    workers: int
    seconds: float
    runs: int
    failed: int
    delta: Delta
    start: Table
    end: Table
    backlog: int
    purges: Purges
    every: float
    row_bytes: tuple[float, float, float]  # a completed row, its finished_steps, its request

    @property
    def table_bytes_per_run(self) -> float | None:
        """Growth of the table over the rows added, before the first purge."""
        first = self.purges.before_first
        if first is None or first.rows <= self.start.rows:
            return None
        return (first.bytes - self.start.bytes) / (first.rows - self.start.rows)

    @property
    def keeps_pace(self) -> bool:
        """No old completed row left, and no purge call longer than the interval."""
        return (
            self.backlog == 0
            and self.purges.longest <= self.every
            and not self.purges.errors
            and self.purges.calls > 0
        )


class Fleet:
    """P workers on one queue, a producer keeping it filled, and the store's database."""

    def __init__(
        self,
        workers: int,
        server: Server,
        broker: str,
        directory: Path,
        database: str,
        partitioned: bool = False,
    ) -> None:
        self.partitioned = partitioned
        self.queue = f"bench-fleet-{uuid.uuid4().hex[:8]}"
        self.counter = f"{self.queue}:finished"
        self.broker = broker
        self.server = server
        self.database = database
        self.store_url = server.url(database)
        self.redis = redis.Redis.from_url(broker)
        self.client = Celery("bench_fleet_client", broker=broker)
        self.stop_producing = threading.Event()
        self.producer_error: list[str] = []
        self.send(QUEUE_LOW + QUEUE_BATCH)
        self.producer = threading.Thread(target=self.produce, name="producer", daemon=True)
        self.producer.start()
        env = worker_env(
            {
                "BENCH_BROKER": broker,
                "BENCH_QUEUE": self.queue,
                "BENCH_STORE": self.store_url,
                "BENCH_TABLE": TABLE,
                "BENCH_COUNTER": self.counter,
                "BENCH_PARTITIONS": "1" if partitioned else "",
            }
        )
        self.workers = [
            Worker(APP, self.queue, f"{self.queue}-{index}", env, directory / f"w{index}.log")
            for index in range(workers)
        ]
        self.table_connection: psycopg.Connection[Any] | None = None

    def send(self, count: int) -> None:
        """Send ``count`` tasks."""
        with self.client.producer_or_acquire() as producer:
            for _ in range(count):
                self.client.send_task(TASK, queue=self.queue, producer=producer)

    def produce(self) -> None:
        """Keep at least QUEUE_LOW messages on the queue until told to stop."""
        try:
            while not self.stop_producing.is_set():
                if int(self.redis.llen(self.queue)) < QUEUE_LOW:
                    self.send(QUEUE_BATCH)
                else:
                    self.stop_producing.wait(0.05)
        except Exception as exc:  # noqa: BLE001 - reported with the results
            self.producer_error.append(repr(exc))

    def finished(self) -> int:
        """Runs finished so far."""
        return int(self.redis.get(self.counter) or 0)

    def failed(self) -> int:
        """Runs that did not succeed so far."""
        return int(self.redis.get(f"{self.counter}:failed") or 0)

    def table(self) -> Table:
        """The checkpoint table's size (indexes and TOAST included) and rows."""
        if self.table_connection is None:
            self.table_connection = self.server.connect(self.database)
        return table_now(self.table_connection, self.partitioned)

    def backlog(self, seconds: float) -> int:
        """Completed rows not written for more than ``seconds`` seconds."""
        assert self.table_connection is not None
        row = self.table_connection.execute(
            f"SELECT count(*) FROM {TABLE} WHERE status = 'completed' AND updated_at < "
            "timezone('UTC', statement_timestamp()) - make_interval(secs => %s)",
            (seconds,),
        ).fetchone()
        assert row is not None
        return int(row[0])

    def row_bytes(self) -> tuple[float, float, float]:
        """The mean size of a completed row (``pg_column_size``), of its finished_steps and
        of its request."""
        assert self.table_connection is not None
        row = self.table_connection.execute(
            "SELECT avg(pg_column_size(t.*)), avg(pg_column_size(t.finished_steps)), "
            f"avg(pg_column_size(t.request)) FROM {TABLE} AS t WHERE status = 'completed'"
        ).fetchone()
        assert row is not None
        return float(row[0] or 0), float(row[1] or 0), float(row[2] or 0)

    def close(self) -> None:
        """Stop the producer and the workers; delete the Redis keys."""
        self.stop_producing.set()
        self.producer.join(30)
        for worker in self.workers:
            worker.process.terminate()
        for worker in self.workers:
            worker.stop()
        if self.table_connection is not None:
            self.table_connection.close()
        delete_keys(self.redis, f"*{self.queue}*")
        self.client.close()
        self.redis.close()


def table_now(connection: psycopg.Connection[Any], partitioned: bool) -> Table:
    """The checkpoint table's size (indexes and TOAST included, and with ``partitioned`` its
    partitions') and its rows (one per run)."""
    done = (
        " + (SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits "
        f"WHERE inhparent = '{TABLE}_done'::regclass)"
        if partitioned
        else ""
    )
    row = connection.execute(
        f"SELECT pg_total_relation_size('{TABLE}'){done}, count(*) FROM {TABLE}"
    ).fetchone()
    assert row is not None
    return Table(int(row[0]), int(row[1]))


def purge_loop(
    fleet: Fleet, start: float, args: argparse.Namespace, stop: threading.Event, purges: Purges
) -> None:
    """From ``--keep`` seconds after ``start`` on, purge every ``--purge-every`` seconds."""
    app = Celery("bench_fleet_purge")
    app.conf.resumable_store_url = fleet.store_url
    app.conf.resumable_table_name = TABLE
    app.conf.resumable_partitions = fleet.partitioned
    store = checkpoint_store(app)
    connection = fleet.server.connect(fleet.database)
    try:
        next_call = start + args.keep
        while not stop.wait(max(0.0, next_call - time.perf_counter())):
            if purges.before_first is None:
                purges.before_first = table_now(connection, fleet.partitioned)
            began = time.perf_counter()
            try:
                purges.deleted += store.purge(older_than=args.keep)
            except Exception as exc:  # noqa: BLE001 - reported with the results
                purges.errors.append(repr(exc))
            took = time.perf_counter() - began
            purges.calls += 1
            purges.longest = max(purges.longest, took)
            next_call += args.purge_every
    finally:
        connection.close()


def measure(workers: int, server: Server, args: argparse.Namespace) -> FleetResult:
    """Run P workers for the window; return what was measured."""
    database = server.create(f"fleet_p{workers}")
    with tempfile.TemporaryDirectory(prefix="celery-resumable-bench-") as directory:
        fleet = Fleet(workers, server, args.broker, Path(directory), database, args.partitions)
        try:
            began = time.perf_counter()
            wait_for_count(
                fleet.redis,
                fleet.counter,
                WARM_UP_RUNS * workers,
                fleet.workers,
                START_TIMEOUT,
                f"{fleet.counter}:failed",
            )
            time.sleep(max(0.0, began + WARM_UP_SECONDS - time.perf_counter()))
            start_table = fleet.table()
            runs_before, failed_before = fleet.finished(), fleet.failed()
            before = server.counters(database)
            stop = threading.Event()
            purges = Purges()
            purger = threading.Thread(
                target=purge_loop,
                args=(fleet, before.at, args, stop, purges),
                name="purge",
                daemon=True,
            )
            purger.start()
            deadline = before.at + args.seconds
            while time.perf_counter() < deadline:
                for worker in fleet.workers:
                    worker.check()
                time.sleep(min(0.5, max(0.0, deadline - time.perf_counter())))
            after = server.counters(database)
            runs, failed = fleet.finished() - runs_before, fleet.failed() - failed_before
            stop.set()
            purger.join(60)
            end_table = fleet.table()
            backlog = fleet.backlog(kept(args) + 2 * args.purge_every)
            row_bytes = fleet.row_bytes()
        finally:
            fleet.close()
    if fleet.producer_error:
        raise WorkerError(f"the producer failed: {fleet.producer_error[0]}")
    return FleetResult(
        workers,
        after.at - before.at,
        runs,
        failed,
        server.delta(before, after),
        start_table,
        end_table,
        backlog,
        purges,
        args.purge_every,
        row_bytes,
    )


def row_of(result: FleetResult) -> list[str]:
    """One row of the table."""
    runs = max(result.runs, 1)
    delta = result.delta
    per_run = result.table_bytes_per_run
    purges = result.purges
    pace = "yes" if result.keeps_pace else "no"
    return [
        str(result.workers),
        f"{result.runs / result.seconds:,.0f}",
        f"{delta.commits / result.seconds:,.0f}",
        f"{delta.commits / runs:.2f}",
        f"{delta.wal.commits / runs:.2f}",
        f"{delta.wal.bytes / runs:,.0f}",
        "-" if per_run is None else f"{per_run:,.0f}",
        f"{result.end.rows:,}",
        f"{purges.deleted / result.seconds:,.0f}",
        f"{purges.longest * 1e3:,.0f} ms",
        f"{pace} ({result.backlog:,} old)",
    ]


def kept(args: argparse.Namespace) -> float:
    """How long purge leaves a completed row in the checkpoint table."""
    return max(args.keep, MOVED_AFTER) if args.partitions else args.keep


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument(
        "--workers", type=positive, nargs="+", default=[1, 2, 4], help="worker processes (P)"
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="the measured window")
    parser.add_argument(
        "--keep", type=float, default=15.0, help="the purge deletes rows older than this (s)"
    )
    parser.add_argument("--purge-every", type=float, default=5.0, help="seconds between purges")
    parser.add_argument(
        "--store",
        default=POSTGRES_URL,
        help="SQLAlchemy URL of the PostgreSQL server (its databases are created and dropped)",
    )
    parser.add_argument("--broker", default=REDIS_URL, help="Redis broker")
    parser.add_argument(
        "--partitions",
        action="store_true",
        help="resumable_partitions: completed runs also go to time partitions",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the fleet for each P and print the table."""
    args = parse_args(argv)
    started = time.perf_counter()
    print_header("A fleet on one PostgreSQL: P worker processes, short resumable runs")
    for name, url in (("PostgreSQL", args.store), ("Redis", args.broker)):
        if not reachable(url):
            print(f"{name} does not answer at {safe(url) if name == 'PostgreSQL' else url}")
            return
    results: list[FleetResult] = []
    with Server(args.store) as server:
        print(
            f"PostgreSQL {server.version} at {safe(args.store)}, databases {server.prefix}_*; "
            f"{os.cpu_count()} CPUs"
        )
        print()
        others_before = server.other_commits()
        for workers in args.workers:
            results.append(measure(workers, server, args))
        others_after = server.other_commits()
        whole = any(result.delta.wal.whole_server for result in results)
    busy = {
        name: others_after[name] - others_before.get(name, 0)
        for name in others_after
        if others_after[name] != others_before.get(name, 0)
    }
    failures = [f"P={r.workers}: {r.failed} runs failed" for r in results if r.failed]
    errors = [
        f"P={r.workers}: purge failed: {r.purges.errors[0]}" for r in results if r.purges.errors
    ]
    print_table(
        f"Worker processes (solo pool) sustaining a 3-step resumable task for {args.seconds:g} s; "
        f"purge(older_than={args.keep:g}) every {args.purge_every:g} s"
        + (", time partitions (resumable_partitions)" if args.partitions else ""),
        [
            "P",
            "runs/s",
            "commits/s",
            "commits/run",
            "flushes/run",
            "WAL bytes/run",
            "table bytes/run",
            "rows at end",
            "purged/s",
            "longest purge",
            "purge keeps pace",
        ],
        [row_of(result) for result in results],
        [
            *failures,
            *errors,
            "commits: pg_stat_database.xact_commit of the store's database (servers report "
            "it at most once a second per connection); flushes: COMMIT records of its "
            "transactions in the WAL; WAL bytes: those transactions' records"
            + (" (whole server: pg_walinspect missing)" if whole else ""),
            "table bytes/run: growth of pg_total_relation_size (indexes, TOAST) over the "
            "rows added, before the first purge",
            "a completed row at the end (pg_column_size, mean): "
            + ", ".join(
                sorted(
                    {
                        f"{r.row_bytes[0]:,.0f} bytes, of which finished_steps "
                        f"{r.row_bytes[1]:,.0f} and request {r.row_bytes[2]:,.0f}"
                        for r in results
                    }
                )
            ),
            "purge keeps pace: no completed row older than "
            f"{kept(args) + 2 * args.purge_every:g} s left at the end (old), and no purge "
            "call longer than the interval"
            + (
                "; partitions: a completed checkpoint row stays "
                f"{MOVED_AFTER:g} s beside its _done row, and table bytes count both tables"
                if args.partitions
                else ""
            ),
            "the commits, flushes and WAL include the purge's and the lease renewals'",
            "other databases of the server committed meanwhile (not counted): "
            + (", ".join(f"{name} {count:,}" for name, count in sorted(busy.items())) or "none"),
        ],
    )
    print(f"total time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
