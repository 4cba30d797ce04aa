"""Bytes sent per cursor write, after 1 and after 1,000 finished steps.

A resumable task with ``resumable_checkpoint_interval=0`` finishes ``N`` small steps,
then enters a cursor step and calls ``set_cursor`` ``--writes`` times: with the interval
at 0 each call writes the checkpoint. The statements SQLAlchemy executes on the store's
engine during those calls (``before_cursor_execute``) are the cursor writes; the script
prints how many there are per write and the bytes of their bound parameters (text form:
strings and JSON documents by their UTF-8 length). A cursor write that does not resend
the finished steps costs the same after 1 and after 1,000 of them.

    python -m benchmarks.bench_cursor_write [--steps 1000] [--writes 20] [--store URL ...]
"""

from __future__ import annotations

import argparse
import tempfile
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
from benchmarks.traffic import StatementLog
from celery_resumable import ResumableTask, checkpoint_store, set_cursor, step, step_cursor

DESCRIPTION = "Bytes sent per cursor write, after 1 and after many finished steps."


def finished_step(index: int) -> int:
    """A small step: its result is its number."""
    return index


class CursorWrites:
    """A task finishing steps then writing cursors, and the log of those writes."""

    def __init__(self, url: str) -> None:
        self.app = Celery("bench_cursor_write", broker="memory://")
        self.app.conf.update(resumable_store_url=url, resumable_table_name=table_name())
        self.store = checkpoint_store(self.app)
        self.log = StatementLog(self.store.engine)
        log = self.log

        @self.app.task(
            base=ResumableTask,
            bind=True,
            resumable_checkpoint_interval=0,
            name="bench.steps_then_cursor",
        )
        def steps_then_cursor(self: Task, steps: int, writes: int) -> int:
            for index in range(steps):
                step(f"step_{index}", finished_step, index)

            def loop(cursor: Any) -> int:
                for item in range(writes):
                    log.recording = True
                    try:
                        set_cursor(item)
                    finally:
                        log.recording = False
                return writes

            return int(step_cursor("loop", loop))

        self.task = steps_then_cursor

    def measure(self, steps: int, writes: int, baseline: float | None = None) -> list[str]:
        """Run the task once; one row of the table (``baseline``: the bytes after 1 step)."""
        self.log.statements.clear()
        with self.log:
            result = self.task.apply(args=(steps, writes), task_id=uuid.uuid4().hex, throw=True)
        if result.result != writes:
            raise RuntimeError(f"the task ended {result.state} with {result.result!r}")
        statements = self.log.statements
        total = sum(statement.parameter_bytes for statement in statements)
        sql = sum(len(statement.sql.encode()) for statement in statements)
        verbs = sorted({statement.verb for statement in statements})
        return [
            database(self.store.engine),
            f"{steps:,}",
            f"{len(statements) / writes:.1f} ({', '.join(verbs)})",
            f"{total / writes:,.0f}",
            f"{total / writes / baseline:,.2f}x" if baseline else "",
            f"{sql / writes:,.0f}",
        ]

    def close(self) -> None:
        """Drop the table and close the store's connections."""
        self.store.table.drop(self.store.engine, checkfirst=True)
        self.store.engine.dispose()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument(
        "--steps", type=positive, default=1000, help="finished steps of the second case"
    )
    parser.add_argument("--writes", type=positive, default=20, help="cursor writes per case")
    add_store_option(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the table."""
    args = parse_args(argv)
    started = time.perf_counter()
    print_header("Bytes sent per cursor write, after 1 and after many finished steps")
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="celery-resumable-bench-") as directory:
        for url in store_urls(args.store, directory):
            bench = CursorWrites(url)
            try:
                first = bench.measure(1, args.writes)
                baseline = float(first[3].replace(",", ""))
                rows += [first, bench.measure(args.steps, args.writes, baseline)]
            finally:
                bench.close()
    print_table(
        f"Cursor writes with resumable_checkpoint_interval=0, mean of {args.writes} writes",
        [
            "database",
            "finished steps",
            "statements per write",
            "parameter bytes",
            "vs 1 step",
            "SQL bytes",
        ],
        rows,
        [
            "parameter bytes: the bound values of the write's statements, per write; "
            "target: the same after 1 and after many finished steps",
            "SQL bytes: the statements' text (drivers that prepare statements do not resend it)",
        ],
    )
    print(f"total time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
