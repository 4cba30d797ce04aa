"""Peers on one PostgreSQL: what a short run of 3 steps adds to a plain Celery task.

Five ways to run the same three small functions (``load``, ``double``, ``total`` of
``bench_overhead``) as a Celery task, each run with ``task.apply()`` under a new task id:

- plain Celery: the three functions in an ordinary task, nothing stored;
- celery-resumable: the functions as ``step`` calls of a ``base=ResumableTask`` task;
- Celery's database result backend (``db+postgresql+psycopg://``, ``task_store_eager_result``
  on so that ``apply()`` stores the one result), pooled as in a prefork pool process;
  and as in a process that never forked (the solo pool, a thread pool, ``apply()``),
  where it opens a new connection for every result (``NullPool``);
- DBOS Transact (``pip install dbos``): a workflow of three ``@DBOS.step`` functions called
  from the plain task under the task id as workflow id.

Every peer writes to a database of its own on the same server (``benchmarks/pg_meter.py``),
so PostgreSQL's counters of that database are the peer's alone.

Time: ``--rounds`` rounds, each timing ``--runs`` runs of every peer in turn in this
process (warm connections; the first peer turns each round). The table gives the median
per run; "vs ours" is the median of the per-round ratios.

Counts: ``--count-rounds`` times, a child process sets the peer up (DBOS launches), runs
30 runs to warm up and ``--counted`` counted runs, and exits; a second child does the
same without the counted runs. Around each, this script reads the database's
``pg_stat_database`` (its server processes have exited, so their counts are in) and the
WAL of its transactions (``pg_walinspect``): the difference of the two children over the
counted runs is a run's commits, WAL bytes and flushes (COMMIT records: each a WAL flush
the run waits for). Statements are those the child's running thread executed during the
counted runs (SQLAlchemy, every engine). What a library's background threads do while the
runs last is in the figures (the note says how many statements per second).

    python benchmarks/bench_peers.py [--runs 200] [--rounds 5] [--counted 200] [--count-rounds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python benchmarks/bench_peers.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa
from celery import Celery, Task

from benchmarks.bench_overhead import (
    STEP_ROWS,
    STEPS_RESULT,
    double,
    load,
    positive,
    run_task,
    seconds,
    total,
)
from benchmarks.common import (
    POSTGRES_URL,
    median,
    print_header,
    print_table,
    reachable,
    safe,
)
from benchmarks.pg_meter import Counters, Server, Statements, WalShare
from benchmarks.workers import ROOT, worker_env
from celery_resumable import ResumableTask, step

DESCRIPTION = "What a short run of 3 steps adds to a plain Celery task, next to its peers."
WARM_UP_RUNS = 30
CHILD_TIMEOUT = 300.0
PEERS = {
    "plain": "plain Celery",
    "resumable": "celery-resumable",
    "backend": "Celery db result backend, pooled",
    "backend_nullpool": "Celery db result backend, no pool",
    "dbos": "DBOS Transact",
}
OURS = "resumable"


@dataclasses.dataclass
class Peer:
    """One way to run the 3 steps, set up in this process."""

    key: str
    task: Task | None = None
    version: str = ""
    missing: str = ""  # why it cannot be measured
    close: Callable[[], None] | None = None

    @property
    def name(self) -> str:
        """The peer's name in the table."""
        return PEERS[self.key]

    def run(self) -> None:
        """One run under a new task id."""
        assert self.task is not None
        run_task(self.task, (), STEPS_RESULT)


# -- the peers -------------------------------------------------------------------------


def build(key: str, url: str | None) -> Peer:
    """Set up peer ``key`` writing to the database at ``url``."""
    if key == "plain":
        return plain_peer()
    assert url is not None
    if key == "resumable":
        return resumable_peer(url)
    if key in ("backend", "backend_nullpool"):
        return backend_peer(url, pooled=key == "backend")
    return dbos_peer(url)


def plain_peer() -> Peer:
    """The three functions in an ordinary Celery task."""
    app = Celery("bench_peers_plain", broker="memory://")

    @app.task(bind=True, name="bench_peers.plain")
    def plain(self: Task) -> int:
        return total(double(load(STEP_ROWS)))

    return Peer("plain", plain)


