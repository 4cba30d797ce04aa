"""The fixed cost of a resumable run, in bare single-row UPDATEs of the same database.

For each store (SQLite in a temporary directory, PostgreSQL and MariaDB on 127.0.0.1 when
they answer, or the ``--store`` URLs), the script times ``task.apply()`` runs of a task of
three small steps as a resumable task and as a plain task, and bare autocommit
single-row UPDATEs sent through the same driver on a table of one row. The added time of
a run divided by the time of one UPDATE is what a run costs in UPDATEs: at least 2 (the
claim and the completion write), at most 3 wanted. Then it counts what one run sends:
the SQL statements SQLAlchemy executes, and the driver's round trips, BEGIN, COMMIT,
ROLLBACK, pre-ping and SET statements included (see ``benchmarks/traffic.py``).

    python -m benchmarks.bench_run_cost [--runs 300] [--updates 1000] [--store URL ...]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import tempfile
import time
from collections.abc import Callable, Sequence

import sqlalchemy as sa

from benchmarks.bench_overhead import (
    STEPS_RESULT,
    BenchTasks,
    build_tasks,
    positive,
    runner,
    seconds,
)
from benchmarks.common import (
    add_store_option,
    database,
    print_header,
    print_table,
    store_urls,
    table_name,
)
from benchmarks.traffic import ExecuteTimer, RoundTrips, StatementLog
from celery_resumable import checkpoint_store

DESCRIPTION = "The fixed cost of a resumable run, in bare single-row UPDATEs."
WARM_UP_RUNS = 20  # enough for psycopg to prepare the store's statements on each connection


class BareUpdate:
    """A table of one row and connections in autocommit, to time one bare UPDATE.

    Timed twice: straight through the driver (the store engine's own connection, taken
    out of its pool, so SQLite gets the store's pragmas), and through SQLAlchemy on a
    connection held open, the least a store built on SQLAlchemy Core can send.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.table = sa.Table(
            table_name("bench_update"),
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("n", sa.Integer, nullable=False),
        )
        self.table.create(engine)
        with engine.begin() as connection:
            connection.execute(self.table.insert().values(id=1, n=0))
        # The store engine's own connection (SQLite pragmas and all), taken out of its pool.
        self.connection = engine.raw_connection()
        self.connection.detach()
        engine.dialect.set_isolation_level(self.connection.dbapi_connection, "AUTOCOMMIT")
        self.cursor = self.connection.cursor()
        self.sql = f"UPDATE {self.table.name} SET n = n + 1 WHERE id = 1"
        self.held = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        c = self.table.c
        self.statement = sa.update(self.table).where(c.id == 1).values(n=c.n + 1)

    def driver_runner(self, times: int) -> Callable[[], None]:
        """A function sending the UPDATE ``times`` times through the driver."""

        def run() -> None:
            execute = self.cursor.execute
            for _ in range(times):
                execute(self.sql)

        return run

    def sqlalchemy_runner(self, times: int) -> Callable[[], None]:
        """A function executing the UPDATE ``times`` times through SQLAlchemy Core."""

        def run() -> None:
            execute, statement = self.held.execute, self.statement
            for _ in range(times):
                execute(statement)

        return run

    def close(self) -> None:
        """Close the connections and drop the table."""
        self.cursor.close()
        self.connection.close()
        self.held.close()
        self.table.drop(self.engine)


def interleaved_best(runs: dict[str, Callable[[], None]], repeat: int) -> dict[str, float]:
    """The shortest of ``repeat`` timings of each function, timed in turn, one after another."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeat):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


@dataclasses.dataclass
class Traffic:
    """What the counted runs sent: statements by verb, driver round trips by kind."""

    statements: collections.Counter[str]
    round_trips: collections.Counter[str] | None
    execute_seconds: float
    run_seconds: float


def measure(
    tasks: BenchTasks, trips: RoundTrips, runs: int, updates: int, repeat: int, counted: int
) -> tuple[list[str], Traffic]:
    """One row of table (a), and what ``counted`` runs sent to the store."""
    engine = checkpoint_store(tasks.app).engine
    for task in (tasks.plain_steps, tasks.resumable_steps):
        runner(task, (), STEPS_RESULT, WARM_UP_RUNS)()
    bare = BareUpdate(engine)
    try:
        bare.driver_runner(updates)()
        bare.sqlalchemy_runner(updates)()
        best = interleaved_best(
            {
                "driver": bare.driver_runner(updates),
                "sqlalchemy": bare.sqlalchemy_runner(updates),
                "plain": runner(tasks.plain_steps, (), STEPS_RESULT, runs),
                "resumable": runner(tasks.resumable_steps, (), STEPS_RESULT, runs),
            },
            repeat,
        )
    finally:
        bare.close()
    driver, sqlalchemy = best["driver"] / updates, best["sqlalchemy"] / updates
    plain, resumable = best["plain"] / runs, best["resumable"] / runs
    added = resumable - plain
    row = [
        database(engine),
        seconds(driver),
        seconds(sqlalchemy),
        seconds(plain),
        seconds(resumable),
        f"+{seconds(added)}",
        f"{added / driver:.1f}",
        f"{added / sqlalchemy:.1f}",
    ]
    with StatementLog(engine) as log:
        log.recording = True
        kinds = trips.count(runner(tasks.resumable_steps, (), STEPS_RESULT, counted))
    verbs = collections.Counter(statement.verb for statement in log.statements)
    series = []
    for _ in range(repeat):
        with ExecuteTimer(engine) as timer:
            started = time.perf_counter()
            runner(tasks.resumable_steps, (), STEPS_RESULT, counted)()
            series.append((time.perf_counter() - started, timer.seconds))
    elapsed, executing = min(series)
    # The two statements alone, timed in the driver's cursor.execute (best series), in UPDATEs.
    sql_alone = min(statements for _, statements in series) / counted
    row.append(f"{sql_alone / driver:.1f}")
    return row, Traffic(verbs, kinds if trips.supported else None, executing, elapsed)


def traffic_rows(traffic: Sequence[Traffic], counted: int) -> list[list[str]]:
    """Table (b): one row per kind of request, one column per database."""

    def per_run(count: int | None) -> str:
        return "-" if not count else f"{count / counted:.1f}"

    def kinds_of(counters: list[collections.Counter[str]]) -> list[str]:
        total: collections.Counter[str] = collections.Counter()
        for counter in counters:
            total.update(counter)
        first = [kind for kind in ("SQL statement",) if kind in total]
        return first + [kind for kind, _ in total.most_common() if kind not in first]

    statements = [t.statements for t in traffic]
    rows = [["SQL statements", *(per_run(sum(c.values())) for c in statements)]]
    rows += [
        [f"  {verb}", *(per_run(c[verb]) for c in statements)] for verb in kinds_of(statements)
    ]
    trips = [t.round_trips or collections.Counter() for t in traffic]
    rows.append(
        [
            "driver round trips",
            *(
                per_run(sum(c.values())) if t.round_trips is not None else "not counted"
                for c, t in zip(trips, traffic, strict=True)
            ),
        ]
    )
    rows += [[f"  {kind}", *(per_run(c[kind]) for c in trips)] for kind in kinds_of(trips)]
    rows.append(["time of a run", *(seconds(t.run_seconds / counted) for t in traffic)])
    rows.append(
        [
            "  in the statements' cursor.execute",
            *(
                f"{seconds(t.execute_seconds / counted)} ({t.execute_seconds / t.run_seconds:.0%})"
                for t in traffic
            ),
        ]
    )
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--runs", type=positive, default=300, help="task runs per timing")
    parser.add_argument("--updates", type=positive, default=1000, help="bare UPDATEs per timing")
    parser.add_argument("--repeat", type=positive, default=5, help="timings; the best is kept")
    parser.add_argument(
        "--counted", type=positive, default=20, help="runs whose traffic is counted"
    )
    add_store_option(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the two tables."""
    args = parse_args(argv)
    started = time.perf_counter()
    # Eager runs in a row share the lease keeper's thread, as a worker's runs do.
    print_header("Fixed cost of a resumable run, in bare single-row UPDATEs, and its traffic")
    rows: list[list[str]] = []
    labels: list[str] = []
    traffic: list[Traffic] = []
    with tempfile.TemporaryDirectory(prefix="celery-resumable-bench-") as directory:
        for url in store_urls(args.store, directory):
            tasks = build_tasks(url, table_name())
            store = checkpoint_store(tasks.app)
            trips = RoundTrips(store.engine)
            try:
                row, counts = measure(
                    tasks, trips, args.runs, args.updates, args.repeat, args.counted
                )
            finally:
                trips.close()
                store.table.drop(store.engine, checkfirst=True)
                store.engine.dispose()
            rows.append(row)
            labels.append(row[0])
            traffic.append(counts)
    if not rows:
        return
    print_table(
        f"(a) Fixed cost of a run of 3 small steps, mean of {args.runs:,} task.apply() runs "
        f"and of {args.updates:,} UPDATEs, best of {args.repeat}",
        [
            "database",
            "UPDATE: driver",
            "SQLAlchemy",
            "run: plain",
            "resumable",
            "added",
            "in UPDATEs: driver",
            "SQLAlchemy",
            "its SQL alone",
        ],
        rows,
        [
            "UPDATE: one bare UPDATE t SET n = n + 1 WHERE id = 1 in autocommit, on a "
            "connection held open, through the store's",
            "driver (cursor.execute), or through SQLAlchemy Core (Connection.execute)",
            "in UPDATEs: the added time of a run / the time of one UPDATE; target at most 3, "
            "floor 2 (the claim and the completion write)",
            "its SQL alone: the time the run's statements spend in the driver's cursor.execute, "
            "in driver UPDATEs (an INSERT … RETURNING",
            "of a new row and an UPDATE appending JSON each cost more than a bare UPDATE)",
        ],
    )
    print_table(
        f"(b) What one resumable run sends to the store, mean of {args.counted} runs",
        ["per run", *labels],
        traffic_rows(traffic, args.counted),
        [
            "round trips: requests the driver sends and waits for, below SQLAlchemy "
            "(benchmarks/traffic.py); floor 2",
            "SQLite: statements the sqlite3 module runs (no network; each is a call "
            "into the database)",
            f"time: the mean of {args.counted} untraced runs (best of {args.repeat} series), "
            "and the part its SQL statements spent in the driver's cursor.execute",
        ],
    )
    print(f"total time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
