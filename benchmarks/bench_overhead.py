"""What celery-resumable costs next to plain Celery, printed as tables.

Every measurement runs in this process with ``task.apply()`` (eager, no broker), so it
shows the library's own cost: the per-item cost of ``iterate`` and ``set_cursor``, the
cost of a checkpoint write, the fixed cost of a run (claim, mark completed) and the
peak memory of a long loop. The store is SQLite in a temporary directory unless
``--store`` names another; a PostgreSQL or MySQL ``--store`` is measured next to SQLite
in the tables where the store matters.

    python benchmarks/bench_overhead.py [--items N] [--store URL]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import celery
import sqlalchemy as sa
from celery import Celery, Task

from celery_resumable import (
    ResumableTask,
    checkpoint_store,
    iterate,
    set_cursor,
    step,
    step_cursor,
)

BACKENDS = {"sqlite": "SQLite", "postgresql": "PostgreSQL", "mysql": "MySQL", "mariadb": "MariaDB"}


# -- the work --------------------------------------------------------------------------


def load(count: int) -> list[int]:
    """The first small step: make a few rows."""
    return list(range(count))


def double(values: list[int]) -> list[int]:
    """The second small step: transform them."""
    return [value * 2 for value in values]


def total(values: list[int]) -> int:
    """The third small step: reduce them."""
    return sum(values)


STEP_ROWS = 10
STEPS_RESULT = total(double(load(STEP_ROWS)))


def loop_result(items: int) -> int:
    """What every loop task returns for ``items`` items."""
    return items * (items - 1) // 2


@dataclasses.dataclass(frozen=True)
class BenchTasks:
    """The tasks of one Celery app whose checkpoint store is ``url``."""

    app: Celery
    url: str
    plain_loop: Task
    iterate_loop: Task
    cursor_loop: Task
    iterate_every_boundary: Task
    cursor_every_boundary: Task
    plain_steps: Task
    resumable_steps: Task
    steps_every_boundary: Task

    @property
    def label(self) -> str:
        """The store's database, as a reader knows it."""
        backend = sa.engine.make_url(self.url).get_backend_name()
        return BACKENDS.get(backend, backend)


def build_tasks(url: str, table_name: str) -> BenchTasks:
    """Declare the benchmark tasks on a fresh Celery app using the store at ``url``."""
    app = Celery("bench", broker="memory://")
    app.conf.resumable_store_url = url
    app.conf.resumable_table_name = table_name
    every = {"base": ResumableTask, "bind": True, "resumable_checkpoint_interval": 0}

    @app.task(bind=True, name="bench.plain_loop")
    def plain_loop(self: Task, items: int) -> int:
        result = 0
        for item in range(items):
            result += item
        return result

    def iterate_body(items: int) -> int:
        result = 0
        for item in iterate("loop", range(items)):
            result += item
        return result

    def cursor_body(items: int) -> int:
        def loop(cursor: int | None) -> int:
            result = 0
            for item in range(0 if cursor is None else cursor + 1, items):
                result += item
                set_cursor(item)
            return result

        return step_cursor("loop", loop)

    def steps_body() -> int:
        rows = step("load", load, STEP_ROWS)
        doubled = step("double", double, rows)
        return step("total", total, doubled)

    @app.task(base=ResumableTask, bind=True, name="bench.iterate_loop")
    def iterate_loop(self: Task, items: int) -> int:
        return iterate_body(items)

    @app.task(base=ResumableTask, bind=True, name="bench.cursor_loop")
    def cursor_loop(self: Task, items: int) -> int:
        return cursor_body(items)

    @app.task(**every, name="bench.iterate_every_boundary")
    def iterate_every_boundary(self: Task, items: int) -> int:
        return iterate_body(items)

    @app.task(**every, name="bench.cursor_every_boundary")
    def cursor_every_boundary(self: Task, items: int) -> int:
        return cursor_body(items)

    @app.task(bind=True, name="bench.plain_steps")
    def plain_steps(self: Task) -> int:
        return total(double(load(STEP_ROWS)))

    @app.task(base=ResumableTask, bind=True, name="bench.resumable_steps")
    def resumable_steps(self: Task) -> int:
        return steps_body()

    @app.task(**every, name="bench.steps_every_boundary")
    def steps_every_boundary(self: Task) -> int:
        return steps_body()

    return BenchTasks(
        app,
        url,
        plain_loop,
        iterate_loop,
        cursor_loop,
        iterate_every_boundary,
        cursor_every_boundary,
        plain_steps,
        resumable_steps,
        steps_every_boundary,
    )


# -- measuring -------------------------------------------------------------------------


def run_task(task: Task, args: Sequence[Any], expected: int) -> None:
    """Run ``task`` once, eagerly, under a new task id; fail loudly on a wrong outcome."""
    result = task.apply(args=tuple(args), task_id=uuid.uuid4().hex, throw=True)
    if result.state != "SUCCESS" or result.result != expected:
        raise RuntimeError(f"{task.name} ended {result.state} with {result.result!r}")


