"""What a user reads when ``resumable_store_url`` cannot work: what is wrong, what to do."""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery

from celery_resumable import ResumableTask, checkpoint_store, step
from celery_resumable.errors import CheckpointStoreError, StepMismatchError
from tests.services import MYSQL_URL, POSTGRES_URL, address, require

SECRET = "s3cr3t-pw"


def _app(url: str) -> Celery:
    app = Celery(f"errors_{uuid.uuid4().hex[:6]}", broker="memory://", backend="cache+memory://")
    app.conf.update(resumable_store_url=url, task_store_eager_result=False)
    return app


def _store_error(url: str) -> CheckpointStoreError:
    """The error ``checkpoint_store(app).get()`` raises for ``url``."""
    with pytest.raises(CheckpointStoreError) as raised:
        checkpoint_store(_app(url)).get("x")
    return raised.value


def _task_failure(url: str) -> str:
    """The message a task run with ``url`` as its store fails with (its body never runs)."""
    app = _app(url)
    calls: list[int] = []

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> int:
        calls.append(1)
        return step("one", lambda: 1)

    result = job.apply()
    assert result.state == "FAILURE"
    assert isinstance(result.result, CheckpointStoreError)
    assert calls == []
    return str(result.result)


def _both(url: str) -> list[str]:
    """The messages of both ways a user meets the store: a task run, and the Python API."""
    return [_task_failure(url), str(_store_error(url))]


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.mark.parametrize(
    ("url", "module", "extra", "form"),
    [
        (
            f"postgresql+psycopg2://app:{SECRET}@127.0.0.1/test",
            "psycopg2",
            'pip install "celery-resumable[postgres]"',
            "postgresql+psycopg://user:password@host/db",
        ),
        (
            f"mysql+mysqldb://app:{SECRET}@127.0.0.1/test",
            "MySQLdb",
            'pip install "celery-resumable[mysql]"',
            "mysql+pymysql://user:password@host/db",
        ),
    ],
)
def test_a_missing_driver_names_the_extra_to_install(
    url: str, module: str, extra: str, form: str
) -> None:
    # Given a store URL whose driver is not installed
    if _installed(module):
        pytest.skip(f"{module} is installed here")

    for message in _both(url):
        # Then the message names the setting, the missing driver and what to do
        assert "resumable_store_url" in message
        assert "app:***@127.0.0.1/test" in message
        assert SECRET not in message
        assert f"driver {module!r} is not installed" in message
        assert extra in message
        assert form in message
        assert "could not create the table" not in message


def test_the_postgres_scheme_says_which_url_form_to_use() -> None:
    for message in _both(f"postgres://app:{SECRET}@127.0.0.1/test"):
        assert "resumable_store_url" in message
        assert "postgres://app:***@127.0.0.1/test" in message
        assert SECRET not in message
        assert "SQLAlchemy does not know the database 'postgres'" in message
        assert "postgresql+psycopg://user:password@host/db" in message
        assert 'pip install "celery-resumable[postgres]"' in message
        assert "could not create the table" not in message


def test_a_url_that_is_no_url_says_which_forms_to_use() -> None:
    for message in _both("not a url"):
        assert "resumable_store_url = 'not a url' is not a database URL" in message
        assert "postgresql+psycopg://user:password@host/db" in message
        assert "mysql+pymysql://user:password@host/db" in message
        assert "sqlite:///path" in message
        assert "could not create the table" not in message


def test_an_unparsable_url_never_shows_its_password() -> None:
    message = str(_store_error(f"postgresql+psycopg://app:{SECRET}@127.0.0.1:notaport/test"))

    assert SECRET not in message
    assert "resumable_store_url" in message


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(f"postgresql+psycopg://app:{SECRET}@127.0.0.1:9/test", id="postgres"),
        pytest.param(f"mysql+pymysql://app:{SECRET}@127.0.0.1:9/test", id="mysql"),
    ],
)
def test_a_refused_connection_asks_whether_the_server_runs(url: str) -> None:
    error = _store_error(url)
    assert error.transient is True

    for message in [str(error), _task_failure(url)]:
        assert "could not connect to the checkpoint store" in message
        assert "resumable_store_url" in message
        assert "app:***@127.0.0.1:9/test" in message
        assert SECRET not in message
        assert "the server at 127.0.0.1:9 refused the connection: is it running?" in message
        assert "could not create the table" not in message


