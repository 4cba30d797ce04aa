"""pytest plugin: fixtures for testing resumable tasks in your own test suite.

Installed with the package (entry point ``pytest11``), so the fixtures are there in every
pytest run of a project that has celery-resumable installed; ``-p
no:celery_resumable.pytest_plugin`` turns it off, and ``-p celery_resumable.pytest_plugin``
(or ``pytest_plugins = ["celery_resumable.pytest_plugin"]``) turns it on where the
package is not installed. Every fixture name starts with ``resumable_``, so none clashes
with Celery's (``celery.contrib.pytest``) or pytest-celery's.

- ``resumable_store_url``: the checkpoint store of the test, a SQLite file in its
  ``tmp_path``. Override it to test against another database.
- ``resumable_app``: the Celery app whose tasks the test runs: the ``celery_app``
  fixture's app when the test uses it, else Celery's current app. Override it to return
  your project's app.
- ``resumable_store``: points ``resumable_app`` at ``resumable_store_url`` for the test
  and returns that store (a :class:`~celery_resumable.CheckpointStore`), empty; the
  app's own settings come back afterwards.
- ``resumable_celery_app_store`` (autouse): in a test that uses Celery's
  ``celery_app`` or ``celery_session_app``, points that app at ``resumable_store_url``
  too, so its resumable tasks use the test's store even when ``resumable_app`` returns
  another app or the test does not ask for ``resumable_store``.
- ``resumable_interrupt``: the interrupt helpers of :mod:`celery_resumable.testing`,
  armed until the end of the test (each fires once).

After each test, before its fixtures are torn down, the plugin ends the lease keeper's
idle thread (``celery_resumable.testing.stop_lease_keeper``), so that a suite checking for
leftover threads finds none after eager runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, current_app

from celery_resumable.config import forget_config
from celery_resumable.run.context import Boundary, Run
from celery_resumable.store.engines import dispose_engine
from celery_resumable.store.store import CheckpointStore, checkpoint_store
from celery_resumable.testing import (
    interrupt_after_step,
    interrupt_at_cursor,
    interrupt_when,
    stop_lease_keeper,
)
from celery_resumable.worker.notice import clear_shutdown

__all__ = [
    "ResumableInterrupt",
    "pytest_runtest_teardown",
    "resumable_app",
    "resumable_celery_app_store",
    "resumable_interrupt",
    "resumable_store",
    "resumable_store_url",
]

_MISSING = object()


@pytest.fixture
def resumable_store_url(tmp_path: Path) -> str:
    """The checkpoint store URL of this test: a SQLite file in its ``tmp_path``."""
    return f"sqlite:///{tmp_path / 'resumable-checkpoints.sqlite3'}"


@pytest.fixture
def resumable_app(request: pytest.FixtureRequest) -> Celery:
    """The Celery app whose resumable tasks the test runs.

    The ``celery_app`` fixture's app (``celery.contrib.pytest``) when the test uses it,
    else Celery's current app (the app created last, as a rule). Override this fixture
    to return your project's app when it has more than one.
    """
    if "celery_app" in request.fixturenames:
        app: Celery = request.getfixturevalue("celery_app")
        return app
    current: Celery = current_app._get_current_object()
    return current


@pytest.fixture
def resumable_store(resumable_app: Celery, resumable_store_url: str) -> Iterator[CheckpointStore]:
    """A fresh checkpoint store for this test, used by ``resumable_app``'s tasks.

    Sets ``resumable_store_url`` (and ``resumable_create_tables = True``, the database
    being new) on the app for the test, forgets the settings the app and its tasks read
    before, and withdraws a worker shutdown notice an earlier test may have left. After
    the test the app's own settings are back and the store's connections are closed. A
    task that sets ``resumable_store_url`` as its own attribute keeps its own store.
    """
    settings = {"resumable_store_url": resumable_store_url, "resumable_create_tables": True}
    with _settings(resumable_app, settings):
        clear_shutdown()
        try:
            yield checkpoint_store(resumable_app)
        finally:
            clear_shutdown()
            dispose_engine(resumable_store_url)


# Celery's own app fixtures (``celery.contrib.pytest``): the per-test store reaches them
# whether or not the test asks for ``resumable_store``, and whatever ``resumable_app`` is.
_CELERY_APP_FIXTURES = ("celery_app", "celery_session_app")


@pytest.fixture(autouse=True)
def resumable_celery_app_store(request: pytest.FixtureRequest) -> Iterator[None]:
    """Point Celery's ``celery_app`` (or ``celery_session_app``) at the test's store.

    Active only in tests that use one of these fixtures, so that their resumable tasks,
    eager or on the ``celery_worker``, never fall back to the default store in the working
    directory. The app's own settings come back after the test.
    """
    used = [name for name in _CELERY_APP_FIXTURES if name in request.fixturenames]
    if not used:
        yield
        return
    url: str = request.getfixturevalue("resumable_store_url")
    settings = {"resumable_store_url": url, "resumable_create_tables": True}
    with contextlib.ExitStack() as stack:
        for name in used:
            app: Celery = request.getfixturevalue(name)
            stack.enter_context(_settings(app, settings))
        try:
            yield
        finally:
            dispose_engine(url)


@contextlib.contextmanager
def _settings(app: Celery, settings: dict[str, Any]) -> Iterator[None]:
    """Change ``app.conf`` within the block; the cached settings are read again."""
    conf = app.conf
    previous = {name: conf.get(name, _MISSING) for name in settings}
    conf.update(settings)
    forget_config(app)
    try:
        yield
    finally:
        for name, value in previous.items():
            # Drop the change; set the value back when it came from the changes too.
            conf.pop(name, None)
            if value is not _MISSING and conf.get(name, _MISSING) != value:
                conf[name] = value
        forget_config(app)


class ResumableInterrupt:
    """Interrupts armed until the end of the test; each fires once.

    The same as the context managers of :mod:`celery_resumable.testing`, without the
    ``with`` block. They reach every resumable run in this process: an eager run
    (``apply()``) ends ``IGNORED`` with its checkpoint saved; a run in an in-process
    worker (the ``celery_worker`` fixture) goes back on its queue and resumes there.
    """

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self._stack = stack

    def after_step(self, name: str) -> None:
        """Interrupt the next run right after step ``name`` finishes."""
        self._stack.enter_context(interrupt_after_step(name))

    def at_cursor(self, name: str, when: int | Callable[[Any], bool]) -> None:
        """Interrupt step ``name`` at its ``when``-th cursor update, or where
        ``when(cursor)`` is true for the stored (JSON) cursor."""
        self._stack.enter_context(interrupt_at_cursor(name, when))

    def when(self, predicate: Callable[[Run, Boundary], bool]) -> None:
        """Interrupt at the first boundary where ``predicate(run, boundary)`` holds."""
        self._stack.enter_context(interrupt_when(predicate))


@pytest.fixture
def resumable_interrupt() -> Iterator[ResumableInterrupt]:
    """Arm interrupts of resumable runs for the rest of the test (see ResumableInterrupt)."""
    with contextlib.ExitStack() as stack:
        yield ResumableInterrupt(stack)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """End the lease keeper's idle thread before the test's fixtures are torn down."""
    stop_lease_keeper()
