"""The plugin's store reaches Celery's own ``celery_app`` and ``celery_worker`` fixtures.

A user's suite that overrides ``resumable_app`` to return its project's app, with tests
of resumable tasks on Celery's test app next to it: those tasks checkpoint to the test's
store too, and nothing is written to the working directory.
"""

from __future__ import annotations

import os

import pytest

from tests.unit.test_pytest_plugin import CONFTEST, PROJECT, ROOT, plugin_args

CELERY_APP_TESTS = '''
"""Resumable tasks on Celery's test app, next to an overridden resumable_app."""

import pytest

import proj
from celery_resumable import ResumableTask, checkpoint_store, step


@pytest.fixture
def resumable_app():
    return proj.app


def test_a_task_on_the_worker_checkpoints_to_the_test_store(
    celery_app, celery_worker, resumable_store, resumable_store_url
):
    result = proj.count_to.delay(3)

    assert result.get(timeout=30) == 3
    assert resumable_store.get(result.id).status == "completed"
    assert checkpoint_store(celery_app).url == resumable_store_url


def test_an_eager_task_of_celery_app_without_the_store_fixture(celery_app, resumable_store_url):
    @celery_app.task(base=ResumableTask, bind=True, shared=False)
    def job(self):
        return step("one", lambda: 1)

    result = job.apply()

    assert result.get() == 1
    assert checkpoint_store(celery_app).get(result.id).status == "completed"
    assert checkpoint_store(celery_app).url == resumable_store_url


def test_a_worker_task_without_the_store_fixture(celery_app, celery_worker):
    assert proj.count_to.delay(2).get(timeout=30) == 2
'''


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester folder with the user's project of test_pytest_plugin, run against this
    checkout."""
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    monkeypatch.setenv("PYTHONPATH", python_path)
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    pytester.makepyfile(proj=PROJECT)
    return pytester


def test_celery_app_tasks_use_the_test_store(project: pytest.Pytester) -> None:
    # Given tests of resumable tasks on Celery's test app, next to an overridden resumable_app
    project.makeconftest(CONFTEST.format(plugins='pytest_plugins = ("celery.contrib.pytest",)'))
    project.makepyfile(test_celery_app=CELERY_APP_TESTS)

    # When they run
    result = project.runpytest_subprocess(*plugin_args(), "-p", "no:celery", timeout=240)

    # Then every test passed, and no store was made in the working directory
    result.assert_outcomes(passed=3)
    assert not (project.path / "celery_resumable.sqlite3").exists()
    assert not (project.path / "production-store.sqlite3").exists()
