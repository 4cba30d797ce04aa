"""Throughput of short tasks on a real worker: a resumable 3-step task next to a plain one.

For each store (SQLite in a temporary directory and PostgreSQL on 127.0.0.1, or the
``--store`` URLs) and each pool (solo, prefork), one real ``celery worker`` process on a
Redis broker runs both kinds of task (``benchmarks/throughput_app.py``). A round sends
``--tasks`` tasks of one kind and waits until the worker has finished them all (each
finished task adds one to a Redis counter, from Celery's ``task_postrun`` signal, so
after the store's last write), then does the same with the other kind; the kind that
goes first alternates. The script prints tasks/s of each kind per round and their ratio,
then the median ratio of the rounds.

    python -m benchmarks.bench_throughput [--tasks 300] [--rounds 7] [--store URL ...]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import redis
from celery import Celery

from benchmarks.bench_overhead import positive
from benchmarks.bench_run_cost import BareUpdate, interleaved_best
from benchmarks.common import (
    POSTGRES_URL,
    REDIS_URL,
    ROOT,
    label,
    median,
    print_header,
    print_table,
    reachable,
    safe,
    table_name,
)
from celery_resumable import checkpoint_store

DESCRIPTION = "Tasks per second of a resumable 3-step task next to the same plain task."
APP = "benchmarks.throughput_app"
TASKS = {"plain": "bench.plain_steps", "resumable": "bench.resumable_steps"}
TARGETS = {"SQLite": 0.85, "PostgreSQL": 0.8}
WARM_UP_TASKS = 20
START_TIMEOUT = 90.0


class WorkerError(RuntimeError):
    """Raised when the worker exits, or a task fails, or a round does not finish."""


class Worker:
    """One ``celery worker`` process, in its own process group."""

    def __init__(self, env: dict[str, str], pool: str, concurrency: int, log: Path) -> None:
        self.log_path = log
        command = [
            sys.executable, "-m", "celery", "-A", APP, "worker",
            "-P", pool, "-c", str(concurrency), "-Q", env["BENCH_QUEUE"],
            "-n", f"{env['BENCH_QUEUE']}@%h", f"--loglevel={env['BENCH_LOGLEVEL']}",
            "--without-mingle", "--without-gossip", "--without-heartbeat",
        ]  # fmt: skip
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=out, stderr=out, start_new_session=True
            )

    def check(self) -> None:
        """Raise WorkerError when the worker has exited."""
        if self.process.poll() is not None:
            raise WorkerError(f"the worker exited with {self.process.returncode}: {self.tail()}")

    def tail(self) -> str:
        """The end of the worker's log."""
        text = self.log_path.read_text(errors="replace")
        return text[-2000:]

    def stop(self) -> None:
        """Stop the worker (warm shutdown, then SIGKILL to its process group)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@dataclasses.dataclass
class Result:
    """The rounds of one store and pool."""

    store: str
    pool: str
    concurrency: int = 1
    plain: list[float] = dataclasses.field(default_factory=list)
    resumable: list[float] = dataclasses.field(default_factory=list)
    update_seconds: float = 0.0  # one bare single-row UPDATE on the store, after the rounds

    @property
    def ratios(self) -> list[float]:
        """Resumable tasks/s over plain tasks/s, per round."""
        return [r / p for p, r in zip(self.plain, self.resumable, strict=True)]

    @property
    def ceiling(self) -> float:
        """The ratio if a resumable task cost its plain task plus two bare UPDATEs.

        The best any design of two statements per run could reach on this machine: a
        pool process spends ``concurrency / plain tasks/s`` on a plain task.
        """
        plain = self.concurrency / median(self.plain)
        return plain / (plain + 2 * self.update_seconds)


class Bench:
    """A queue, the Redis counters and a client sending tasks to one worker."""

    def __init__(self, broker: str, store: str, table: str, loglevel: str) -> None:
        self.queue = f"bench-throughput-{uuid.uuid4().hex[:8]}"
        self.counter = f"{self.queue}:finished"
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "BENCH_BROKER": broker,
            "BENCH_QUEUE": self.queue,
            "BENCH_STORE": store,
            "BENCH_TABLE": table,
            "BENCH_COUNTER": self.counter,
            "BENCH_LOGLEVEL": loglevel,
        }
        self.redis = redis.Redis.from_url(broker)
        self.client = Celery("bench_throughput_client", broker=broker)

    def finished(self, kind: str) -> int:
        """How many tasks of ``kind`` the worker has finished so far."""
        return int(self.redis.get(f"{self.counter}:{kind}") or 0)

    def send(self, kind: str, count: int, worker: Worker, timeout: float) -> float:
        """Send ``count`` tasks of ``kind``, wait until all finished; return tasks/s."""
        target = self.finished(kind) + count
        started = time.perf_counter()
        with self.client.producer_or_acquire() as producer:
            for _ in range(count):
                self.client.send_task(TASKS[kind], queue=self.queue, producer=producer)
        deadline = time.monotonic() + timeout
        while self.finished(kind) < target:
            if self.finished("failed"):
                raise WorkerError(f"a {kind} task failed: {worker.tail()}")
            worker.check()
            if time.monotonic() > deadline:
                raise WorkerError(f"{kind} tasks unfinished after {timeout:.0f} s")
            time.sleep(0.002)
        return count / (time.perf_counter() - started)

    def close(self) -> None:
        """Delete the queue's and the counters' Redis keys."""
        keys = list(self.redis.scan_iter(match=f"*{self.queue}*"))
        if keys:
            self.redis.delete(*keys)
        self.client.close()
        self.redis.close()


def measure(store: str, pool: str, args: argparse.Namespace, directory: Path, table: str) -> Result:
    """Start a worker on ``store`` with ``pool``, warm it up, run the rounds."""
    concurrency = 1 if pool == "solo" else args.concurrency
    pool_label = pool if pool == "solo" else f"{pool} -c {concurrency}"
    result = Result(label(store), pool_label, concurrency)
    bench = Bench(args.broker, store, table, args.loglevel)
    worker = Worker(bench.env, pool, concurrency, directory / f"{bench.queue}.log")
    try:
        for kind in TASKS:
            bench.send(kind, WARM_UP_TASKS, worker, START_TIMEOUT)
        rows = []
        for number in range(1, args.rounds + 1):
            order = ("plain", "resumable") if number % 2 else ("resumable", "plain")
            rates = {kind: bench.send(kind, args.tasks, worker, args.timeout) for kind in order}
            result.plain.append(rates["plain"])
            result.resumable.append(rates["resumable"])
            rows.append(
                [
                    str(number),
                    order[0],
                    f"{rates['plain']:,.0f}",
                    f"{rates['resumable']:,.0f}",
                    f"{rates['resumable'] / rates['plain']:.2f}",
                ]
            )
        rows.append(
            [
                "median",
                "",
                f"{median(result.plain):,.0f}",
                f"{median(result.resumable):,.0f}",
                f"{median(result.ratios):.2f}",
            ]
        )
        print_table(
            f"{result.store} store, {result.pool} pool, {args.tasks} tasks of a kind per round",
            ["round", "first", "plain tasks/s", "resumable tasks/s", "ratio"],
            rows,
        )
    finally:
        worker.stop()
        bench.close()
    result.update_seconds = update_time(store, table)
    return result


def update_time(store: str, table: str, updates: int = 1000, repeat: int = 5) -> float:
    """The time of one bare autocommit single-row UPDATE on ``store`` (best of ``repeat``)."""
    app = Celery("bench_throughput_update")
    app.conf.update(resumable_store_url=store, resumable_table_name=table)
    bare = BareUpdate(checkpoint_store(app).engine)
    try:
        bare.driver_runner(updates)()
        return interleaved_best({"update": bare.driver_runner(updates)}, repeat)["update"] / updates
    finally:
        bare.close()


def drop_table(store: str, table: str) -> None:
    """Drop the benchmark's checkpoint table and close the store's connections."""
    app = Celery("bench_throughput_cleanup")
    app.conf.update(resumable_store_url=store, resumable_table_name=table)
    checkpoint = checkpoint_store(app)
    checkpoint.table.drop(checkpoint.engine, checkfirst=True)
    checkpoint.engine.dispose()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--tasks", type=positive, default=300, help="tasks of a kind per round")
    parser.add_argument("--rounds", type=positive, default=7, help="rounds per store and pool")
    parser.add_argument(
        "--store",
        action="append",
        help="SQLAlchemy URL of a store (repeatable; default SQLite and PostgreSQL)",
    )
    parser.add_argument(
        "--pool",
        action="append",
        choices=("solo", "prefork", "threads"),
        help="worker pool (repeatable; default solo and prefork)",
    )
    parser.add_argument("--concurrency", type=positive, default=2, help="processes of prefork")
    parser.add_argument("--broker", default=REDIS_URL, help="Redis broker URL")
    parser.add_argument("--loglevel", default="WARNING", help="the worker's log level")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds a round may take at most"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Measure every store with every pool and print the summary."""
    args = parse_args(argv)
    started = time.perf_counter()
    print_header("Throughput of a 3-step task on a real worker, resumable next to plain")
    if not reachable(args.broker):
        raise SystemExit(f"the broker {safe(args.broker)} does not answer")
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="celery-resumable-throughput-") as name:
        directory = Path(name)
        stores = args.store or [f"sqlite:///{directory}/bench.sqlite3", POSTGRES_URL]
        for store in stores:
            if not reachable(store):
                print(f"skipped {label(store)}: {safe(store)} does not answer\n")
                continue
            table = table_name()
            try:
                for pool in args.pool or ("solo", "prefork"):
                    results.append(measure(store, pool, args, directory, table))
            finally:
                drop_table(store, table)
    rows = [
        [
            result.store,
            result.pool,
            f"{median(result.plain):,.0f}",
            f"{median(result.resumable):,.0f}",
            f"{median(result.ratios):.2f} ({min(result.ratios):.2f}-{max(result.ratios):.2f})",
            f"{result.update_seconds * 1e6:,.0f} us",
            f"{result.ceiling:.2f}",
            f">= {TARGETS[result.store]}" if result.store in TARGETS else "",
        ]
        for result in results
    ]
    print_table(
        f"Throughput, Redis broker, {args.tasks} tasks of a kind per round, "
        f"median of {args.rounds} rounds",
        [
            "store",
            "pool",
            "plain tasks/s",
            "resumable tasks/s",
            "ratio (range)",
            "UPDATE",
            "ceiling",
            "target",
        ],
        rows,
        [
            f"worker log level {args.loglevel}; the producer and the worker share this machine",
            "UPDATE: one bare autocommit single-row UPDATE on the store, through its driver",
            "ceiling: the ratio if each resumable task cost the plain task's time in a pool "
            "process plus two UPDATEs",
            "(the claim and the completion write, with no other cost): the most two statements "
            "per run allow here",
        ],
    )
    print(f"total time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
