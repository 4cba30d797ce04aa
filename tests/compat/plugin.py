"""Pytest plugin: make ResumableTask the default task class of every Celery app.

Loaded with ``-p tests.compat.plugin`` into Celery's own unit tests by
``run_celery_suite.py``. Every ``Celery(...)`` created without a ``task_cls`` of its own
(argument or subclass attribute) gets ``task_cls="celery_resumable:ResumableTask"``, as a
user would pass it, so ``app.Task``, ``@app.task`` and ``shared_task`` tasks all derive
from ResumableTask. An app given its own ``task_cls`` keeps it.

Checkpoints go to a SQLite file in a temporary folder, set as ResumableTask's
``resumable_store_url`` task option rather than in ``app.conf``, so tests that inspect an
app's configuration see it unchanged. The file is emptied before each test: Celery's
tests share nothing between them, and neither should their checkpoints.

The plugin counts what it injected and fails the session when nothing was, so a run that
silently tested plain Celery cannot pass as a compatibility check.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

import celery_resumable
from celery_resumable import ResumableTask
from celery_resumable.testing import stop_lease_keeper

TASK_CLS = "celery_resumable:ResumableTask"

#: What the injection did, read by the outcome recorder (``outcomes.py``).
evidence: dict[str, Any] = {
    "apps_injected": 0,
    "apps_with_own_task_cls": 0,
    "tests_with_resumable_app": 0,
    "resumable_task_classes": 0,
    "resumable_runs": None,
    "checkpoint_rows_cleared": 0,
    "celery_resumable_file": celery_resumable.__file__,
}

_MISSING = object()
_STORE_FILE = "checkpoints.sqlite3"
_store_dir: Path | None = None
_undo: list[tuple[object, str, Any]] = []


def _patch(owner: object, name: str, value: Any) -> None:
    _undo.append((owner, name, vars(owner).get(name, _MISSING)))
    setattr(owner, name, value)


def _has_own_task_cls(app: Celery) -> bool:
    return any("task_cls" in vars(klass) for klass in type(app).__mro__ if klass is not Celery)


def _wrap_init(original: Any) -> Any:
    @functools.wraps(original)
    def init(self: Celery, *args: Any, task_cls: Any = None, **kwargs: Any) -> None:
        if task_cls is None and not _has_own_task_cls(self):
            task_cls = TASK_CLS
            evidence["apps_injected"] += 1
        else:
            evidence["apps_with_own_task_cls"] += 1
        original(self, *args, task_cls=task_cls, **kwargs)

    return init


# ResumableTask's own hook wraps each task class's body; counting must keep it.
_init_subclass = ResumableTask.__dict__["__init_subclass__"].__func__


def _count_task_classes(cls: type[ResumableTask], /, **kwargs: Any) -> None:
    evidence["resumable_task_classes"] += 1
    _init_subclass(cls, **kwargs)


def _count_runs() -> None:
    """Count the runs ResumableTask enters, where the internals allow it."""
    context = sys.modules.get("celery_resumable.run.context")
    enter = getattr(context, "enter", None)
    if context is None or not callable(enter):
        return
    evidence["resumable_runs"] = 0

    @functools.wraps(enter)
    def counting_enter(*args: Any, **kwargs: Any) -> Any:
        evidence["resumable_runs"] += 1
        return enter(*args, **kwargs)

    _patch(context, "enter", counting_enter)


def pytest_configure(config: pytest.Config) -> None:
    """Install the injection before Celery's conftest creates its first app."""
    global _store_dir
    _store_dir = Path(tempfile.mkdtemp(prefix="celery-resumable-compat-"))
    url = f"sqlite:///{_store_dir / _STORE_FILE}"
    evidence["store_url"] = url
    _patch(ResumableTask, "resumable_store_url", url)
    _patch(Celery, "__init__", _wrap_init(Celery.__init__))
    # Counting subclasses, not wrapping Celery's task factory: a wrapper's frame would
    # show in the stack that Celery's warnings point at.
    _patch(ResumableTask, "__init_subclass__", classmethod(_count_task_classes))
    _count_runs()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Start each test with no checkpoints."""
    if _store_dir is None or not (_store_dir / _STORE_FILE).exists():
        return
    with contextlib.closing(sqlite3.connect(_store_dir / _STORE_FILE, timeout=30)) as db:
        tables = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        for (table,) in tables:
            evidence["checkpoint_rows_cleared"] += db.execute(f'DELETE FROM "{table}"').rowcount
        db.commit()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """Count the tests whose Celery app fixture had ResumableTask as its task class."""
    try:
        return (yield)
    finally:
        app = getattr(item, "funcargs", {}).get("celery_app")
        if isinstance(app, Celery) and app.task_cls == TASK_CLS:
            evidence["tests_with_resumable_app"] += 1


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """End the lease keeper's idle thread, as the package's own pytest plugin does (the gate
    turns that plugin off in both runs) and as docs/testing.md tells suites that check for
    leftover threads."""
    stop_lease_keeper()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session when no app, test or task class used ResumableTask."""
    counts = ("apps_injected", "tests_with_resumable_app", "resumable_task_classes")
    if "resumable_runs" in evidence:
        counts = (*counts, "resumable_runs")
    if any(evidence[name] == 0 for name in counts):
        sys.stderr.write(f"\ncompat plugin: the injection took no effect: {evidence}\n")
        session.exitstatus = pytest.ExitCode.INTERNAL_ERROR


def pytest_report_header(config: pytest.Config) -> str:
    """Say in the header that this run is the injected one."""
    return f"celery-resumable compat: default task class {TASK_CLS} ({celery_resumable.__file__})"


def pytest_unconfigure(config: pytest.Config) -> None:
    """Undo the patches and remove the checkpoint folder."""
    while _undo:
        owner, name, value = _undo.pop()
        if value is _MISSING:
            delattr(owner, name)
        else:
            setattr(owner, name, value)
    if _store_dir is not None:
        shutil.rmtree(_store_dir, ignore_errors=True)
