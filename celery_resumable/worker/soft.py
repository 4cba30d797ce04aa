"""Celery's soft shutdown, left as soon as nothing runs any more.

With ``worker_soft_shutdown_timeout`` (and ``REMAP_SIGTERM=SIGQUIT``), Celery waits the
whole timeout in its signal handler before the cold shutdown, even after every task has
ended. Resumable tasks save and go back on the queue within moments of the notice, so
the wait is cut short once no task runs in the worker's processes: the worker then goes
on with Celery's own cold shutdown.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["leave_early"]

logger = logging.getLogger("celery_resumable.worker")

_POLL = 0.1
# Nothing may run for this long before the wait ends: a pool process between two tasks
# has no task for a moment.
_IDLE_FOR = 0.3


def leave_early(worker: Any, running: Callable[[], int]) -> None:
    """Make ``worker``'s soft-shutdown wait end once ``running()`` (the tasks running in
    the worker and its pool processes) stays at zero; kept as is otherwise."""
    original = getattr(worker, "wait_for_soft_shutdown", None)
    if original is None or getattr(original, "_resumable_soft", False):
        return

    def wait_for_soft_shutdown() -> None:
        conf = worker.app.conf
        timeout = float(conf.worker_soft_shutdown_timeout or 0)
        if timeout <= 0 or conf.worker_enable_soft_shutdown_on_idle:
            return original()  # type: ignore[no-any-return]
        from celery.worker import state

        if not tuple(state.active_requests):
            return None
        logger.warning("Initiating Soft Shutdown, terminating in %s seconds", timeout)
        _wait_idle(time.monotonic() + timeout, running)
        return None

    wait_for_soft_shutdown._resumable_soft = True  # type: ignore[attr-defined]
    worker.wait_for_soft_shutdown = wait_for_soft_shutdown


def _wait_idle(deadline: float, running: Callable[[], int]) -> None:
    """Sleep until ``deadline``, or until no task has run for ``_IDLE_FOR`` seconds."""
    idle_since: float | None = None
    while (now := time.monotonic()) < deadline:
        if running():
            idle_since = None
        elif idle_since is None:
            idle_since = now
        elif now - idle_since >= _IDLE_FOR:
            logger.info("soft shutdown: no task runs any more; shutting down now")
            return
        time.sleep(min(_POLL, max(deadline - now, 0.0)))
