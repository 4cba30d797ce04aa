"""The fault matrix: every statement a run or the lease keeper executes, under every fault
that can land on it, on PostgreSQL and MariaDB, with a real task run through it.

Each cell runs a task whose statement is struck by the fault, delivers it again as a
worker would (an interrupted or deferred task goes back on the queue; a failed one is
sent again by ``celery resumable retry``) and checks the promises, not the mechanism:
the task ends (completed, or failed with a clear error and resumed by its retry), never
dropped in silence; every item is done, none more than once; a run never shares its
task with another. ``test_the_operations_guide_shows_the_matrix`` holds the table in
docs/operations.md to the outcomes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery

from celery_resumable import (
    CheckpointStore,
    ResumableTask,
    set_cursor,
    set_step_cursor_tx,
    step,
    step_cursor,
)
from celery_resumable.errors import CheckpointStoreError
from celery_resumable.testing import interrupt_when
from tests.faults.conftest import Faulty
from tests.faults.obstruction import Obstruction, alarm_raises

ITEMS = 12
STRUCK = 5  # the item at which the fault is armed
BATCH = 3
LEASE = 3.0
STATEMENT_TIMEOUT = 1.5
DELIVERIES = 12

STATEMENTS = [
    "claim",
    "periodic",
    "interrupt",
    "completed",
    "failed",
    "transactional",
    "django",
    "renewal",
]
FAULTS = ["before", "after", "restart", "locked", "exception"]
FAULT_TITLES = {
    "before": "connection lost before the statement",
    "after": "committed, answer lost",
    "restart": "session ended by the server mid-statement",
    "locked": "row locked past the statement timeout",
    "exception": "exception raised mid-statement",
}
STATEMENT_TITLES = {
    "claim": "claim",
    "periodic": "periodic write",
    "interrupt": "interrupt write",
    "completed": "`completed` write",
    "failed": "`failed` write",
    "transactional": "`set_step_cursor_tx` write (SQLAlchemy)",
    "django": "`set_step_cursor_tx` write (Django)",
    "renewal": "lease renewal",
    "purge": "purge",
}
# The SQL of each statement, by which the one waiting on a held row is told apart.
WAITING = {
    "claim": "INSERT INTO",
    "renewal": "SET lease_expires_at",
    "purge": "DELETE FROM",
    **{name: "SET status" for name in ("periodic", "interrupt", "completed", "failed")},
    "transactional": "SET status",
    "django": "SET status",
}
# A renewal runs on the lease keeper's thread, where no time limit or interrupt lands.
NOT_APPLICABLE = {("renewal", "exception")}

OUTCOMES: dict[tuple[str, str, str], str] = {}


def short_timeout(url: str, server: str) -> str:
    """``url`` with a short statement timeout, so that a held row outlives a statement."""
    if server == "postgres":
        timeout = int(STATEMENT_TIMEOUT * 1000)
        return f"{url}?options=-c%20statement_timeout%3D{timeout}"
    return f"{url}?read_timeout={round(STATEMENT_TIMEOUT)}"


@dataclass
class Cell:
    """One statement under one fault, and what the task did meanwhile."""

    faulty: Faulty
    statement: str
    fault: str
    obstruction: Obstruction
    task_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    done: list[int] = field(default_factory=list)
    armed: bool = False
    interrupt: bool = False
    active: int = 0
    overlap: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def strike(self, pattern: bytes) -> None:
        """Arm the fault for the next statement carrying ``pattern``, or waiting on the
        task's row held by another transaction."""
        if self.armed:
            return
        self.armed = True
        if self.fault in ("before", "after"):
            self.faulty.proxy.fail_on(pattern, self.fault)
        else:
            waiting = WAITING[self.statement]
            self.obstruction.hold(
                self.task_id, self.fault, waiting, insert=self.statement == "claim"
            )

    def enter(self) -> None:
        with self.lock:
            self.active += 1
            self.overlap = self.overlap or self.active > 1

    def leave(self) -> None:
        with self.lock:
            self.active -= 1


