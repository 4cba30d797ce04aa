"""The one place that hooks Celery: installed when a worker with a resumable task starts.

Importing the package changes nothing in Celery. Binding a ``ResumableTask`` to an app
(which Celery does when the app is finalized, in any process) only adds two bootsteps to
``app.steps``; they do nothing until a worker of that app builds its blueprints. The
worker's bootstep then, in the worker's process and before its pool starts:

- opens the shutdown notice and connects the receivers that keep it: the worker is
  stopping (``worker_shutting_down``), its signal handlers are in place
  (``worker_ready``), a pool process starts (``worker_process_init``) or ends
  (``worker_process_shutdown``), the worker has shut down (``worker_shutdown``);
- keeps the lease keeper's thread between runs, sizes the store's connection pools for
  the worker's concurrency, and logs the start-up warnings;
- only when ``worker_soft_shutdown_timeout`` is set, counts every task the worker runs
  (``task_prerun``/``task_postrun``), so that the soft shutdown ends once nothing runs.
  Resumable runs count themselves; other tasks cost nothing otherwise.

Forked pool processes inherit these receivers. A spawned pool process is a fresh
interpreter: it binds its tasks again, which connects them there (the worker names its
notice file in the environment of the processes it starts).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery import bootsteps
from celery import signals as celery_signals

from celery_resumable.store import engines
from celery_resumable.worker import notice
from celery_resumable.worker.lease_keeper import keeper
from celery_resumable.worker.startup import log_startup_warnings

__all__ = ["ResumableWorker", "WithdrawNotice", "install"]

logger = logging.getLogger("celery_resumable.worker")

_lock = threading.Lock()
_connected: set[str] = set()  # the groups of receivers connected in this process


def install(app: Any) -> None:
    """Give ``app``'s workers their resumable bootsteps; connect a spawned pool process.

    Called each time a ``ResumableTask`` is bound to ``app``; adding a step twice keeps one.
    """
    app.steps["worker"].add(ResumableWorker)
    app.steps["consumer"].add(WithdrawNotice)
    if os.environ.get(notice.NOTICE_FILE_ENV):
        # A process started by a running worker: a spawned pool process gets the
        # notice file and the lease keeper when its pool process signal comes.
        _connect_once("pool", _connect_pool_process)
        if app.conf.worker_soft_shutdown_timeout:
            _connect_once("count", _connect_task_counting)


class ResumableWorker(bootsteps.StartStopStep):  # type: ignore[misc]
    """Worker bootstep: prepares the worker's process, and sets the notice when it stops.

    Every stop of a worker, warm or cold (a signal, the remote-control ``shutdown``
    command, a SIGHUP restart, ``start_worker`` leaving its block), closes the worker's
    blueprint before stopping its steps; the pool then waits for tasks that already
    know to save and go back on the queue.
    """

    label = "resumable"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        _connect_once("worker", _connect_worker)
        _connect_once("pool", _connect_pool_process)
        _connect_once("fork", _connect_fork)
        if parent.app.conf.worker_soft_shutdown_timeout:
            _connect_once("count", _connect_task_counting)
        notice.worker_started(parent)
        engines.set_concurrency(parent.concurrency)
        keeper.stay(True)
        log_startup_warnings(parent.app)

    def close(self, parent: Any) -> None:
        """Set the shutdown notice."""
        notice.request_shutdown()


class WithdrawNotice(bootsteps.StartStopStep):  # type: ignore[misc]
    """Consumer bootstep: withdraws the notice once the worker and its pool have stopped."""

    label = "resumable notice withdrawal"

    def shutdown(self, parent: Any) -> None:
        """Withdraw the notice of the stopped worker; never fails the shutdown."""
        try:
            notice.worker_stopped(parent.controller)
        except Exception:
            logger.exception("could not withdraw the shutdown notice")


def _connect_once(group: str, connect: Any) -> None:
    with _lock:
        if group in _connected:
            return
        _connected.add(group)
    connect()


def _connect_worker() -> None:
    celery_signals.worker_shutting_down.connect(_on_shutting_down, weak=False)
    celery_signals.worker_ready.connect(_on_worker_ready, weak=False)
    celery_signals.worker_shutdown.connect(_on_worker_shutdown, weak=False)


def _connect_pool_process() -> None:
    celery_signals.worker_process_init.connect(_on_pool_process_init, weak=False)
    celery_signals.worker_process_shutdown.connect(_on_pool_process_shutdown, weak=False)


def _connect_fork() -> None:
    os.register_at_fork(after_in_child=notice.after_fork_in_child)


def _connect_task_counting() -> None:
    celery_signals.task_prerun.connect(_on_task_prerun, weak=False)
    celery_signals.task_postrun.connect(_on_task_postrun, weak=False)


def _on_shutting_down(**_: Any) -> None:
    notice.request_shutdown()


def _on_worker_ready(**_: Any) -> None:
    notice.wrap_signal_handlers()


def _on_worker_shutdown(sender: Any = None, **_: Any) -> None:
    notice.worker_stopped(sender)
    keeper.stay(False)


def _on_pool_process_init(**_: Any) -> None:
    notice.pool_process_started()
    keeper.stay(True)


def _on_pool_process_shutdown(**_: Any) -> None:
    keeper.stay(False)


def _counts_itself(task: Any) -> bool:
    return hasattr(type(task), "resumable_config")


def _on_task_prerun(sender: Any = None, **_: Any) -> None:
    if not _counts_itself(sender):
        notice.task_started()


def _on_task_postrun(sender: Any = None, **_: Any) -> None:
    if not _counts_itself(sender):
        notice.task_ended()
