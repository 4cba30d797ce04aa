"""What celery-resumable costs next to plain Celery, printed as tables.

Every measurement runs in this process with ``task.apply()`` (eager, no broker), so it
shows the library's own cost: the per-item cost of ``iterate`` and ``set_cursor``, the
cost of a checkpoint write, the fixed cost of a run (claim, mark completed) and the
peak memory of a long loop. The checkpoint store is SQLite in a temporary directory;
``--store URL`` replaces it in tables (a) and (d), and when it names another database
(PostgreSQL, MySQL) tables (b) and (c) show that database next to SQLite.

    python benchmarks/bench_overhead.py [--items N] [--store URL]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import platform
import statistics
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import celery
import sqlalchemy as sa
from celery import Celery, Task

import celery_resumable
from benchmarks import common
from celery_resumable import (
    ResumableTask,
    checkpoint_store,
    iterate,
    set_cursor,
    step,
    step_cursor,
)

DESCRIPTION = "Measure what celery-resumable costs next to plain Celery."
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


def build_tasks(url: str, table_name: str, **settings: Any) -> BenchTasks:
    """Declare the benchmark tasks on a fresh Celery app using the store at ``url``
    (and the ``resumable_*`` ``settings`` given)."""
    app = Celery("bench", broker="memory://")
    app.conf.resumable_store_url = url
    app.conf.resumable_table_name = table_name
    app.conf.update(settings)
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


def runner(task: Task, args: Sequence[Any], expected: int, times: int = 1) -> Callable[[], None]:
    """A function running ``task`` ``times`` times, each under a new task id."""

    def run() -> None:
        for _ in range(times):
            run_task(task, args, expected)

    return run


def best_seconds(run: Callable[[], None], repeat: int) -> float:
    """The shortest of ``repeat`` timings of ``run()``."""
    # Collect once, not before each timing: a full collection evicts the CPU caches and
    # adds about 0.2 ms to the run right after it, which distorts the short runs.
    gc.collect()
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        timings.append(time.perf_counter() - start)
    return min(timings)


def peak_bytes(run: Callable[[], object], repeat: int) -> int:
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
    writes: int = 0
    commits: int = 0
    checkouts: int = 0

    def __str__(self) -> str:
        return (
            f"{self.statements} SQL statements ({self.writes} writes), {self.commits} "
            f"commits, {self.checkouts} pool checkouts per run"
        )


def store_traffic(tasks: BenchTasks, run: Callable[[], None]) -> StoreTraffic:
    """Count what ``run()`` sent to the store: statements, commits, pool checkouts (untimed)."""
    engine = checkpoint_store(tasks.app).engine
    traffic = StoreTraffic()

    def on_statement(_connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        traffic.statements += 1
        if statement.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"):
            traffic.writes += 1

    def on_commit(*_: Any) -> None:
        traffic.commits += 1

    def on_checkout(*_: Any) -> None:
        traffic.checkouts += 1

    listeners = (
        ("before_cursor_execute", on_statement),
        ("commit", on_commit),
        ("checkout", on_checkout),
    )
    for event, listener in listeners:
        sa.event.listen(engine, event, listener)
    try:
        run()
    finally:
        for event, listener in listeners:
            sa.event.remove(engine, event, listener)
    return traffic


# -- formatting ------------------------------------------------------------------------


def seconds(value: float) -> str:
    """A duration with a unit that keeps three significant digits."""
    size = abs(value)
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if size >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value / 1e-9:.3g} ns"


def added_seconds(value: float) -> str:
    """A difference of durations with its sign."""
    return f"{'+' if value >= 0 else '-'}{seconds(abs(value))}"


def extra_seconds(plain: float, resumable: float) -> str:
    """The added time, and the factor when the plain time is not zero."""
    factor = f" ({resumable / plain:.1f}x)" if plain > 0 else ""
    return f"{added_seconds(resumable - plain)}{factor}"


def kib(value: float) -> str:
    """A number of bytes in KiB."""
    return f"{value / 1024:,.1f} KiB"


def added_kib(value: float) -> str:
    """A difference of bytes in KiB with its sign."""
    return f"{'+' if value >= 0 else '-'}{kib(abs(value))}"


def print_table(title: str, rows: Sequence[Sequence[str]], notes: Sequence[str] = ()) -> None:
    """Print ``rows`` under the standard header, the first column left-aligned."""
    common.print_table(title, ("case", "plain Celery", "celery-resumable", "overhead"), rows, notes)


# -- the tables ------------------------------------------------------------------------


def loop_cost(tasks: BenchTasks, items: int, repeat: int) -> None:
    """(a) Per-item cost of a long loop; the default interval writes almost never."""
    expected = loop_result(items)
    plain = best_seconds(runner(tasks.plain_loop, (items,), expected), repeat)
    rows: list[list[str]] = []
    notes: list[str] = []
    added: list[str] = []
    for label, task in (("iterate()", tasks.iterate_loop), ("set_cursor()", tasks.cursor_loop)):
        resumable = best_seconds(runner(task, (items,), expected), repeat)
        per_plain, per_resumable = plain / items, resumable / items
        rows.append(
            [f"{label}: total", seconds(plain), seconds(resumable), extra_seconds(plain, resumable)]
        )
        rows.append(
            [
                f"{label}: per item",
                seconds(per_plain),
                seconds(per_resumable),
                added_seconds(per_resumable - per_plain),
            ]
        )
        traffic = store_traffic(tasks, runner(task, (items,), expected))
        notes.append(f"{label}: {traffic}")
        added.append(f"{label} {(per_resumable - per_plain) * 1e9:+,.0f} ns")
    notes.append("the per-item figures include the fixed cost of a run (table c)")
    notes.append(f"added ns per item (target: under 1,000 ns): {', '.join(added)}")
    print_table(
        f"(a) Loop of {items:,} items, resumable_checkpoint_interval=5.0 (default), "
        f"{tasks.label}, best of {repeat}",
        rows,
        notes,
    )


def write_cost(stores: Sequence[BenchTasks], items: int, repeat: int) -> None:
    """(b) A checkpoint write at every boundary: what one write costs."""
    expected = loop_result(items)
    rows: list[list[str]] = []
    notes: list[str] = []
    for tasks in stores:
        plain = best_seconds(runner(tasks.plain_loop, (items,), expected), repeat)
        cases = (
            ("iterate()", tasks.iterate_every_boundary),
            ("set_cursor()", tasks.cursor_every_boundary),
        )
        for label, task in cases:
            resumable = best_seconds(runner(task, (items,), expected), repeat)
            traffic = store_traffic(tasks, runner(task, (items,), expected))
            rows.append(
                [
                    f"{label}, {tasks.label}",
                    seconds(plain),
                    f"{seconds(resumable)}, {traffic.writes / resumable:,.0f} writes/s",
                    f"{added_seconds((resumable - plain) / items)}/item",
                ]
            )
            notes.append(f"{label}, {tasks.label}: {traffic}")
    notes.append(
        "writes/s: the run's INSERT/UPDATE statements (claim, one per item, step end, "
        "completed) per second; each commits, in a transaction of its own or in autocommit"
    )
    print_table(
        f"(b) Loop of {items:,} items, resumable_checkpoint_interval=0 "
        f"(a write at every boundary), best of {repeat}",
        rows,
        notes,
    )


def run_cost(stores: Sequence[BenchTasks], runs: int, repeat: int) -> None:
    """(c) The fixed cost of a run: claim the row, run three small steps, mark it completed."""
    rows: list[list[str]] = []
    notes: list[str] = []
    for tasks in stores:
        plain = best_seconds(runner(tasks.plain_steps, (), STEPS_RESULT, runs), repeat) / runs
        cases = (
            ("interval 5.0", tasks.resumable_steps),
            ("interval 0", tasks.steps_every_boundary),
        )
        for label, task in cases:
            resumable = best_seconds(runner(task, (), STEPS_RESULT, runs), repeat) / runs
            case = f"3 steps, {label}, {tasks.label}"
            rows.append([case, seconds(plain), seconds(resumable), extra_seconds(plain, resumable)])
            traffic = store_traffic(tasks, runner(task, (), STEPS_RESULT))
            notes.append(f"{case}: {traffic}")
    print_table(f"(c) Fixed cost per task run, mean of {runs} runs, best of {repeat}", rows, notes)


def memory_cost(tasks: BenchTasks, items: int, repeat: int) -> None:
    """(d) Peak memory of the long loop under tracemalloc, and of a loop 100 times shorter."""
    rows = []
    for count in sorted({max(items // 100, 1), items}):
        expected = loop_result(count)
        plain = peak_bytes(runner(tasks.plain_loop, (count,), expected), repeat)
        cases = (("iterate()", tasks.iterate_loop), ("set_cursor()", tasks.cursor_loop))
        for label, task in cases:
            resumable = peak_bytes(runner(task, (count,), expected), repeat)
            rows.append(
                [
                    f"{label}, {count:,} items",
                    kib(plain),
                    kib(resumable),
                    added_kib(resumable - plain),
                ]
            )
    print_table(
        f"(d) Peak memory of the loop (tracemalloc), {tasks.label}, median of {repeat}",
        rows,
        ["the peak of one task.apply(), Celery's request and result included"],
    )


# -- main ------------------------------------------------------------------------------


def positive(text: str) -> int:
    """An argparse type: a whole number above zero."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--items", type=positive, default=200_000, help="items of the long loop")
    parser.add_argument(
        "--write-items",
        type=positive,
        default=2_000,
        help="items of the loop that writes at every boundary",
    )
    parser.add_argument("--runs", type=positive, default=300, help="task runs for the fixed cost")
    parser.add_argument(
        "--repeat",
        type=positive,
        default=5,
        help="repetitions of the loop timing (the other tables use at most 3)",
    )
    parser.add_argument(
        "--store",
        help="SQLAlchemy URL of the checkpoint store (default: SQLite in a temporary directory)",
    )
    return parser.parse_args(argv)