def best_seconds(run: Callable[[], None], repeat: int) -> float:
    """The shortest of ``repeat`` timings of ``run()``."""
    timings = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        run()
        timings.append(time.perf_counter() - start)
    return min(timings)


def peak_bytes(run: Callable[[], None], repeat: int) -> int:
    """The median over ``repeat`` runs of the peak memory ``run()`` allocated (tracemalloc)."""
    peaks = []
    for _ in range(repeat):
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            run()
            peaks.append(tracemalloc.get_traced_memory()[1] - before)
        finally:
            tracemalloc.stop()
    return int(statistics.median(peaks))


@dataclasses.dataclass
class StoreTraffic:
    """What one run sent to the checkpoint store."""

    statements: int = 0
    commits: int = 0


def store_traffic(tasks: BenchTasks, run: Callable[[], None]) -> StoreTraffic:
    """Count the SQL statements and commits ``run()`` made on the store (untimed)."""
    engine = checkpoint_store(tasks.app).engine
    traffic = StoreTraffic()

    def on_statement(*_: Any) -> None:
        traffic.statements += 1

    def on_commit(*_: Any) -> None:
        traffic.commits += 1

    sa.event.listen(engine, "before_cursor_execute", on_statement)
    sa.event.listen(engine, "commit", on_commit)
    try:
        run()
    finally:
        sa.event.remove(engine, "before_cursor_execute", on_statement)
        sa.event.remove(engine, "commit", on_commit)
    return traffic


# -- formatting ------------------------------------------------------------------------


def seconds(value: float) -> str:
    """A duration with a unit that keeps three significant digits."""
    size = abs(value)
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if size >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value / 1e-9:.3g} ns"


def extra_seconds(plain: float, resumable: float) -> str:
    """The added time, and the factor when the plain time is not zero."""
    factor = f" ({resumable / plain:.1f}x)" if plain > 0 else ""
    return f"+{seconds(resumable - plain)}{factor}"


def kib(value: float) -> str:
    """A number of bytes in KiB."""
    return f"{value / 1024:,.1f} KiB"


