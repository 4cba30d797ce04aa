"""An exception raised while a statement is on the wire (a soft time limit from a signal
handler, KeyboardInterrupt, a green timeout) never leaves a broken connection in the
pool: the next statements of the process get the right answers."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from celery_resumable.store.records import State
from tests.faults.conftest import Faulty
from tests.faults.obstruction import row_locked


class LimitError(Exception):
    """Raised from a signal handler, as Celery's soft time limit is."""


@contextmanager
def alarm(seconds: float) -> Iterator[None]:
    def raise_limit(*_: Any) -> None:
        raise LimitError()

    previous = signal.signal(signal.SIGALRM, raise_limit)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("write", ["save", "mark", "renew"])
def test_an_exception_inside_a_write_leaves_the_pool_clean(faulty: Faulty, write: str) -> None:
    assert threading.current_thread() is threading.main_thread()
    store = faulty.direct
    # Given two claimed tasks, the first one's row held by another transaction
    assert store.claim("task-1", "t", "owner-1", 60).claimed
    assert store.claim("task-2", "t", "owner-2", 60).claimed
    statements = {
        "save": lambda: store.save("task-1", "owner-1", State((), "loop", 3, 0), lease_seconds=60),
        "mark": lambda: store.mark("task-1", "owner-1", "interrupted", 1),
        "renew": lambda: store.renew([("task-1", "owner-1")], 60),
    }

    # When an exception from a signal handler interrupts the write waiting on the lock
    with (
        row_locked(faulty.direct_url, faulty.table, "task-1"),
        pytest.raises(LimitError),
        alarm(0.5),
    ):
        statements[write]()

    # Then the next statements of the process answer right, on both paths
    second = store.get("task-2")
    assert second is not None and second.task_id == "task-2" and second.cursor is None
    assert store.save("task-2", "owner-2", State((), "loop", 9, 0), lease_seconds=60)
    assert store.claim("task-3", "t", "owner-3", 60).checkpoint.task_name == "t"
    second = store.get("task-2")
    assert second is not None and second.cursor == 9
    assert store.renew([("task-2", "owner-2")], 60) == {"task-2"}