def stores_for(store: str | None, directory: str) -> list[str]:
    """The store URLs to measure: SQLite first, then ``store`` when it is another database."""
    if store is not None and sa.engine.make_url(store).get_backend_name() == "sqlite":
        return [store]
    temporary = f"sqlite:///{directory}/bench.sqlite3"
    return [temporary] if store is None else [temporary, store]


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


def drop_table(tasks: BenchTasks) -> None:
    """Drop the benchmark's own checkpoint table and close the store's connections."""
    store = checkpoint_store(tasks.app)
    store.table.drop(store.engine, checkfirst=True)
    store.engine.dispose()


def main(argv: Sequence[str] | None = None) -> None:
    """Print the four tables."""
    args = parse_args(argv)
    started = time.perf_counter()
    table_name = f"bench_checkpoints_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="celery-resumable-bench-") as directory:
        stores = [build_tasks(url, table_name) for url in stores_for(args.store, directory)]
        main_store = stores[-1]
        print(
            f"celery-resumable {celery_resumable.__version__} "
            f"({os.path.dirname(celery_resumable.__file__)}) against celery "
            f"{celery.__version__}: Python {platform.python_version()}, SQLAlchemy "
            f"{sa.__version__}, {platform.system()} {platform.machine()}, "
            f"{os.cpu_count()} CPUs"
        )
        for tasks in stores:
            url = sa.engine.make_url(tasks.url).render_as_string(hide_password=True)
            print(f"store {tasks.label}: {url}, table {table_name}")
        print()
        try:
            for tasks in stores:
                warm_up(tasks)
            loop_cost(main_store, args.items, args.repeat)
            write_cost(stores, args.write_items, min(args.repeat, 3))
            run_cost(stores, args.runs, min(args.repeat, 3))
            memory_cost(main_store, args.items, min(args.repeat, 3))
        finally:
            for tasks in stores:
                drop_table(tasks)
    print(f"total time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
