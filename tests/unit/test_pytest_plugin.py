"""The pytest plugin, used the way a user's test suite would use it.

Each test writes a small project (an app with its own production store setting and two
resumable tasks) and its tests into a pytester folder and runs pytest on them in a child
process, with ``filterwarnings = error``: the plugin's fixtures next to Celery's own
(``celery.contrib.pytest``: ``celery_app``, ``celery_worker``) and next to pytest-celery.
"""

from __future__ import annotations

import importlib.util
import os
from importlib import metadata
from pathlib import Path

import pytest

from tests.services import require_entry_point

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = "celery_resumable.pytest_plugin"

PROJECT = '''
"""A user's project: an app with its production store setting and two resumable tasks."""

from celery import Celery, shared_task

from celery_resumable import ResumableTask, iterate, step

app = Celery("proj", broker="memory://")
app.conf.resumable_store_url = "sqlite:///production-store.sqlite3"

DOWNLOADS = []
PROCESSED = []


def download(ids):
    DOWNLOADS.append(list(ids))
    return sorted(ids)


@app.task(base=ResumableTask, bind=True)
def import_users(self, ids):
    batch = step("download", download, ids)
    for user_id in iterate("process", batch):
        PROCESSED.append(user_id)
    return len(batch)


@shared_task(base=ResumableTask, bind=True)
def count_to(self, n):
    for number in iterate("count", range(n)):
        PROCESSED.append(number)
    return n
'''

CONFTEST = """
import pytest

import proj

{plugins}


@pytest.fixture(autouse=True)
def _clean():
    proj.DOWNLOADS.clear()
    proj.PROCESSED.clear()
"""

EAGER_TESTS = '''
"""Eager runs of the project's app."""

import pytest

import proj
from celery_resumable import CheckpointStore
from celery_resumable.pytest_plugin import ResumableInterrupt
from celery_resumable.testing import interrupt_at_cursor


@pytest.fixture
def resumable_app():
    return proj.app


def test_a_run_interrupted_after_a_step_resumes_without_it(
    resumable_store: CheckpointStore, resumable_interrupt: ResumableInterrupt
):
    resumable_interrupt.after_step("download")

    first = proj.import_users.apply(args=([3, 1, 2],))
    assert first.state == "IGNORED"
    assert [s.name for s in resumable_store.get(first.id).finished_steps] == ["download"]

    second = proj.import_users.apply(args=([3, 1, 2],), task_id=first.id)
    assert second.get() == 3
    assert proj.DOWNLOADS == [[3, 1, 2]]
    assert proj.PROCESSED == [1, 2, 3]
    assert resumable_store.get(first.id).status == "completed"


def test_interrupts_at_a_cursor_and_by_predicate(resumable_store, resumable_interrupt):
    resumable_interrupt.at_cursor("process", 2)
    resumable_interrupt.when(lambda run, boundary: boundary == "cursor" and run.in_progress[1] == 3)

    first = proj.import_users.apply(args=([1, 2, 3, 4],))
    assert resumable_store.get(first.id).cursor == 2
    second = proj.import_users.apply(args=([1, 2, 3, 4],), task_id=first.id)
    assert second.state == "IGNORED"
    assert resumable_store.get(first.id).cursor == 3
    assert resumable_store.get(first.id).interruptions == 2

    assert proj.import_users.apply(args=([1, 2, 3, 4],), task_id=first.id).get() == 4
    assert proj.PROCESSED == [1, 2, 3, 4]


def test_the_helpers_of_celery_resumable_testing_work_too(resumable_store):
    with interrupt_at_cursor("process", 1):
        first = proj.import_users.apply(args=([1, 2],))
    assert resumable_store.get(first.id).cursor == 1


def test_each_test_has_a_fresh_store(resumable_store, resumable_store_url, tmp_path):
    assert resumable_store.list() == []
    assert resumable_store.url == resumable_store_url
    assert str(tmp_path) in resumable_store_url


def test_the_app_has_its_own_store_back_after_a_test():
    assert proj.app.conf.resumable_store_url == "sqlite:///production-store.sqlite3"
'''

