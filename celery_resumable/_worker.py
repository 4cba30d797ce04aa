"""Worker integration: the shutdown notice.

The notice is one byte of anonymous shared memory mapped when this module is imported,
before a prefork pool forks its children, so a flag set by the main process is seen by
every child. The main process sets it from ``worker_shutting_down`` and from the
SIGTERM/SIGQUIT/SIGINT handlers, before Celery's own handler starts a soft-shutdown wait.
"""

from __future__ import annotations

import logging
import mmap
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from celery import signals as celery_signals

__all__ = ["clear_shutdown", "request_shutdown", "shutdown_requested"]

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
