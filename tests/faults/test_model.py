"""Model-based test: random sequences of deliveries of one task, each with its own faults
(an interrupt, the task's own failure, a lost answer, a failed COMMIT), checked after
every delivery against what the checkpoint promises.

The task has a plain step, a cursor step, a transactional cursor step and a last step.
hypothesis's stateful testing picks the faults of each delivery; the invariants hold
whatever the sequence: the rows committed by the transactional step are exactly the
items below its stored cursor (exactly once), every item below the plain cursor step's
stored cursor was done, a finished step's stored result is what its first completed run
returned, and the task completes once the faults stop, with every item done.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery
from celery.exceptions import Ignore
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from celery_resumable import (
    ResumableTask,
    set_cursor,
    set_step_cursor_tx,
    step,
    step_cursor,
)
from celery_resumable.testing import interrupt_when
from tests.faults.conftest import Faulty

ITEMS = 8
BATCH = 2
LOST = [None, b"interrupted", b"failed", b"completed", b"running"]

# A failed COMMIT is made with a deferred constraint, PostgreSQL's.
ON_POSTGRES = pytest.mark.parametrize(
    "faulty", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


@pytest.fixture
def server(faulty: Faulty) -> Iterator[tuple[Faulty, str]]:
    rows = f"rows_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(faulty.direct_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                f"CREATE TABLE {rows} (task_id text, item int, poison int, CONSTRAINT "
                f"{rows}_once UNIQUE (poison) DEFERRABLE INITIALLY DEFERRED)"
            )
        )
    yield faulty, rows
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP TABLE {rows}"))
    engine.dispose()


class Listener(logging.Handler):
    """Keeps what the package logs during a delivery."""

    def __init__(self, said: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.said = said

    def emit(self, record: logging.LogRecord) -> None:
        self.said.append(record.getMessage())


class Deliveries(RuleBasedStateMachine):
    """Deliver one task again and again, each time with faults of hypothesis's choosing."""

    faulty: Faulty
    rows: str

    @initialize()
    def start(self) -> None:
        self.task_id = str(uuid.uuid4())
        self.app = Celery(f"model_{uuid.uuid4().hex[:8]}", set_as_current=False)
        self.app.conf.update(
            resumable_store_url=self.faulty.url,
            resumable_table_name=self.faulty.table,
            resumable_checkpoint_interval=0,
            resumable_lease_seconds=2.0,
            resumable_max_interruptions=1000,
        )
        self.engine = sa.create_engine(self.faulty.url)
        self.counter = itertools.count(1)
        self.first_result: int | None = None  # what step "a" returned when it completed
        self.a_returned: list[int] = []  # every value step "a" returned, in order
        self.done_b: set[int] = set()
        self.completed = False
        self.plan: dict[str, Any] = {}
        self.task = self._task()
        self.said: list[str] = []
        self.listener = Listener(self.said)
        logging.getLogger("celery_resumable").addHandler(self.listener)

    def _task(self) -> Any:
        machine = self

        @self.app.task(base=ResumableTask, bind=True, shared=False, name="model.job")
        def job(task: Any) -> int:
            plan = machine.plan

            def a() -> int:
                machine.a_returned.append(next(machine.counter))
                return machine.a_returned[-1]

            value = step("a", a)

            def process(cursor: int | None) -> int:
                for item in range(cursor or 0, ITEMS):
                    if plan.get("fail_b") == item:
                        plan.pop("fail_b")
                        raise RuntimeError("the task's own failure")
                    machine.done_b.add(item)
                    set_cursor(item + 1)
                return ITEMS

            step_cursor("b", process)

            def load(cursor: int | None) -> int:
                start = cursor or 0
                while start < ITEMS:
                    end = min(start + BATCH, ITEMS)
                    try:
                        with machine.engine.begin() as connection:
                            for item in range(start, end):
                                connection.execute(
                                    sa.text(f"INSERT INTO {machine.rows} VALUES (:t, :i, NULL)"),
                                    {"t": machine.task_id, "i": item},
                                )
                            if plan.get("fail_commit") == start:
                                plan.pop("fail_commit")
                                for _ in range(2):  # a duplicate the COMMIT refuses
                                    connection.execute(
                                        sa.text(f"INSERT INTO {machine.rows} VALUES (:t, -1, 1)"),
                                        {"t": machine.task_id},
                                    )
                            set_step_cursor_tx(connection, end)
                    except sa.exc.IntegrityError:
                        plan["after_failed_commit"] = True
                        continue  # the batch again
                    start = end
                return ITEMS

            step_cursor("c", load)
            return step("d", lambda: value)

        return job

    @precondition(lambda self: not self.completed)
    @rule(
        interrupt=st.one_of(st.none(), st.integers(1, ITEMS * 2), st.just("after-failed-commit")),
        fail_b=st.one_of(st.none(), st.integers(0, ITEMS - 1)),
        fail_commit=st.one_of(st.none(), st.sampled_from(range(0, ITEMS, BATCH))),
        lost=st.sampled_from(LOST),
    )
    def deliver(
        self,
        interrupt: int | str | None,
        fail_b: int | None,
        fail_commit: int | None,
        lost: bytes | None,
    ) -> None:
        self.plan = {"fail_b": fail_b, "fail_commit": fail_commit}
        if lost is not None:
            self.faulty.proxy.fail_on(lost, "after")
        boundaries = itertools.count(1)

        def stop_here(run: Any, kind: str) -> bool:
            if interrupt == "after-failed-commit":
                return bool(self.plan.get("after_failed_commit"))
            return interrupt is not None and next(boundaries) == interrupt

        self.said.clear()
        with interrupt_when(stop_here):
            result = self.task.apply(task_id=self.task_id)
        self.faulty.proxy.armed = None
        # A run that stops without going back on the queue drops its task for good.
        assert not any("another run took over" in line for line in self.said), self.said
        if result.state == "SUCCESS":
            self.completed = True
            self.stored_progress_matches_what_was_done()
            # The result of a resumed run is the one its first completed step returned:
            # the stored one, or (never stored before) the one this run's step returned.
            # A completed row keeps no results, so the stored one was seen before.
            expected = self.first_result if self.first_result is not None else self.a_returned[-1]
            assert result.result == expected

    @precondition(lambda self: self.completed)
    @rule()
    def deliver_a_late_duplicate(self) -> None:
        # A late duplicate delivery of the completed task is skipped: nothing runs again.
        # (An eager apply() is not a delivery: under a completed id it starts over.)
        before = (set(self.done_b), next(self.counter))
        self.plan = {}
        self.task.push_request(
            id=self.task_id, args=(), kwargs={}, is_eager=False, called_directly=False
        )
        try:
            with pytest.raises(Ignore):
                self.task()
        finally:
            self.task.pop_request()
        assert (set(self.done_b), next(self.counter)) == (before[0], before[1] + 1)

    @invariant()
    def stored_progress_matches_what_was_done(self) -> None:
        if not hasattr(self, "task_id"):
            return
        checkpoint = self.faulty.direct.get(self.task_id)
        if checkpoint is None:
            return
        finished = {s.name: s.result for s in checkpoint.finished_steps}
        if "a" in finished:
            if self.first_result is None:
                self.first_result = finished["a"]
            assert finished["a"] == self.first_result
        with self.engine.connect() as connection:
            committed = sorted(
                connection.execute(
                    sa.text(f"SELECT item FROM {self.rows} WHERE task_id = :t AND item >= 0"),
                    {"t": self.task_id},
                ).scalars()
            )
        # The transactional step's rows are exactly the items below its stored cursor; a
        # completed row keeps no progress, and its task did every item.
        if "c" in finished or checkpoint.status == "completed":
            assert committed == list(range(ITEMS))
        elif checkpoint.current_step == "c":
            assert committed == list(range(checkpoint.cursor or 0))
        else:
            assert committed == []
        # Nothing below the plain cursor step's stored cursor was skipped.
        if "b" in finished:
            assert self.done_b == set(range(ITEMS))
        elif checkpoint.current_step == "b":
            assert set(range(checkpoint.cursor or 0)) <= self.done_b

    def teardown(self) -> None:
        if hasattr(self, "task_id"):
            # Once the faults stop, the task completes with every item done.
            self.plan = {}
            for _ in range(10):
                if self.completed:
                    break
                result = self.task.apply(task_id=self.task_id)
                self.completed = result.state == "SUCCESS"
            assert self.completed
            self.stored_progress_matches_what_was_done()
            self.engine.dispose()
            self.app.close()
            logging.getLogger("celery_resumable").removeHandler(self.listener)


@ON_POSTGRES
def test_random_deliveries_keep_the_promises(
    server: tuple[Faulty, str], caplog: pytest.LogCaptureFixture
) -> None:
    faulty, rows = server
    faulty.store.get("warm-up")  # the table exists before the first fault
    Deliveries.faulty = faulty
    Deliveries.rows = rows
    caplog.set_level(logging.CRITICAL)
    run_state_machine_as_test(
        Deliveries,
        settings=settings(
            max_examples=15,
            stateful_step_count=6,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