def resumable_peer(url: str) -> Peer:
    """The three functions as the steps of a resumable task."""
    import celery_resumable

    app = Celery("bench_peers_resumable", broker="memory://")
    app.conf.resumable_store_url = url

    @app.task(base=ResumableTask, bind=True, name="bench_peers.resumable")
    def resumable(self: Task) -> int:
        rows = step("load", load, STEP_ROWS)
        doubled = step("double", double, rows)
        return step("total", total, doubled)

    return Peer("resumable", resumable, celery_resumable.__version__)


def backend_peer(url: str, pooled: bool) -> Peer:
    """The plain task with Celery's database result backend storing its result.

    Celery's database backend pools its connections only in a process that forked (its
    ``SessionManager`` is told so by billiard's after-fork hook, as in a prefork pool
    process); ``pooled`` tells it so here. Otherwise every result opens a connection.
    """
    import celery

    key = "backend" if pooled else "backend_nullpool"
    app = Celery(f"bench_peers_{key}", broker="memory://", backend=f"db+{url}")
    app.conf.task_store_eager_result = True
    if pooled:
        app.backend.session_manager._after_fork()

    @app.task(bind=True, name=f"bench_peers.{key}")
    def with_backend(self: Task) -> int:
        return total(double(load(STEP_ROWS)))

    return Peer(key, with_backend, f"celery {celery.__version__}")


def dbos_peer(url: str) -> Peer:
    """A DBOS workflow of three steps, called from the plain task; absent if not installed."""
    try:
        import dbos
    except ImportError:
        return Peer("dbos", missing="not installed (pip install dbos)")
    from importlib.metadata import version

    logging.getLogger("dbos").setLevel(logging.WARNING)
    config: dbos.DBOSConfig = {
        "name": "bench_peers",
        "system_database_url": url,
        "application_version": "bench",
        "log_level": "WARNING",
    }
    dbos.DBOS(config=config)

    @dbos.DBOS.step()
    def dbos_load(count: int) -> list[int]:
        return load(count)

    @dbos.DBOS.step()
    def dbos_double(values: list[int]) -> list[int]:
        return double(values)

    @dbos.DBOS.step()
    def dbos_total(values: list[int]) -> int:
        return total(values)

    @dbos.DBOS.workflow()
    def three_steps() -> int:
        return dbos_total(dbos_double(dbos_load(STEP_ROWS)))

    dbos.DBOS.launch()
    app = Celery("bench_peers_dbos", broker="memory://")

    @app.task(bind=True, name="bench_peers.dbos")
    def with_dbos(self: Task) -> int:
        with dbos.SetWorkflowID(self.request.id):
            return three_steps()

    return Peer("dbos", with_dbos, f"dbos {version('dbos')}", close=dbos.DBOS.destroy)


# -- counting, in a child process ------------------------------------------------------


def child(key: str, url: str, runs: int) -> None:
    """Set peer ``key`` up, warm it up, run ``runs`` counted runs, print the counts (JSON)."""
    connects = [0]

    def on_connect(*_: Any) -> None:
        connects[0] += 1

    peer = build(key, url)
    try:
        for _ in range(WARM_UP_RUNS):
            peer.run()
        statements = Statements()
        sa.event.listen(sa.pool.Pool, "connect", on_connect)
        statements.start()
        started = time.perf_counter()
        try:
            for _ in range(runs):
                peer.run()
        finally:
            elapsed = time.perf_counter() - started
            statements.stop()
            sa.event.remove(sa.pool.Pool, "connect", on_connect)
        thread = threading.get_ident()
        print(
            json.dumps(
                {
                    "verbs": dict(statements.verbs(thread)),
                    "other_statements": statements.others(thread),
                    "connects": connects[0],
                    "seconds": elapsed,
                    "version": peer.version,
                }
            )
        )
    finally:
        if peer.close is not None:
            peer.close()
        for engine in [o for o in gc.get_objects() if isinstance(o, sa.Engine)]:
            engine.dispose()


@dataclasses.dataclass(frozen=True)
class ChildCount:
    """What one child process did in its database, and what it printed."""

    commits: int
    rollbacks: int
    wal: WalShare
    printed: dict[str, Any]


