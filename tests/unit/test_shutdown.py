"""The shutdown notice reaches a task in the process that runs it, forked or not."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.worker import state

from celery_resumable import ResumableTask
from celery_resumable.worker import install
from celery_resumable.worker import notice as _worker
from celery_resumable.worker.notice import clear_shutdown, request_shutdown, shutdown_requested


@pytest.fixture(autouse=True)
def no_notice() -> Iterator[None]:
    clear_shutdown()
    yield
    clear_shutdown()


def wait_for_notice(flag: Any) -> None:
    deadline = time.monotonic() + 10
    while not shutdown_requested():
        if time.monotonic() > deadline:
            return
        time.sleep(0.01)
    flag.value = 1


def test_a_forked_child_sees_the_notice_set_by_its_parent() -> None:
    # Given a child forked before the notice, as a prefork pool process is
    context = multiprocessing.get_context("fork")
    flag = context.Value("i", 0)
    child = context.Process(target=wait_for_notice, args=(flag,))
    child.start()

    # When the parent process sets the notice
    time.sleep(0.1)
    request_shutdown()
    child.join(15)

    # Then the child saw it
    assert flag.value == 1


def test_signal_handlers_set_the_notice_before_celerys_own_handler() -> None:
    # Given a handler installed for SIGINT, as Celery installs its shutdown handlers
    seen: list[bool] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(shutdown_requested()))
    try:
        # When the worker is ready and the signal arrives
        _worker.wrap_signal_handlers()
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
    finally:
        signal.signal(signal.SIGINT, previous)

    # Then the notice was already set when the original handler ran
    assert seen == [True]


class StartingWorker:
    """The parts of a WorkController that the resumable bootstep reads."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.concurrency = 1


# The bootstep reads the app's tasks, which finalizes it: every shared task defined so
# far in the session (several under the same names) is registered then.
@pytest.mark.filterwarnings("ignore::celery.exceptions.DuplicateTaskNameWarning")
def test_worker_shutting_down_signal_sets_the_notice(app: Celery) -> None:
    from celery import signals

    # Given the resumable bootstep of a worker starting in this process
    worker = StartingWorker(app)
    install.ResumableWorker(worker)
    try:
        # When Celery announces the worker's shutdown
        signals.worker_shutting_down.send(sender="w1@host", sig="SIGTERM", how="Warm", exitcode=0)

        # Then the notice is set
        assert shutdown_requested()
    finally:
        signals.worker_shutdown.send(sender=worker)


class FakeWorker:
    """Stands for a WorkController in the notice's bookkeeping (no app, no bootsteps)."""


def wait_for_notice_in_pool_process(flag: Any) -> None:
    _worker.pool_process_started()
    wait_for_notice(flag)


def test_a_spawned_pool_process_sees_the_notice_of_its_worker() -> None:
    # Given a worker started in this process, and a pool process spawned afresh
    worker = FakeWorker()
    _worker.worker_started(worker)
    try:
        path = os.environ[_worker.NOTICE_FILE_ENV]
        context = multiprocessing.get_context("spawn")
        flag = context.Value("i", 0)
        child = context.Process(target=wait_for_notice_in_pool_process, args=(flag,))
        child.start()

        # When the worker sets the notice
        time.sleep(0.5)
        request_shutdown()
        child.join(30)
    finally:
        _worker.worker_stopped(worker)

    # Then the spawned process saw it; once the worker stopped, the notice and its file are gone
    assert flag.value == 1
    assert not shutdown_requested()
    assert not os.path.exists(path)
    assert _worker.NOTICE_FILE_ENV not in os.environ


def test_sighup_sets_the_notice_only_when_celerys_handler_starts_a_stop() -> None:
    # Given Celery's restart handler (it sets should_stop) and the warning one of
    # platforms that cannot restart (it does nothing)
    def restart(signum: int, frame: Any) -> None:
        state.should_stop = 0

    def warn_only(signum: int, frame: Any) -> None:
        pass

    seen: list[bool] = []
    watched = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)
    previous = {signum: signal.getsignal(signum) for signum in watched}
    try:
        for handler in (warn_only, restart):
            signal.signal(signal.SIGHUP, handler)
            _worker.wrap_signal_handlers()

            # When SIGHUP arrives
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.05)
            seen.append(shutdown_requested())
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        state.should_stop = None

    # Then only the handler that started a stop set the notice
    assert seen == [False, True]


def doubled_with_a_request(app: Celery, value: int) -> int:
    """Call a task that doubles ``value`` with a request, as a worker calls it."""

    @app.task(base=ResumableTask, bind=True, shared=False)
    def job(self: Any, value: int) -> int:
        return value * 2

    job.push_request(id=str(uuid.uuid4()), args=(value,), kwargs={}, called_directly=False)
    try:
        return int(job(value))
    finally:
        job.pop_request()


def test_a_notice_without_a_running_worker_does_not_requeue_a_delivery(app: Celery) -> None:
    # Given the notice set in a process where no worker runs (a test sending the signal)
    request_shutdown()

    # When the task is called with a request, as a worker calls it
    result = doubled_with_a_request(app, 21)

    # Then it ran instead of going back on a queue
    assert result == 42


def test_a_solo_worker_leaves_no_pool_process_behind(app: Celery) -> None:
    # Given a worker whose solo pool announced its "pool process" in the worker's own
    # process, as Celery's solo pool does, and which has stopped since
    worker = FakeWorker()
    _worker.worker_started(worker)
    _worker.pool_process_started()
    _worker.worker_stopped(worker)

    # When a stop is noticed in the process and a task is called with a request
    request_shutdown()
    try:
        result = doubled_with_a_request(app, 21)
    finally:
        clear_shutdown()

    # Then it ran instead of going back on a queue: no worker of this process stops
    assert result == 42