def print_table(title: str, rows: Sequence[Sequence[str]], notes: Sequence[str] = ()) -> None:
    """Print ``rows`` under the standard header, the first column left-aligned."""
    header = ("case", "plain Celery", "celery-resumable", "overhead")
    widths = [max(len(row[column]) for row in (header, *rows)) for column in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        aligned = [first.ljust(widths[0])]
        aligned += [cell.rjust(width) for cell, width in zip(rest, widths[1:], strict=True)]
        return "  ".join(aligned).rstrip()

    print(title)
    print(line(header))
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print(line(row))
    for note in notes:
        print(f"  {note}")
    print()


# -- the tables ------------------------------------------------------------------------


def loop_cost(tasks: BenchTasks, items: int, repeat: int) -> None:
    """(a) Per-item cost of a long loop; the default interval writes almost never."""
    expected = loop_result(items)
    plain = best_seconds(lambda: run_task(tasks.plain_loop, (items,), expected), repeat)
    rows: list[list[str]] = []
    notes: list[str] = []
    for label, task in (("iterate()", tasks.iterate_loop), ("set_cursor()", tasks.cursor_loop)):
        resumable = best_seconds(lambda task=task: run_task(task, (items,), expected), repeat)
        rows.append([f"{label}: total", seconds(plain), seconds(resumable)])
        rows[-1].append(extra_seconds(plain, resumable))
        per_plain, per_resumable = plain / items, resumable / items
        rows.append(
            [
                f"{label}: per item",
                seconds(per_plain),
                seconds(per_resumable),
                f"+{seconds(per_resumable - per_plain)}",
            ]
        )
        traffic = store_traffic(tasks, lambda task=task: run_task(task, (items,), expected))
        notes.append(
            f"{label}: {traffic.statements} SQL statements in {traffic.commits} commits per run"
        )
    print_table(
        f"(a) Loop of {items:,} items, resumable_checkpoint_interval=5.0 (default), "
        f"{tasks.label}, best of {repeat}",
        rows,
        [*notes, "per-item figures include the fixed cost of a run (table c) over the items"],
    )


def write_cost(stores: Sequence[BenchTasks], items: int, repeat: int) -> None:
    """(b) A checkpoint write at every boundary: what one write costs."""
    expected = loop_result(items)
    rows: list[list[str]] = []
    notes: list[str] = []
    for tasks in stores:
        plain = best_seconds(lambda: run_task(tasks.plain_loop, (items,), expected), repeat)
        cases = (
            ("iterate()", tasks.iterate_every_boundary),
            ("set_cursor()", tasks.cursor_every_boundary),
        )
        for label, task in cases:
            traffic = store_traffic(tasks, lambda task=task: run_task(task, (items,), expected))
            resumable = best_seconds(lambda task=task: run_task(task, (items,), expected), repeat)
            rate = traffic.commits / resumable
            rows.append(
                [
                    f"{label}, {tasks.label}",
                    seconds(plain),
                    f"{seconds(resumable)}, {rate:,.0f} writes/s",
                    f"+{seconds((resumable - plain) / items)}/item",
                ]
            )
            notes.append(
                f"{label}, {tasks.label}: {traffic.commits} commits "
                f"({traffic.statements} SQL statements) per run"
            )
    print_table(
        f"(b) Loop of {items:,} items, resumable_checkpoint_interval=0 "
        f"(a write at every boundary), best of {repeat}",
        rows,
        [*notes, "writes/s counts every commit of the run: the claim, one per item, "
         "the step end and the completed mark"],
    )


def run_cost(stores: Sequence[BenchTasks], runs: int, repeat: int) -> None:
    """(c) The fixed cost of a run: claim the row, run three small steps, mark it completed."""

    def many(task: Task) -> Callable[[], None]:
        def run() -> None:
            for _ in range(runs):
                run_task(task, (), STEPS_RESULT)

        return run

    rows: list[list[str]] = []
    notes: list[str] = []
    for tasks in stores:
        plain = best_seconds(many(tasks.plain_steps), repeat) / runs
        cases = (
            ("interval 5.0", tasks.resumable_steps),
            ("interval 0", tasks.steps_every_boundary),
        )
        for label, task in cases:
            resumable = best_seconds(many(task), repeat) / runs
            case = f"3 steps, {label}, {tasks.label}"
            rows.append([case, seconds(plain), seconds(resumable)])
            rows[-1].append(extra_seconds(plain, resumable))
            traffic = store_traffic(tasks, lambda task=task: run_task(task, (), STEPS_RESULT))
            notes.append(
                f"{case}: {traffic.statements} SQL statements in {traffic.commits} commits per run"
            )
    print_table(f"(c) Fixed cost per task run, mean of {runs} runs, best of {repeat}", rows, notes)


def memory_cost(tasks: BenchTasks, items: int, repeat: int) -> None:
    """(d) Peak memory of the long loop under tracemalloc."""
    expected = loop_result(items)
    plain = peak_bytes(lambda: run_task(tasks.plain_loop, (items,), expected), repeat)
    rows = []
    for label, task in (("iterate()", tasks.iterate_loop), ("set_cursor()", tasks.cursor_loop)):
        resumable = peak_bytes(lambda task=task: run_task(task, (items,), expected), repeat)
        rows.append(
            [f"{label}, {items:,} items", kib(plain), kib(resumable), f"+{kib(resumable - plain)}"]
        )
    print_table(
        f"(d) Peak memory of the loop (tracemalloc), {tasks.label}, median of {repeat}",
        rows,
        ["the peak of one task.apply(): Celery's request and result included"],
    )


# -- main ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=200_000, help="items of the long loop")
    parser.add_argument(
        "--write-items", type=int, default=2_000, help="items of the loop writing every boundary"
    )
    parser.add_argument("--runs", type=int, default=300, help="task runs for the fixed cost")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions of each measurement")
    parser.add_argument(
        "--store",
        help="SQLAlchemy URL of the checkpoint store (default: SQLite in a temporary directory)",
    )
    return parser.parse_args(argv)


def stores_for(store: str | None, directory: str) -> Iterator[str]:
    """The store URLs to measure: SQLite first, then ``store`` when it is another database."""
    is_sqlite = store is not None and sa.engine.make_url(store).get_backend_name() == "sqlite"
    yield store if store is not None and is_sqlite else f"sqlite:///{directory}/bench.sqlite3"
    if store is not None and not is_sqlite:
        yield store


def warm_up(tasks: BenchTasks) -> None:
    """Run every task once: create the table, the engine, the SQL caches, the lease thread."""
    for task in (
        tasks.plain_loop,
        tasks.iterate_loop,
        tasks.cursor_loop,
        tasks.iterate_every_boundary,
        tasks.cursor_every_boundary,
    ):
        run_task(task, (10,), loop_result(10))
    for task in (tasks.plain_steps, tasks.resumable_steps, tasks.steps_every_boundary):
        run_task(task, (), STEPS_RESULT)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the four tables."""
    args = parse_args(argv)
    started = time.perf_counter()
    print(
        f"celery-resumable overhead: Python {platform.python_version()}, celery "
        f"{celery.__version__}, SQLAlchemy {sa.__version__}, {os.cpu_count()} CPUs, "
        f"{platform.system()} {platform.machine()}"
    )
    print()
    table_name = f"bench_checkpoints_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="celery-resumable-bench-") as directory:
        stores = [build_tasks(url, table_name) for url in stores_for(args.store, directory)]
        main_store = stores[-1] if args.store is not None else stores[0]
        try:
            for tasks in stores:
                warm_up(tasks)
            loop_cost(main_store, args.items, args.repeat)
            write_cost(stores, args.write_items, min(args.repeat, 3))
            run_cost(stores, args.runs, min(args.repeat, 3))
            memory_cost(main_store, args.items, min(args.repeat, 3))
        finally:
            for tasks in stores:
                store = checkpoint_store(tasks.app)
                store.table.drop(store.engine, checkfirst=True)
                store.engine.dispose()
    print(f"total time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