def make_tasks(app: Celery, cell: Cell, engine: sa.Engine) -> dict[str, Any]:
    """The tasks of the matrix, striking ``cell``'s statement at its moment."""

    def cursor_at(cursor: str | None) -> int:
        return int(cursor[2:]) if cursor else 0

    def finish() -> int:
        if cell.statement == "completed":
            cell.strike(b"completed")
        return ITEMS

    @app.task(base=ResumableTask, bind=True, shared=False, name="faults.items")
    def items(self: Any) -> int:
        cell.enter()
        try:
            step("prepare", lambda: "prepared")

            def process(cursor: str | None) -> int:
                for item in range(cursor_at(cursor), ITEMS):
                    cell.done.append(item)
                    if item == STRUCK and not cell.armed:
                        if cell.statement == "periodic":
                            cell.strike(f"c-{item + 1:04d}".encode())
                        elif cell.statement == "interrupt":
                            cell.strike(b"interrupted")
                            cell.interrupt = True
                        elif cell.statement == "failed":
                            cell.strike(b"failed")
                            raise RuntimeError("the task's own failure")
                    set_cursor(f"c-{item + 1:04d}")
                return ITEMS

            step_cursor("process", process)
            return step("finish", finish)
        finally:
            cell.leave()

    @app.task(base=ResumableTask, bind=True, shared=False, name="faults.batches")
    def batches(self: Any) -> int:
        cell.enter()
        try:

            def load(cursor: str | None) -> int:
                start = cursor_at(cursor)
                while start < ITEMS:
                    end = min(start + BATCH, ITEMS)
                    for _ in range(DELIVERIES):
                        try:
                            with engine.begin() as connection:
                                connection.execute(sa.text("SELECT 1"))
                                if start <= STRUCK < end:
                                    cell.strike(f"c-{end:04d}".encode())
                                set_step_cursor_tx(connection, f"c-{end:04d}")
                        except sa.exc.DBAPIError:
                            continue  # the batch again, as a transactional loop does
                        break
                    cell.done.extend(range(start, end))
                    start = end
                return ITEMS

            step_cursor("load", load)
            return ITEMS
        finally:
            cell.leave()

    @app.task(base=ResumableTask, bind=True, shared=False, name="faults.django")
    def django_batches(self: Any) -> int:
        from django.db import DatabaseError, connections, transaction

        cell.enter()
        try:

            def load(cursor: str | None) -> int:
                start = cursor_at(cursor)
                while start < ITEMS:
                    end = min(start + BATCH, ITEMS)
                    for _ in range(DELIVERIES):
                        try:
                            with transaction.atomic(using=DJANGO_ALIAS):
                                connection = connections[DJANGO_ALIAS]
                                with connection.cursor() as cursor_:
                                    cursor_.execute("SELECT 1")
                                if start <= STRUCK < end:
                                    cell.strike(f"c-{end:04d}".encode())
                                set_step_cursor_tx(connection, f"c-{end:04d}")
                        except DatabaseError:
                            # As a Django task does after a database error: a new
                            # connection, and the batch again.
                            connections[DJANGO_ALIAS].close()
                            continue
                        break
                    cell.done.extend(range(start, end))
                    start = end
                return ITEMS

            step_cursor("load", load)
            return ITEMS
        finally:
            cell.leave()
            connections[DJANGO_ALIAS].close()

    @app.task(base=ResumableTask, bind=True, shared=False, name="faults.renewed")
    def renewed(self: Any) -> int:
        cell.enter()
        try:

            def wait() -> int:
                # No statement of the run's own while it waits: only the keeper's renewals.
                cell.strike(self.request.id.encode())
                time.sleep(LEASE * 0.9)
                return 1

            step("wait", wait)

            def process(cursor: str | None) -> int:
                for item in range(cursor_at(cursor), ITEMS):
                    cell.done.append(item)
                    set_cursor(f"c-{item + 1:04d}")
                return ITEMS

            return step_cursor("process", process)
        finally:
            cell.leave()

    return {"items": items, "batches": batches, "django": django_batches, "renewed": renewed}


