"""Lease renewal statements per renewal interval, with 1 and with 50 runs in one process.

``--runs`` resumable runs are started in threads with ``task.apply()`` (1 run, then
``--runs``), each blocked inside a step, with a short ``resumable_lease_seconds``. Once all
of them hold their lease, the script records for ``--seconds`` the statements SQLAlchemy
executes on the store's engine (``before_cursor_execute``) and counts the renewals: the
UPDATEs of the checkpoint table that set ``lease_expires_at`` and nothing else. A lease
is renewed every third of its length, so a window of ``--seconds`` holds
``3 * seconds / lease`` renewal intervals. One statement per interval for all the runs of
a process is the aim; today there is one per run.

    python -m benchmarks.bench_lease [--runs 50] [--seconds 3] [--lease 1.5] [--store URL ...]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from celery import Celery, Task

from benchmarks.bench_overhead import positive
from benchmarks.common import (
    add_store_option,
    database,
    print_header,
    print_table,
    store_urls,
    table_name,
)
from benchmarks.traffic import StatementLog, assigned_columns
from celery_resumable import ResumableTask, checkpoint_store, step

DESCRIPTION = "Lease renewal statements per renewal interval, with 1 and with many runs."
HOLD_TIMEOUT = 120.0


class HeldRuns:
    """A resumable task whose runs wait inside a step until released."""

    def __init__(self, url: str, lease: float) -> None:
        self.app = Celery("bench_lease", broker="memory://")
        self.app.conf.update(
            resumable_store_url=url,
            resumable_table_name=table_name(),
            resumable_lease_seconds=lease,
        )
        self.store = checkpoint_store(self.app)
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()
        entered, release = self.entered, self.release

        def hold() -> int:
            entered.release()
            release.wait(HOLD_TIMEOUT)
            return 1

        @self.app.task(base=ResumableTask, bind=True, name="bench.held")
        def held(self: Task) -> int:
            return int(step("hold", hold))

        self.task = held

    def measure(self, runs: int, seconds: float, lease: float) -> list[str]:
        """Hold ``runs`` runs, record ``seconds`` of statements; one row of the table."""
        self.release.clear()
        states: list[Any] = []

        def run() -> None:
            result = self.task.apply(task_id=uuid.uuid4().hex)
            states.append((result.state, result.result))

        threads = [threading.Thread(target=run, daemon=True) for _ in range(runs)]
        for thread in threads:
            thread.start()
        try:
            for _ in range(runs):
                if not self.entered.acquire(timeout=HOLD_TIMEOUT):
                    raise RuntimeError("the runs did not all reach their step")
            with StatementLog(self.store.engine) as log:
                log.recording = True
                time.sleep(seconds)
                log.recording = False
        finally:
            self.release.set()
            for thread in threads:
                thread.join(HOLD_TIMEOUT)
        if states.count(("SUCCESS", 1)) != runs:
            raise RuntimeError(f"not every run succeeded: {states}")
        table = self.store.table_name
        renewals = [
            statement
            for statement in log.statements
            if table in statement.sql and assigned_columns(statement.sql) == ["lease_expires_at"]
        ]
        intervals = seconds / (lease / 3)
        return [
            database(self.store.engine),
            str(runs),
            str(len(renewals)),
            f"{len(renewals) / intervals:.1f}",
            f"{len(renewals) / seconds:.1f}",
            str(sum(statement.parameter_sets for statement in renewals)),
            str(len(log.statements) - len(renewals)),
        ]

    def close(self) -> None:
        """Drop the table and close the store's connections."""
        self.store.table.drop(self.store.engine, checkfirst=True)
        self.store.engine.dispose()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--runs", type=positive, default=50, help="runs held at once")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the window")
    parser.add_argument("--lease", type=float, default=1.5, help="resumable_lease_seconds")
    add_store_option(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the table."""
    args = parse_args(argv)
    started = time.perf_counter()
    print_header("Lease renewal statements with 1 and with many runs in one process")
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="celery-resumable-bench-") as directory:
        for url in store_urls(args.store, directory):
            bench = HeldRuns(url, args.lease)
            try:
                for runs in sorted({1, args.runs}):
                    rows.append(bench.measure(runs, args.seconds, args.lease))
            finally:
                bench.close()
    intervals = args.seconds / (args.lease / 3)
    print_table(
        f"Lease renewals, resumable_lease_seconds={args.lease:g} (renewed every "
        f"{args.lease / 3:.2g} s), a window of {args.seconds:g} s ({intervals:g} intervals)",
        [
            "database",
            "runs",
            "renewals",
            "per interval",
            "per second",
            "parameter sets",
            "other statements",
        ],
        rows,
        [
            "renewals: UPDATEs of the checkpoint table setting only lease_expires_at "
            "(before_cursor_execute); target: the same per interval with 1 and with many runs",
            "parameter sets: more than the renewals when a renewal is an executemany",
        ],
    )
    print(f"total time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
