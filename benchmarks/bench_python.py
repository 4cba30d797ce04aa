"""The Python part of a resumable run: its added time with the driver's time taken out.

For each store (SQLite in a temporary directory, PostgreSQL and MariaDB on 127.0.0.1 when
they answer, or the ``--store`` URLs), the script times ``task.apply()`` runs of a task of
three small steps, as a resumable task and as a plain task, in a process set up as a
worker's pool process. Each connection of the store's engine is wrapped (from outside the
library, by the pool's ``connect`` event) so that the time spent inside the driver's
``cursor.execute``, ``fetch*`` and ``close`` is added up. A run's Python part is then:

    resumable run - time in the driver - plain run

which is what the library adds to a run in this process's Python: its run lifecycle, the
steps, the store's plumbing and SQLAlchemy's type processors, but not the database's work
(which for SQLite runs in this process, inside ``execute``) nor the wire. It also holds
what the run's work does to the Celery code around it (evicted CPU caches make Celery's
own tracer slower after a run than after a plain task), so the table also shows the time
inside the task's body wrapper alone (``task.run``, the run from its claim to its
completion write), less the time in the driver: the library's own code.

    python -m benchmarks.bench_python [--runs 2000] [--repeat 5] [--cpu N] [--store URL ...]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import sqlalchemy as sa

import celery_resumable
from benchmarks.bench_overhead import STEPS_RESULT, build_tasks, positive, runner, seconds
from benchmarks.common import (
    add_store_option,
    database,
    print_header,
    print_table,
    store_urls,
    table_name,
)
from celery_resumable import checkpoint_store
from celery_resumable.store import held
from celery_resumable.testing import stop_lease_keeper

DESCRIPTION = "The Python part of a resumable run, with the driver's time taken out."
WARM_UP_RUNS = 50
TARGET = 80e-6
ASLEEP = 300.0  # microseconds: about what a statement's round trip and commit take
COUNTED_RUNS = 100  # runs whose bytecodes are counted (traced: slow, but exact)
PACKAGE = os.path.dirname(celery_resumable.__file__)


class DriverClock:
    """Adds up the time spent in the driver's cursor calls, on every connection wrapped.

    With ``asleep`` each ``execute`` is followed by a sleep of that many seconds, counted
    as the driver's: the thread then waits as it waits for a server's answer, and the
    run's own code is the same.
    """

    def __init__(self, asleep: float = 0.0) -> None:
        self.seconds = 0.0
        self.calls = 0
        self.asleep = asleep


def _timed(name: str, sleeps: bool = False) -> Callable[..., Any]:
    """The cursor method ``name``, its time added to the clock's (``sleeps``: followed by
    the clock's sleep, as a server's answer is waited for)."""

    def call(self: TimedCursor, *args: Any) -> Any:
        clock = self._clock
        started = time.perf_counter()
        try:
            return getattr(self._cursor, name)(*args)
        finally:
            if sleeps and clock.asleep:
                time.sleep(clock.asleep)
            clock.seconds += time.perf_counter() - started
            clock.calls += 1

    return call


class TimedCursor:
    """A driver cursor whose execute, fetch and close calls, and ``rowcount`` reads, are
    timed. Each is one frame of its own, so that little of the timing itself falls
    outside the time it adds up; ``rowcount`` is a property of the class, read without
    the ``__getattr__`` fallback (a failed lookup first), since some drivers compute it
    in Python (psycopg)."""

    __slots__ = ("_clock", "_cursor")

    execute = _timed("execute", sleeps=True)
    fetchall = _timed("fetchall")
    fetchone = _timed("fetchone")
    close = _timed("close")

    def __init__(self, cursor: Any, clock: DriverClock) -> None:
        self._cursor = cursor
        self._clock = clock

    @property
    def rowcount(self) -> Any:
        started = time.perf_counter()
        try:
            return self._cursor.rowcount
        finally:
            self._clock.seconds += time.perf_counter() - started

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class TimedConnection:
    """A driver connection whose cursors are ``TimedCursor``s; everything else passes."""

    def __init__(self, connection: Any, clock: DriverClock) -> None:
        object.__setattr__(self, "_connection", connection)
        object.__setattr__(self, "_clock", clock)

    def cursor(self, *args: Any, **kwargs: Any) -> TimedCursor:
        return TimedCursor(self._connection.cursor(*args, **kwargs), self._clock)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._connection, name, value)


def time_the_driver(engine: sa.Engine, clock: DriverClock) -> None:
    """Wrap every connection ``engine`` opens from now on (before its first)."""

    def on_connect(_dbapi_connection: Any, record: Any) -> None:
        record.dbapi_connection = TimedConnection(record.dbapi_connection, clock)

    sa.event.listen(engine, "connect", on_connect)


def time_the_body(task: Any) -> DriverClock:
    """Add up the time spent in ``task.run`` (the body as Celery's tracer calls it)."""
    clock = DriverClock()
    body = task.run

    def run(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return body(*args, **kwargs)
        finally:
            clock.seconds += time.perf_counter() - started

    task.run = run
    return clock


def count_bytecodes(task: Any, runs: int) -> float:
    """The bytecode instructions that the package's own functions execute per run of
    ``task`` (``sys.settrace`` opcode events, in frames of the package only): a measure
    of the library's code that does not depend on the machine or its load."""
    counted = 0

    def count(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal counted
        if event == "opcode":
            counted += 1
        return count

    def enter(frame: FrameType, event: str, arg: Any) -> Any:
        if not frame.f_code.co_filename.startswith(PACKAGE):
            return None  # its callees in the package are still counted
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        return count

    body = task.run

    def run(*args: Any, **kwargs: Any) -> Any:
        sys.settrace(enter)
        try:
            return body(*args, **kwargs)
        finally:
            sys.settrace(None)

    task.run = run
    try:
        runner(task, (), STEPS_RESULT, runs)()
    finally:
        task.run = body
    return counted / runs


def measure(url: str, runs: int, repeat: int, asleep: float = 0.0) -> list[str]:
    """One row: plain run, resumable run, time in the driver, Python part, its target
    (with ``asleep``, a sleep of that many seconds after each statement, as the driver's)."""
    tasks = build_tasks(url, table_name())
    store = checkpoint_store(tasks.app)
    clock = DriverClock(asleep)
    try:
        time_the_driver(store.engine, clock)
        for task in (tasks.plain_steps, tasks.resumable_steps):
            runner(task, (), STEPS_RESULT, WARM_UP_RUNS)()
        inside = time_the_body(tasks.resumable_steps)
        plain = resumable = driver = body = float("inf")
        calls = 0
        gc.collect()
        for _ in range(repeat):
            started = time.perf_counter()
            runner(tasks.plain_steps, (), STEPS_RESULT, runs)()
            plain = min(plain, (time.perf_counter() - started) / runs)
            clock.seconds, clock.calls = 0.0, 0
            inside.seconds = 0.0
            started = time.perf_counter()
            runner(tasks.resumable_steps, (), STEPS_RESULT, runs)()
            elapsed = (time.perf_counter() - started) / runs
            if elapsed < resumable:
                resumable, driver, calls = elapsed, clock.seconds / runs, clock.calls
                body = (inside.seconds - clock.seconds) / runs
        python = resumable - driver - plain
        bytecodes = count_bytecodes(tasks.resumable_steps, COUNTED_RUNS)
        name = database(store.engine)
        return [
            f"{name}, asleep {asleep * 1e6:.0f} us" if asleep else name,
            seconds(plain),
            seconds(resumable),
            seconds(driver),
            f"{calls / runs:.1f}",
            seconds(python),
            seconds(body),
            "yes" if body <= TARGET else "no",
            f"{bytecodes:,.0f}",
        ]
    finally:
        stop_lease_keeper()  # it would purge the dropped table next
        store.table.drop(store.engine, checkfirst=True)
        store.engine.dispose()
        held.drop_all(url)  # the next measure's connections are timed from the start


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--runs", type=positive, default=2000, help="task runs per timing")
    parser.add_argument("--repeat", type=positive, default=5, help="timings; the best is kept")
    parser.add_argument(
        "--asleep",
        type=float,
        default=ASLEEP,
        help="microseconds of the SQLite row run again with a sleep after each statement "
        "(0: no such row)",
    )
    parser.add_argument(
        "--cpu",
        type=int,
        default=None,
        help="run this process on this CPU only: a core the database does not use (its "
        "server processes, its disk's interrupts), as for a worker whose database is on "
        "another host",
    )
    add_store_option(parser)
    return parser.parse_args(argv)


def pin(cpu: int | None) -> str:
    """Keep this process on ``cpu`` (None: where the scheduler puts it); says where."""
    if cpu is None:
        return "any CPU"
    try:
        os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError, ValueError) as exc:
        raise SystemExit(f"--cpu {cpu}: cannot run this process on that CPU: {exc}") from None
    return f"CPU {cpu} only"


def main(argv: Sequence[str] | None = None) -> None:
    """Print the table."""
    args = parse_args(argv)
    where = pin(args.cpu)
    started = time.perf_counter()
    # Eager runs in a row share the lease keeper's thread, as a worker's runs do.
    print_header("The Python part of a resumable run, with the driver's time taken out")
    rows = []
    with tempfile.TemporaryDirectory(prefix="celery-resumable-bench-") as directory:
        for url in store_urls(args.store, directory):
            rows.append(measure(url, args.runs, args.repeat))
            if url.startswith("sqlite") and args.asleep > 0:
                rows.append(measure(url, args.runs, args.repeat, args.asleep / 1e6))
    if rows:
        print_table(
            f"Per run of 3 small steps, task.apply(), best of {args.repeat} timings of "
            f"{args.runs:,} runs, on {where}",
            [
                "database",
                "plain run",
                "resumable run",
                "in the driver",
                "driver calls",
                "Python part",
                "in the run",
                f"<= {seconds(TARGET)}",
                "bytecodes",
            ],
            rows,
            [
                "in the driver: time inside the driver's cursor execute/fetch/close calls "
                "(for SQLite, the database's own work)",
                "Python part: resumable run - in the driver - plain run: what the library "
                "adds to a run in this process's Python",
                "in the run: time inside the task's body wrapper (task.run: claim, steps, "
                "completion) - in the driver: the library's own code; the target",
                "bytecodes: bytecode instructions the package's own functions execute per "
                "run, the same on any machine",
                f"asleep: the same SQLite runs with a sleep of {args.asleep:g} us after each "
                "statement, counted as the driver's: the same code, its thread waiting as it "
                "waits for a server",
            ],
        )
    print(f"total time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