# celery.contrib.pytest's function-scoped app and in-process worker.
WORKER_TESTS = '''
"""Celery's own fixtures with the plugin's, in one test."""

import proj


def test_an_interrupted_task_resumes_on_the_worker(
    celery_app, celery_worker, resumable_app, resumable_store, resumable_interrupt
):
    assert resumable_app is celery_app
    resumable_interrupt.at_cursor("count", 3)

    result = proj.count_to.delay(5)

    assert result.get(timeout=30) == 5
    assert proj.PROCESSED == [0, 1, 2, 3, 4]
    checkpoint = resumable_store.get(result.id)
    assert checkpoint.status == "completed"
    assert checkpoint.interruptions == 1
'''

# pytest-celery's own celery_worker starts a container; Celery's session worker runs in
# this process, and pytest-celery's fixtures resolve next to the plugin's.
PYTEST_CELERY_TESTS = '''
"""pytest-celery, Celery's session worker and the plugin's fixtures, in one session."""

import pytest

import proj


@pytest.fixture
def resumable_app(celery_session_app):
    return celery_session_app


def test_pytest_celery_is_active(pytestconfig, celery_setup_name, resumable_store):
    assert pytestconfig.pluginmanager.has_plugin("celery")
    assert isinstance(celery_setup_name, str)
    assert resumable_store.list() == []


def test_an_interrupted_task_resumes_on_the_session_worker(
    celery_session_worker, resumable_store, resumable_interrupt
):
    resumable_interrupt.after_step("count")
    resumable_interrupt.at_cursor("count", 2)

    result = proj.count_to.delay(4)

    assert result.get(timeout=30) == 4
    assert proj.PROCESSED == [0, 1, 2, 3]
    assert resumable_store.get(result.id).interruptions == 2
'''


def plugin_args() -> list[str]:
    """Where the package is installed, the entry point loads the plugin; else ``-p``."""
    points = metadata.entry_points(group="pytest11", name=PLUGIN)
    return [] if any(point.value == PLUGIN for point in points) else ["-p", PLUGIN]


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester folder with the user's project, run against this checkout."""
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    monkeypatch.setenv("PYTHONPATH", python_path)
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    pytester.makepyfile(proj=PROJECT, test_eager=EAGER_TESTS)
    return pytester


def test_fixtures_with_celery_contrib_pytest(project: pytest.Pytester) -> None:
    # Given a user's tests of their own app and of Celery's test app and worker
    project.makeconftest(CONFTEST.format(plugins='pytest_plugins = ("celery.contrib.pytest",)'))
    project.makepyfile(test_worker=WORKER_TESTS)

    # When they run (pytest-celery, if installed, left out)
    result = project.runpytest_subprocess(*plugin_args(), "-p", "no:celery", timeout=240)

    # Then every test passed, and the app's production store was never touched
    result.assert_outcomes(passed=6)
    assert not (project.path / "production-store.sqlite3").exists()


def test_fixtures_with_pytest_celery(project: pytest.Pytester) -> None:
    if importlib.util.find_spec("pytest_celery") is None:
        pytest.skip("pytest-celery is not installed (pip install pytest-celery)")
    # Given a user's tests where pytest-celery brings Celery's fixtures (listing
    # celery.contrib.pytest in pytest_plugins as well would import it twice)
    project.makeconftest(CONFTEST.format(plugins=""))
    project.makepyfile(test_worker=PYTEST_CELERY_TESTS)

    # When they run with pytest-celery's plugin loaded
    result = project.runpytest_subprocess(*plugin_args(), timeout=240)

    # Then every test passed, and the app's production store was never touched
    result.assert_outcomes(passed=7)
    assert not (project.path / "production-store.sqlite3").exists()


def test_plugin_is_registered_for_pytest() -> None:
    require_entry_point("pytest11", PLUGIN, PLUGIN)
