"""Worker integration: the shutdown notice.

The notice is one byte of shared memory that the worker's main process sets when the
worker is told to stop, and that every process of the worker reads at each boundary.
When a worker starts, the byte moves to a small file mapped shared: forked pool
processes inherit the mapping, spawned ones map the file named in the environment. The
main process sets the notice from its signal handlers (before Celery's own, which may
wait out a soft shutdown), from ``worker_shutting_down``, and from a worker bootstep
when the worker's blueprint begins to stop, which every stop path reaches (the
remote-control ``shutdown`` command and a SIGHUP restart included). It withdraws the
notice and removes the file once the worker has shut down and its tasks have ended.

This module only keeps the notice; ``celery_resumable.worker.install`` calls it from
Celery's signals and the worker's bootsteps.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import mmap
import os
import signal
import tempfile
import threading
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any

from billiard.process import current_process

from celery_resumable.worker import soft

__all__ = [
    "after_fork_in_child",
    "clear_shutdown",
    "pool_process_started",
    "request_shutdown",
    "shutdown_requested",
    "task_ended",
    "task_started",
    "tasks_running",
    "worker_started",
    "worker_stopped",
    "worker_stopping",
    "wrap_signal_handlers",
]

logger = logging.getLogger("celery_resumable.worker")

# The environment variable naming the notice file, for pool processes that are spawned
# (fresh interpreters that do not inherit the main process's memory).
NOTICE_FILE_ENV = "CELERY_RESUMABLE_NOTICE_FILE"

# Byte 0 is the notice; the next bytes count the tasks running in each pool process
# (by its index), so the main process can tell when nothing runs any more.
_SLOTS = 1024
_SIZE = 1 + _SLOTS

_notice = mmap.mmap(-1, _SIZE)
_slot: int | None = None  # this pool process's byte in the shared region
_notice_file: str | None = None  # the file behind _notice while a worker runs
_notice_owner: int | None = None  # the process that created it (and removes it)
_workers: weakref.WeakSet[Any] = weakref.WeakSet()  # workers running in this process
_pool_process = False  # this process is a pool process of a worker
_worker_pid: int | None = None  # the process the workers of ``_workers`` run in
_tasks_running = 0  # tasks executing in this process (threads, greenlets, solo)
_withdraw_pending = False  # the worker stopped; withdraw when its tasks have ended
_removed_at_exit = False  # the notice file is removed when the process exits
_lock = threading.Lock()


def shutdown_requested() -> bool:
    """Whether the worker running this process was told to stop."""
    return _notice[0] != 0


def request_shutdown() -> None:
    """Tell every resumable task of this worker, in all its processes, to stop at a boundary."""
    _notice[0] = 1


def clear_shutdown() -> None:
    """Withdraw the shutdown notice."""
    _notice[0] = 0


def worker_stopping() -> bool:
    """Whether a worker that runs in this process, or owns this pool process, is stopping."""
    return _notice[0] != 0 and (_pool_process or len(_workers) > 0)


# -- the worker's life -------------------------------------------------------------


def worker_started(worker: Any) -> None:
    """``worker`` starts in this process: give it a fresh notice before its pool starts."""
    global _withdraw_pending, _worker_pid
    with _lock:
        _withdraw_pending = False
        _worker_pid = os.getpid()
        if not _workers:
            _open_notice_file()
        _workers.add(worker)
    soft.leave_early(worker, tasks_running)


def pool_process_started() -> None:
    """A pool process starts: a spawned one maps the notice file of its worker.

    The solo pool sends this signal in the worker's own process, which is no pool
    process: its worker is known there (``_workers``) for as long as it runs.
    """
    global _pool_process, _slot
    if _workers and os.getpid() == _worker_pid:
        return
    _pool_process = True
    path = os.environ.get(NOTICE_FILE_ENV)
    if path and path != _notice_file:
        _attach_notice_file(path)
    index = getattr(current_process(), "index", None)
    _slot = 1 + (index if isinstance(index, int) else os.getpid()) % _SLOTS
    _notice[_slot] = 0


def tasks_running() -> int:
    """Tasks running in this process, and in the pool processes of its worker."""
    return _tasks_running + sum(_notice[1:_SIZE])


def worker_stopped(worker: Any) -> None:
    """The worker's pool has stopped: remove the notice file, then withdraw the notice.

    Threads or greenlets of a cold-stopped pool may still be running tasks in this
    process; the notice holds until the last of them ends, so they stop at a boundary.
    """
    global _withdraw_pending
    with _lock:
        if worker not in _workers:
            return
        _workers.discard(worker)
        if _workers:
            return
        _remove_notice_file()
        if _tasks_running:
            _withdraw_pending = True
        else:
            clear_shutdown()


def task_started() -> None:
    """A task starts running in this process."""
    global _tasks_running
    with _lock:
        _tasks_running += 1
        _publish_running()


def _publish_running() -> None:
    if _slot is not None:
        _notice[_slot] = min(_tasks_running, 255)


def task_ended() -> None:
    """A task of this process ended; the last one withdraws a notice its stopped worker left."""
    global _tasks_running, _withdraw_pending
    with _lock:
        _tasks_running = max(_tasks_running - 1, 0)
        _publish_running()
        if _withdraw_pending and not _tasks_running:
            _withdraw_pending = False
            clear_shutdown()


def after_fork_in_child() -> None:
    """A forked process runs no task yet and shares no lock with its parent."""
    global _tasks_running, _withdraw_pending, _lock, _slot
    _tasks_running = 0
    _slot = None
    _withdraw_pending = False
    _lock = threading.Lock()


# -- the notice file -----------------------------------------------------------------


def _open_notice_file() -> None:
    """Map a new, clear notice from a file that spawned pool processes can open."""
    global _notice, _notice_file, _notice_owner, _removed_at_exit
    _remove_notice_file()
    try:
        descriptor, path = tempfile.mkstemp(prefix="celery-resumable-notice-")
    except OSError as exc:
        logger.warning("no file for the shutdown notice, spawned pool processes miss it: %s", exc)
        _notice = mmap.mmap(-1, _SIZE)
        return
    try:
        os.ftruncate(descriptor, _SIZE)
        _notice = mmap.mmap(descriptor, _SIZE)
    except (OSError, ValueError) as exc:
        logger.warning("no file for the shutdown notice, spawned pool processes miss it: %s", exc)
        _notice = mmap.mmap(-1, _SIZE)
        os.unlink(path)
        return
    finally:
        os.close(descriptor)
    _notice_file, _notice_owner = path, os.getpid()
    os.environ[NOTICE_FILE_ENV] = path
    if not _removed_at_exit:
        _removed_at_exit = True
        atexit.register(_remove_notice_file)


def _attach_notice_file(path: str) -> None:
    global _notice, _notice_file
    try:
        descriptor = os.open(path, os.O_RDWR)
    except OSError as exc:
        logger.warning("cannot open the shutdown notice %s: %s", path, exc)
        return
    try:
        _notice = mmap.mmap(descriptor, _SIZE)
    except (OSError, ValueError) as exc:
        logger.warning("cannot map the shutdown notice %s: %s", path, exc)
        return
    finally:
        os.close(descriptor)
    _notice_file = path


def _remove_notice_file() -> None:
    """Remove the notice file this process created; the mapping itself stays valid."""
    global _notice_file, _notice_owner
    path, owner = _notice_file, _notice_owner
    if path is None or owner != os.getpid():
        return
    _notice_file = _notice_owner = None
    if os.environ.get(NOTICE_FILE_ENV) == path:
        del os.environ[NOTICE_FILE_ENV]
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


# -- signal handlers -------------------------------------------------------------------

# Set before Celery's handler runs: on the soft path it waits inside the handler.
_NOTICE_FIRST = ("SIGTERM", "SIGQUIT", "SIGINT")
# SIGHUP restarts a worker that is not on a terminal, but where Celery cannot restart
# it the handler only warns: set the notice only if the handler started a stop.
_NOTICE_IF_STOPPING = ("SIGHUP",)


def wrap_signal_handlers() -> None:
    """Put the notice in front of (or behind) Celery's own shutdown handlers."""
    if threading.current_thread() is not threading.main_thread():
        return
    for names, wrap in ((_NOTICE_FIRST, _notice_first), (_NOTICE_IF_STOPPING, _notice_after)):
        for name in names:
            signum = getattr(signal, name, None)
            if signum is None:
                continue
            previous = signal.getsignal(signum)
            if callable(previous) and not getattr(previous, "_resumable_notice", False):
                signal.signal(signum, wrap(previous))


def _notice_first(
    previous: Callable[[int, FrameType | None], Any],
) -> Callable[[int, FrameType | None], Any]:
    def handler(signum: int, frame: FrameType | None) -> Any:
        request_shutdown()
        return previous(signum, frame)

    handler._resumable_notice = True  # type: ignore[attr-defined]
    return handler


def _notice_after(
    previous: Callable[[int, FrameType | None], Any],
) -> Callable[[int, FrameType | None], Any]:
    def handler(signum: int, frame: FrameType | None) -> Any:
        result = previous(signum, frame)
        if _celery_stopping():
            request_shutdown()
        return result

    handler._resumable_notice = True  # type: ignore[attr-defined]
    return handler


def _celery_stopping() -> bool:
    """Whether Celery's signal handlers told this worker to stop (its own test of the flags)."""
    from celery.worker import state

    return any(
        flag is not None and flag is not False
        for flag in (state.should_stop, state.should_terminate)
    )