class Deliveries:
    """Deliver a task as a worker and its broker would, until it ends."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog
        self.kinds: list[str] = []

    def classify(self, result: Any) -> str:
        text = "\n".join(record.getMessage() for record in self.caplog.records)
        self.caplog.clear()
        if result.state == "SUCCESS":
            return "completed"
        if result.state == "FAILURE":
            error = result.result
            if isinstance(error, CheckpointStoreError) and error.transient:
                return "deferred"  # a worker defers it with backoff while the store is away
            return "failed"
        if "already completed; delivery skipped" in text:
            return "skipped"
        if "; re-queued" in text:
            return "requeued"
        if "is running elsewhere; deferred" in text:
            return "deferred"
        return "dropped"

    def run(self, task: Any, task_id: str) -> None:
        for _ in range(DELIVERIES):
            with self.caplog.at_level(logging.INFO, logger="celery_resumable"):
                result = task.apply(task_id=task_id)
            kind = self.classify(result)
            self.kinds.append(kind)
            if kind in ("completed", "skipped", "dropped"):
                return
            if kind == "deferred":
                time.sleep(0.5)
            # "failed": what `celery resumable retry` does is deliver it again.


@pytest.fixture
def cell_of(faulty: Faulty) -> Iterator[Callable[[str, str], Cell]]:
    made: list[Cell] = []

    def make(statement: str, fault: str) -> Cell:
        obstruction = Obstruction(faulty.server, faulty.direct_url, faulty.table, STATEMENT_TIMEOUT)
        cell = Cell(faulty, statement, fault, obstruction)
        made.append(cell)
        return cell

    yield make
    for cell in made:
        cell.obstruction.close()


DJANGO_ALIAS = "faults"


def django_database(faulty: Faulty) -> None:
    """Point Django's ``faults`` database at ``faulty``'s proxy (Django set up as the
    Django tests set it up)."""
    import tests.unit.django_app.conftest  # noqa: F401, I001 - configures Django first
    from django.conf import settings
    from django.db import connections

    url = sa.engine.make_url(short_timeout(faulty.url, faulty.server))
    if faulty.server == "postgres":
        engine, options = "postgresql", {"options": url.query["options"]}
    else:
        engine, options = "mysql", {"read_timeout": int(str(url.query["read_timeout"]))}
    database = {
        "ENGINE": f"django.db.backends.{engine}",
        "NAME": url.database,
        "USER": url.username or "",
        "PASSWORD": url.password or "",
        "HOST": url.host or "",
        "PORT": url.port or "",
        "OPTIONS": options,
    }
    if DJANGO_ALIAS in connections.settings:
        connections[DJANGO_ALIAS].close()
    every = {**settings.DATABASES, DJANGO_ALIAS: database}
    connections.settings[DJANGO_ALIAS] = connections.configure_settings(every)[DJANGO_ALIAS]
    with contextlib.suppress(AttributeError):
        delattr(connections._connections, DJANGO_ALIAS)


def app_for(faulty: Faulty) -> Celery:
    app = Celery(f"matrix_{uuid.uuid4().hex[:8]}", set_as_current=False)
    app.conf.update(
        resumable_store_url=short_timeout(faulty.url, faulty.server),
        resumable_table_name=faulty.table,
        resumable_checkpoint_interval=0,
        resumable_lease_seconds=LEASE,
        resumable_max_interruptions=5,
        resumable_partitions=faulty.partitioned,
    )
    return app


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("statement", STATEMENTS)
def test_a_statement_struck_by_a_fault_loses_nothing(
    faulty: Faulty,
    cell_of: Callable[[str, str], Cell],
    caplog: pytest.LogCaptureFixture,
    statement: str,
    fault: str,
) -> None:
    if (statement, fault) in NOT_APPLICABLE:
        pytest.skip("a renewal runs on the lease keeper's thread: no exception lands there")
    cell = cell_of(statement, fault)
    app = app_for(faulty)
    engine = sa.create_engine(short_timeout(faulty.url, faulty.server))
    faulty.store.get("warm-up")  # the table exists before the first statement is struck
    tasks = make_tasks(app, cell, engine)
    if statement == "django":
        django_database(faulty)
    kinds = {"transactional": "batches", "renewal": "renewed", "django": "django"}
    task = tasks[kinds.get(statement, "items")]
    deliveries = Deliveries(caplog)
    try:
        # Given a task whose statement is struck by the fault
        if statement == "claim":
            cell.strike(task.name.encode())

        # When it is delivered, and delivered again as a worker would, until it ends
        with (
            alarm_raises(),
            interrupt_when(lambda run, boundary: cell.interrupt and boundary == "cursor"),
        ):
            deliveries.run(task, cell.task_id)
        cell.obstruction.done.wait(30)
    finally:
        engine.dispose()
        app.close()

    # Then the fault struck, the task ended, never dropped, and every item was done once
    assert cell.obstruction.error is None, cell.obstruction.error
    assert cell.armed and (fault not in ("before", "after") or faulty.proxy.struck.is_set())
    kinds = deliveries.kinds
    assert kinds and kinds[-1] in ("completed", "skipped"), kinds
    assert "dropped" not in kinds, kinds
    counts = Counter(cell.done)
    assert set(counts) == set(range(ITEMS)), (
        f"items lost: {sorted(set(range(ITEMS)) - set(counts))}"
    )
    repeated = sum(counts.values()) - ITEMS
    assert repeated <= BATCH, f"{repeated} items done again"
    assert not cell.overlap
    checkpoint = faulty.direct.get(cell.task_id)
    assert checkpoint is not None and checkpoint.status == "completed"
    if not faulty.partitioned:
        OUTCOMES[(statement, fault, faulty.server)] = outcome_text(kinds)


def outcome_text(kinds: list[str]) -> str:
    """How the task ended, in the words of the operations guide's table.

    Deferrals and re-queues on the way are delays, not outcomes, and their number
    depends on timing; a failure (the task's own error, or the exception raised into
    it) is an outcome: the task showed FAILURE until its retry completed it.
    """
    return "failed, then completed" if "failed" in kinds else "completed"


def test_purge_struck_by_a_fault_deletes_only_old_rows(faulty: Faulty) -> None:
    if faulty.partitioned:
        pytest.skip("completed runs in partitions leave a whole partition at a time")
    # A store keeping completed rows no time at all: every completed row is old.
    store = CheckpointStore(
        short_timeout(faulty.url, faulty.server), faulty.table, keep_completed=0
    )
    for fault in ("before", "after", "restart", "locked"):
        old = [f"old-{fault}-{n}" for n in range(3)]
        for task_id in old:
            assert store.claim(task_id, "t", "o", 60).claimed
            assert store.save(task_id, "o", state_done(), status="completed")
        live = f"live-{fault}"
        assert store.claim(live, "t", "live-owner", 60).claimed
        obstruction = Obstruction(faulty.server, faulty.direct_url, faulty.table, STATEMENT_TIMEOUT)
        try:
            if fault in ("before", "after"):
                faulty.proxy.fail_on(b"DELETE", fault)
            else:
                obstruction.hold(old[0], fault, WAITING["purge"])
            time.sleep(0.2)
            # When the keeper purges (it logs a failure and purges again later)
            store.purge_due(every=0)
            obstruction.done.wait(30)
            store.purge_due(every=0)
        finally:
            obstruction.close()
        # Then every old row is gone and the live one is kept
        assert all(store.get(task_id) is None for task_id in old)
        assert store.get(live) is not None
        OUTCOMES[("purge", fault, faulty.server)] = "old rows purged, live row kept"


def state_done() -> Any:
    from celery_resumable.store.records import State

    return State((), None, None, 0)


def render() -> str:
    """The matrix as the Markdown table of docs/operations.md."""
    header = "| statement | " + " | ".join(FAULT_TITLES[f] for f in FAULTS) + " |"
    rule = "|---" * (len(FAULTS) + 1) + "|"
    lines = [header, rule]
    for statement in [*STATEMENTS, "purge"]:
        cells = []
        for fault in FAULTS:
            if (statement, fault) in NOT_APPLICABLE or (
                statement == "purge" and fault == "exception"
            ):
                cells.append("n/a")
                continue
            found = {OUTCOMES.get((statement, fault, server)) for server in ("postgres", "mysql")}
            cells.append(" / ".join(sorted(text for text in found if text)) or "?")
        lines.append(f"| {STATEMENT_TITLES[statement]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def test_the_operations_guide_shows_the_matrix() -> None:
    expected = len(STATEMENTS) * len(FAULTS) - len(NOT_APPLICABLE) + 4
    if len({(s, f) for s, f, _ in OUTCOMES}) < expected:
        pytest.skip("the whole matrix did not run in this session")
    guide = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    table = render()
    assert table in guide, f"docs/operations.md should show the matrix as it ran:\n\n{table}"