def run_child(key: str, server: Server, database: str, runs: int) -> ChildCount:
    """Run a counting child of ``key`` on ``database``; read the database around it."""
    command = [
        sys.executable, "-m", "benchmarks.bench_peers", "--child", key,
        "--child-url", server.url(database), "--counted", str(runs),
    ]  # fmt: skip
    before = server.counters(database)
    done = subprocess.run(
        command,
        cwd=ROOT,
        env=worker_env({}),
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"the {key} child failed: {done.stderr[-2000:]}")
    server.wait_idle(database)
    after: Counters = server.counters(database)
    delta = server.delta(before, after)
    printed: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return ChildCount(delta.commits, delta.rollbacks, delta.wal, printed)


@dataclasses.dataclass
class Counted:
    """What one counted run did: a child with the runs less a child without."""

    statements: dict[str, float]
    other_per_second: float
    connects: float
    commits: float
    rollbacks: float
    flushes: float
    wal_bytes: float
    fpi_bytes: float
    whole_server: bool
    version: str

    @property
    def total_statements(self) -> float:
        """All statements of a run."""
        return sum(self.statements.values())


def count(key: str, server: Server, runs: int, rounds: int) -> list[Counted]:
    """Counted runs of ``key`` in child processes, ``rounds`` times."""
    database = server.create(f"{key}_count")
    run_child(key, server, database, 0)  # tables, migrations: not counted
    counted = []
    for round_ in range(rounds):
        if round_ % 2 == 0:
            full, empty = run_child(key, server, database, runs), None
            empty = run_child(key, server, database, 0)
        else:
            empty = run_child(key, server, database, 0)
            full = run_child(key, server, database, runs)
        printed = full.printed
        counted.append(
            Counted(
                statements={verb: n / runs for verb, n in printed["verbs"].items()},
                other_per_second=printed["other_statements"] / printed["seconds"],
                connects=(printed["connects"] - empty.printed["connects"]) / runs,
                commits=(full.commits - empty.commits) / runs,
                rollbacks=(full.rollbacks - empty.rollbacks) / runs,
                flushes=(full.wal.commits - empty.wal.commits) / runs,
                wal_bytes=(full.wal.bytes - empty.wal.bytes) / runs,
                fpi_bytes=(full.wal.fpi_bytes - empty.wal.fpi_bytes) / runs,
                whole_server=full.wal.whole_server,
                version=printed["version"],
            )
        )
    return counted


# -- timing, in this process -----------------------------------------------------------


