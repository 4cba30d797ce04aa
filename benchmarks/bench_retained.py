"""Memory a run leaves behind: what a process keeps per run once the run has ended.

A worker runs millions of tasks; anything a run leaves reachable grows it until it is
restarted. Runs ``--runs`` short tasks through ``task.apply()`` per row, after a warm-up,
and reads the memory still allocated (``tracemalloc``, after a garbage collection)
against before, divided by the runs:

- a plain Celery task whose body defines its helpers inside it (the baseline);
- a resumable task whose three steps are module-level functions;
- a resumable task whose three steps are functions defined inside the task body, a new
  function object (with its closure) at every run: what per-function caches must not keep.

    python -m benchmarks.bench_retained [--runs 3000] [--store URL]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

from celery import Celery, Task

from benchmarks.bench_overhead import double, load, positive, total
from benchmarks.common import print_header, print_table, table_name
from celery_resumable import ResumableTask, checkpoint_store, step
from celery_resumable.config import forget_config
from celery_resumable.testing import stop_lease_keeper

DESCRIPTION = "Memory a process keeps per run once the run has ended."
WARM_UP_RUNS = 300
TARGET = 16  # bytes per run: what the allocator's own bookkeeping may move


def build(url: str) -> tuple[Celery, dict[str, Task]]:
    """An app on store ``url`` with the three tasks of the table (no result backend:
    eager results are not kept)."""
    app = Celery("retained", broker="memory://")
    app.conf.update(resumable_store_url=url, resumable_table_name=table_name("bench_retained"))

    @app.task(bind=True, name="retained.plain")
    def plain(self: Task) -> int:
        def make(rows: int) -> list[int]:
            return list(range(rows))

        return sum(row * 2 for row in make(10))

    @app.task(base=ResumableTask, bind=True, name="retained.module_steps")
    def module_steps(self: Task) -> int:
        return step("total", total, step("double", double, step("load", load, 10)))

    @app.task(base=ResumableTask, bind=True, name="retained.nested_steps")
    def nested_steps(self: Task) -> int:
        def load_here(rows: int) -> list[int]:
            return list(range(rows))

        def double_here(rows: list[int]) -> list[int]:
            return [row * 2 for row in rows]

        def total_here(rows: list[int]) -> int:
            return sum(rows)

        rows = step("load", load_here, 10)
        return step("total", total_here, step("double", double_here, rows))

    tasks: dict[str, Task] = {
        "plain task, helpers defined in its body": plain,
        "resumable, module-level step functions": module_steps,
        "resumable, step functions defined in its body": nested_steps,
    }
    return app, tasks


def retained(task: Task, runs: int) -> float:
    """Bytes still allocated per run after ``runs`` runs of ``task``."""
    run: Callable[[], Any] = task.apply
    for _ in range(WARM_UP_RUNS):
        run()
    gc.collect()
    tracemalloc.start()
    try:
        gc.collect()
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(runs):
            run()
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return (after - before) / runs


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--runs", type=positive, default=3000, help="runs per row")
    parser.add_argument(
        "--store", default=None, help="store URL (default: SQLite in a temporary directory)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        url = args.store or f"sqlite:///{directory}/retained.sqlite3"
        app, tasks = build(url)
        store = checkpoint_store(app)
        try:
            rows = []
            for name, task in tasks.items():
                kept = retained(task, args.runs)
                rows.append(
                    [name, f"{args.runs:,}", f"{kept:,.1f}", "yes" if kept <= TARGET else "no"]
                )
        finally:
            stop_lease_keeper()
            store.table.drop(store.engine, checkfirst=True)
            store.engine.dispose()
            forget_config(app)
    print_header(DESCRIPTION)
    print_table(
        "Memory kept per run once the runs ended, SQLite unless --store",
        ["task (task.apply)", "runs", "bytes kept per run", f"<= {TARGET}"],
        rows,
        notes=[
            "bytes kept per run: memory still allocated after the runs and a garbage "
            "collection, less before, over the runs (tracemalloc)",
        ],
    )


if __name__ == "__main__":
    main()
