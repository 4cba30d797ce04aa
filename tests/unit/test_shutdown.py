"""The shutdown notice reaches a task in the process that runs it, forked or not."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from celery_resumable import _worker
from celery_resumable._worker import clear_shutdown, request_shutdown, shutdown_requested


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
        _worker._on_worker_ready()
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
    finally:
        signal.signal(signal.SIGINT, previous)

    # Then the notice was already set when the original handler ran
    assert seen == [True]


def test_worker_shutting_down_signal_sets_the_notice() -> None:
    from celery import signals

    signals.worker_shutting_down.send(sender="w1@host", sig="SIGTERM", how="Warm", exitcode=0)

    assert shutdown_requested()
