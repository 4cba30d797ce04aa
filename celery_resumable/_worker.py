"""Worker integration: the shutdown notice and the lease keeper.

The notice is one byte of anonymous shared memory mapped when this module is imported,
before a prefork pool forks its children, so a flag set by the main process is seen by
every child. The main process sets it from ``worker_shutting_down`` and from the
SIGTERM/SIGQUIT/SIGINT handlers, before Celery's own handler starts a soft-shutdown wait.
"""

from __future__ import annotations

import logging
import mmap
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

from celery import signals as celery_signals

__all__ = [
    "LeaseHolder",
    "clear_shutdown",
    "keeper",
    "request_shutdown",
    "shutdown_requested",
]

logger = logging.getLogger("celery_resumable.worker")

_notice = mmap.mmap(-1, 1)


def shutdown_requested() -> bool:
    """Whether the worker running this process was told to stop."""
    return _notice[0] != 0


def request_shutdown() -> None:
    """Tell every resumable task of this worker, in all its processes, to stop at a boundary."""
    _notice[0] = 1


def clear_shutdown() -> None:
    """Withdraw the shutdown notice (a new worker starting in this process)."""
    _notice[0] = 0


def _on_worker_init(**_: Any) -> None:
    clear_shutdown()


def _on_shutting_down(**_: Any) -> None:
    request_shutdown()


_WATCHED_SIGNALS = ("SIGTERM", "SIGQUIT", "SIGINT")


def _on_worker_ready(**_: Any) -> None:
    """Put the notice in front of Celery's own shutdown handlers."""
    if threading.current_thread() is not threading.main_thread():
        return
    for name in _WATCHED_SIGNALS:
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        previous = signal.getsignal(signum)
        if callable(previous) and not getattr(previous, "_resumable_notice", False):
            signal.signal(signum, _notice_first(previous))


def _notice_first(
    previous: Callable[[int, FrameType | None], Any],
) -> Callable[[int, FrameType | None], Any]:
    def handler(signum: int, frame: FrameType | None) -> Any:
        request_shutdown()
        return previous(signum, frame)

    handler._resumable_notice = True  # type: ignore[attr-defined]
    return handler


celery_signals.worker_init.connect(_on_worker_init, weak=False)
celery_signals.worker_shutting_down.connect(_on_shutting_down, weak=False)
celery_signals.worker_ready.connect(_on_worker_ready, weak=False)


class LeaseHolder(Protocol):
    """A run whose lease the keeper renews."""

    lease_seconds: float

    def renew_lease(self) -> None:
        """Extend the lease; mark the run lost when another run took it."""


class LeaseKeeper:
    """One daemon thread per process renewing the leases of the runs in it."""

    def __init__(self) -> None:
        self._due: dict[LeaseHolder, float] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, run: LeaseHolder) -> None:
        """Renew ``run``'s lease every third of its length until removed."""
        with self._lock:
            self._due[run] = time.monotonic() + run.lease_seconds / 3
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="celery-resumable-lease", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def remove(self, run: LeaseHolder) -> None:
        """Stop renewing ``run``'s lease."""
        with self._lock:
            self._due.pop(run, None)

    def _loop(self) -> None:
        while True:
            with self._lock:
                next_due = min(self._due.values(), default=None)
            # With no run to renew, sleep until add() wakes the thread.
            self._wake.wait(None if next_due is None else max(next_due - time.monotonic(), 0.0))
            self._wake.clear()
            now = time.monotonic()
            with self._lock:
                due = [run for run, when in self._due.items() if when <= now]
                for run in due:
                    self._due[run] = now + run.lease_seconds / 3
            for run in due:
                try:
                    run.renew_lease()
                except Exception:
                    logger.exception("lease renewal failed")

    def _after_fork(self) -> None:
        self._due = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None


keeper = LeaseKeeper()
os.register_at_fork(after_in_child=keeper._after_fork)