# -- faults that retrying cannot fix, on the real servers ---------------------------------


@pytest.fixture
def postgres() -> str:
    require("postgres")
    return POSTGRES_URL


@pytest.fixture
def mysql() -> str:
    require("mysql")
    return MYSQL_URL


def _with(url: str, **parts: Any) -> str:
    return sa.engine.make_url(url).set(**parts).render_as_string(hide_password=False)


def _server(service: str) -> str:
    """How the messages name the server of ``service``: ``host:port``."""
    host, port = address(service)
    return f"{host}:{port}"


@pytest.mark.postgres
def test_a_missing_postgres_database_is_permanent(postgres: str) -> None:
    error = _store_error(_with(postgres, database="nosuchdb"))

    assert error.transient is False
    server = _server("postgres")
    assert f"the database 'nosuchdb' does not exist on the server at {server}" in str(error)
    assert "resumable_store_url" in str(error)


@pytest.mark.postgres
def test_a_missing_postgres_role_is_permanent(postgres: str) -> None:
    error = _store_error(_with(postgres, username="nosuchuser"))

    assert error.transient is False
    assert f"the server at {_server('postgres')} refused the user 'nosuchuser'" in str(error)
    assert "resumable_store_url" in str(error)


@pytest.mark.postgres
def test_a_wrong_postgres_password_is_permanent(postgres: str) -> None:
    # Given a role that must log in with a password (trust lets every existing role in
    # on this machine; a missing role is refused the same way as a wrong password)
    error = _store_error(_with(postgres, username="nosuchuser", password=SECRET))

    assert error.transient is False
    assert SECRET not in str(error)


@pytest.mark.mysql
def test_a_missing_mysql_database_is_permanent(mysql: str) -> None:
    error = _store_error(_with(mysql, database="nosuchdb"))

    assert error.transient is False
    server = _server("mysql")
    assert f"the database 'nosuchdb' does not exist on the server at {server}" in str(error)


@pytest.fixture
def mysql_user(mysql: str) -> Iterator[str]:
    """A MariaDB user that exists, with a password of its own; dropped after the test."""
    name = f"ck_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(mysql)
    with engine.begin() as connection:
        connection.execute(sa.text(f"CREATE USER '{name}'@'%' IDENTIFIED BY 'right-password'"))
    try:
        yield name
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP USER IF EXISTS '{name}'@'%'"))
        engine.dispose()


@pytest.mark.mysql
def test_a_wrong_mysql_password_is_permanent(mysql: str, mysql_user: str) -> None:
    error = _store_error(_with(mysql, username=mysql_user, password=SECRET))

    assert error.transient is False
    assert f"the server at {_server('mysql')} refused the user {mysql_user!r}" in str(error)
    assert SECRET not in str(error)
    assert "resumable_store_url" in str(error)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("postgresql+psycopg://app@no-such-host.invalid/test", id="postgres"),
        pytest.param("mysql+pymysql://app@no-such-host.invalid/test", id="mysql"),
    ],
)
def test_an_unknown_host_is_permanent(url: str) -> None:
    error = _store_error(url)

    assert error.transient is False
    assert "the host 'no-such-host.invalid' is not known" in str(error)
    assert "resumable_store_url" in str(error)


# -- a step mismatch ----------------------------------------------------------------------


def test_a_step_mismatch_names_the_commands_that_get_the_task_going() -> None:
    message = str(StepMismatchError("abc-123", "download", "fetch"))

    assert "'download'" in message
    assert "'fetch'" in message
    assert "celery -A <your app> resumable reset abc-123" in message
    assert "celery -A <your app> resumable retry abc-123" in message