def time_rounds(peers: Sequence[Peer], runs: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per run of each peer, per round, the peers in turn."""
    for peer in peers:
        for _ in range(WARM_UP_RUNS):
            peer.run()
    per_run: dict[str, list[float]] = {peer.key: [] for peer in peers}
    for round_ in range(rounds):
        gc.collect()
        turn = round_ % len(peers)
        for peer in [*peers[turn:], *peers[:turn]]:
            start = time.perf_counter()
            for _ in range(runs):
                peer.run()
            per_run[peer.key].append((time.perf_counter() - start) / runs)
    return per_run


# -- the table -------------------------------------------------------------------------


def number(value: float) -> str:
    """A count per run: whole when it is, else two decimals."""
    if abs(value - round(value)) < 0.005:
        return f"{round(value):,}"
    return f"{value:,.2f}"


def table(
    missing: dict[str, str], per_run: dict[str, list[float]], counts: dict[str, list[Counted]]
) -> tuple[list[list[str]], list[str]]:
    """The table's rows and notes."""
    plain = per_run["plain"]
    ours_added = [o - p for o, p in zip(per_run[OURS], plain, strict=True)]
    rows: list[list[str]] = []
    notes: list[str] = []
    for key, name in PEERS.items():
        if key in missing:
            rows.append([f"{name}: {missing[key]}", "", "", "", "", "", "", "", ""])
            continue
        added = [t - p for t, p in zip(per_run[key], plain, strict=True)]
        if key == "plain":
            added_text = versus = "-"
        else:
            added_text = f"+{seconds(median(added))}"
            ratios = [a / o for a, o in zip(added, ours_added, strict=True)]
            versus = (
                "1"
                if key == OURS
                else f"{median(ratios):.1f}x ({min(ratios):.1f}-{max(ratios):.1f})"
            )
        counted = counts.get(key, [])
        figures = ["0"] * 5
        if counted:
            figures = [
                number(median([c.total_statements for c in counted])),
                number(median([c.connects for c in counted])),
                number(median([c.commits for c in counted])),
                number(median([c.flushes for c in counted])),
                f"{median([c.wal_bytes for c in counted]):,.0f}",
            ]
            notes.append(note(name, counted))
        rows.append([name, seconds(median(per_run[key])), added_text, versus, *figures])
    return rows, notes


def note(name: str, counted: Sequence[Counted]) -> str:
    """One note line: the peer's statements by verb and what else its figures hold."""
    last = counted[-1]
    verbs = ", ".join(
        f"{number(n)} {verb}"
        for verb, n in sorted(last.statements.items(), key=lambda item: -item[1])
    )
    parts = [f"{name} ({last.version}): {verbs or 'no statements'}"]
    rollbacks = median([c.rollbacks for c in counted])
    if rollbacks:
        parts.append(f"xact_rollback {number(rollbacks)}")
    other = median([c.other_per_second for c in counted])
    if other:
        parts.append(f"background threads: {other:.1f} statements/s")
    commits = [c.commits for c in counted]
    if number(min(commits)) != number(max(commits)):
        parts.append(f"commits {number(min(commits))}-{number(max(commits))} over the rounds")
    fpi = median([c.fpi_bytes for c in counted])
    if fpi >= 1:
        parts.append(f"{fpi:,.0f} WAL bytes of full-page images")
    return "; ".join(parts)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--runs", type=positive, default=200, help="timed runs per peer and round")
    parser.add_argument("--rounds", type=positive, default=5, help="timed rounds")
    parser.add_argument("--counted", type=int, default=200, help="counted runs per child process")
    parser.add_argument("--count-rounds", type=positive, default=3, help="counted rounds")
    parser.add_argument(
        "--store",
        default=POSTGRES_URL,
        help="SQLAlchemy URL of the PostgreSQL server (its databases are created and dropped)",
    )
    parser.add_argument("--child", choices=list(PEERS), help=argparse.SUPPRESS)
    parser.add_argument("--child-url", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Measure every peer and print the table."""
    args = parse_args(argv)
    if args.child:
        child(args.child, args.child_url, args.counted)
        return
    started = time.perf_counter()
    print_header("Peers on one PostgreSQL: a short run of 3 steps")
    if not reachable(args.store):
        print(f"PostgreSQL does not answer at {safe(args.store)}")
        return
    with Server(args.store) as server:
        print(f"PostgreSQL {server.version} at {safe(args.store)}, databases {server.prefix}_*")
        print()
        others_before = server.other_commits()
        peers = [
            build(key, None if key == "plain" else server.url(server.create(key))) for key in PEERS
        ]
        missing = {peer.key: peer.missing for peer in peers if peer.missing}
        measured = [peer for peer in peers if not peer.missing]
        try:
            per_run = time_rounds(measured, args.runs, args.rounds)
        finally:
            for peer in measured:
                if peer.close is not None:
                    peer.close()
        counts = {
            peer.key: count(peer.key, server, args.counted, args.count_rounds)
            for peer in measured
            if peer.key != "plain"
        }
        others_after = server.other_commits()
    rows, notes = table(missing, per_run, counts)
    whole = any(c.whole_server for counted in counts.values() for c in counted)
    busy = ", ".join(
        f"{name} {others_after[name] - others_before.get(name, 0):,}"
        for name in sorted(others_after)
        if others_after[name] != others_before.get(name, 0)
    )
    print_table(
        f"Per run of a 3-step task: time, median of {args.rounds} rounds of {args.runs} runs; "
        f"counts, median of {args.count_rounds} rounds of {args.counted} runs",
        [
            "peer",
            "per run",
            "added",
            "vs ours",
            "statements",
            "connects",
            "commits",
            "flushes",
            "WAL bytes",
        ],
        rows,
        [
            *notes,
            "added: the time of a run minus plain Celery's (same round); vs ours: "
            "added / celery-resumable's added (median and range of the rounds)",
            "statements: SQL statements the running thread executed (SQLAlchemy, every "
            "engine); connects: new connections",
            "commits: pg_stat_database.xact_commit of the peer's database; flushes: COMMIT "
            "records of its transactions in the WAL (each a WAL flush the run waits for); "
            "WAL bytes: those transactions' records"
            + (" (whole server: pg_walinspect missing)" if whole else ""),
            f"other databases of the server committed meanwhile (not counted): {busy}"
            if busy
            else "no other database of the server committed meanwhile",
        ],
    )
    print(f"total time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
