"""Helpers for testing resumable tasks: interrupt a run after a step or at a cursor.

In eager mode (``task.apply()``, ``task_always_eager``) an interrupted run saves its
checkpoint and ends with state ``IGNORED`` instead of going back on a queue; call the
task again with the same ``task_id`` to resume it::

    with interrupt_after_step("download"):
        first = import_users.apply(args=(ids,))
    resumed = import_users.apply(args=(ids,), task_id=first.id)

Outside a worker, the thread that renews the leases of running tasks outlives the last
run by a couple of seconds (so that runs in quick succession share it); a test suite that
checks for leftover threads calls ``stop_lease_keeper()`` after each test (the pytest
plugin does).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from celery_resumable.run.context import Boundary, Run, interrupt_hooks
from celery_resumable.worker.lease_keeper import keeper

__all__ = ["interrupt_after_step", "interrupt_at_cursor", "interrupt_when", "stop_lease_keeper"]


def stop_lease_keeper() -> None:
    """End the lease keeper's idle thread now, and wait for it to end.

    Does nothing while a run is in progress in the process, or in a worker's process
    (where the thread stays between runs).
    """
    keeper.stop()


@contextlib.contextmanager
def interrupt_when(predicate: Callable[[Run, Boundary], bool]) -> Iterator[None]:
    """Interrupt resumable runs in this process at the first boundary where ``predicate`` holds."""
    fired = False

    def hook(run: Run, boundary: Boundary) -> bool:
        nonlocal fired
        if fired or not predicate(run, boundary):
            return False
        fired = True
        return True

    interrupt_hooks.append(hook)
    try:
        yield
    finally:
        interrupt_hooks.remove(hook)


def interrupt_after_step(name: str) -> contextlib.AbstractContextManager[None]:
    """Interrupt the run right after step ``name`` finishes (once)."""

    def after(run: Run, boundary: Boundary) -> bool:
        return boundary == "step_end" and bool(run.finished) and run.finished[-1].name == name

    return interrupt_when(after)


def interrupt_at_cursor(
    name: str, when: int | Callable[[Any], bool]
) -> contextlib.AbstractContextManager[None]:
    """Interrupt step ``name`` at a cursor (once).

    ``when`` is a number of cursor updates made in that step by the run, or a
    predicate on the stored (JSON) cursor.
    """
    updates = 0

    def at(run: Run, boundary: Boundary) -> bool:
        nonlocal updates
        if boundary != "cursor" or run.in_progress is None or run.in_progress[0] != name:
            return False
        updates += 1
        if callable(when):
            return bool(when(run.in_progress[1]))
        return updates >= when

    return interrupt_when(at)
