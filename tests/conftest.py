"""Fixtures shared by the unit and integration tests, and the tiers every test is in.

Each test gets one tier marker (declared in pyproject.toml): ``faults`` for tests/faults,
``integration`` for tests/integration and for any other test that carries a service's
marker (``postgres``, ``mysql``, ``redis``, ``rabbitmq``: the database parameters of
tests/unit), ``unit`` for the rest, which need no server: ``pytest -m unit``.
"""

from __future__ import annotations

import multiprocessing.util
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from celery_resumable import CheckpointStore
from tests import services
from tests.services import MYSQL_URL, POSTGRES_URL, SERVICES, require

# For tests/unit/test_pytest_plugin.py, which runs pytest on a user's tests.
pytest_plugins = ["pytester"]

# Names of what the tests and the processes they start make in a temporary directory:
# shutdown notice files, the run's own folder and other folders of the tests, and the
# folders of multiprocessing and billiard (prefork pools).
OWN_TEMPORARY_NAMES = ("celery-resumable-", "resumable-", "pymp-")
RUN_FOLDER_PREFIX = "celery-resumable-tests-"
# What the run left in the real temporary directory, for pytest_sessionfinish.
_left_behind: list[str] = []

TESTS = Path(__file__).resolve().parent
# The tier of the tests of a directory of tests/, where it is not "unit".
TIER_OF_DIRECTORY = {"integration": "integration", "faults": "faults"}
# Service markers of modules that do not declare them themselves (path under tests/).
MODULE_SERVICES = {"integration/test_in_process_worker.py": ("redis",)}


@pytest.fixture(scope="session", autouse=True)
def run_temporary_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A temporary directory of the run, for it and every process it starts.

    ``TMPDIR`` and ``tempfile.tempdir`` point at a new folder while the tests run, so the
    files that a killed worker cannot remove (its shutdown notice, the ``pymp-*`` folders
    of its pool) go with the run. pytest's own ``tmp_path`` folders stay where pytest
    keeps them. What the run still left in the real temporary directory is reported at
    the end (and fails the run under CI=true).
    """
    tmp_path_factory.getbasetemp()  # settled before the switch: pytest keeps its folders
    real = tempfile.gettempdir()
    before = set(os.listdir(real))
    directory = Path(tempfile.mkdtemp(prefix=RUN_FOLDER_PREFIX))
    saved = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = tempfile.tempdir = str(directory)
    try:
        yield directory
    finally:
        if saved[0] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[0]
        tempfile.tempdir = saved[1]
        # multiprocessing removes the folder it may have made in there at exit (exit
        # priority -100); the run's folder is removed after it.
        multiprocessing.util.Finalize(
            None, shutil.rmtree, args=(str(directory),), kwargs={"ignore_errors": True},
            exitpriority=-200,
        )  # fmt: skip
        _left_behind[:] = sorted(
            name
            for name in set(os.listdir(real)) - before
            if name.startswith(OWN_TEMPORARY_NAMES) and not name.startswith(RUN_FOLDER_PREFIX)
        )


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Under CI=true, a run that left something in the real temporary directory fails."""
    ci = os.environ.get("CI") == "true"
    if _left_behind and ci and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Name what the run left in the real temporary directory."""
    if _left_behind:
        terminalreporter.section("temporary files left behind", sep="-", red=True)
        terminalreporter.line(
            f"{len(_left_behind)} in {tempfile.gettempdir()}: {', '.join(_left_behind)} "
            "(or another test run on this machine made them at the same time)",
            red=True,
        )


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of each supported database; the server ones skip (or fail in CI) when down.

    The server cases are marked ``postgres`` and ``mysql``, which puts them in the
    integration tier: the SQLite case stays in the unit tier (``pytest -m unit``).
    """
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'checkpoints.sqlite3'}"
    require(request.param)
    return POSTGRES_URL if request.param == "postgres" else MYSQL_URL


@pytest.fixture
def table_name() -> str:
    """A checkpoint table name of this test alone."""
    return f"ckpt_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(store_url: str, table_name: str) -> Iterator[CheckpointStore]:
    """A checkpoint store on each database, its table dropped after the test."""
    checkpoint_store = CheckpointStore(store_url, table_name)
    yield checkpoint_store
    drop_table(store_url, table_name)


def drop_table(url: str, table_name: str) -> None:
    """Drop ``table_name`` if it exists."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP TABLE IF EXISTS {table_name}"))
    finally:
        engine.dispose()


@pytest.fixture
def unique_id() -> Callable[[], str]:
    """Make task ids unique to the test."""
    return lambda: str(uuid.uuid4())


def _under_tests(item: pytest.Item) -> str:
    """The path of ``item``'s file under tests/ ("" for a file elsewhere)."""
    path = Path(item.path).resolve()
    return path.relative_to(TESTS).as_posix() if path.is_relative_to(TESTS) else ""


def tier_of(item: pytest.Item) -> str:
    """The tier of ``item``: by its directory, else integration when it needs a server."""
    tier = TIER_OF_DIRECTORY.get(_under_tests(item).partition("/")[0])
    if tier is not None:
        return tier
    if any(item.get_closest_marker(service) for service in SERVICES):
        return "integration"
    return "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with its tier; run the fast unit tests first."""
    for item in items:
        for service in MODULE_SERVICES.get(_under_tests(item), ()):
            item.add_marker(service)
        item.add_marker(tier_of(item))
    items.sort(key=lambda item: _under_tests(item).startswith("integration/"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """Let ``require`` check the markers of the test that runs."""
    services.running_test = item
    try:
        return (yield)
    finally:
        services.running_test = None
