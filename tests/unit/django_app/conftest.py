"""Django, configured once for these tests: one alias per database.

``default`` is a SQLite file, ``pg`` the PostgreSQL and ``mysql`` the MariaDB of
``tests.services`` (through PyMySQL, installed as MySQLdb for Django's backend). Django's
settings can be configured once per process, so every alias is there from the start;
the tests choose one through the ``alias`` fixture.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import pymysql
import pytest
import sqlalchemy as sa
from celery import Celery
from django.conf import settings
from django.db import connections

from celery_resumable.worker.notice import clear_shutdown
from tests.services import MYSQL_URL, POSTGRES_URL, require

_DIRECTORY = Path(tempfile.mkdtemp(prefix="resumable-django-"))
atexit.register(shutil.rmtree, _DIRECTORY, True)


def _database(url: str, engine: str) -> dict[str, Any]:
    parsed = sa.engine.make_url(url)
    return {
        "ENGINE": engine,
        "NAME": parsed.database,
        "USER": parsed.username or "",
        "PASSWORD": parsed.password or "",
        "HOST": parsed.host or "",
        "PORT": parsed.port or "",
    }


if not settings.configured:
    pymysql.install_as_MySQLdb()
    settings.configure(
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(_DIRECTORY / "default.sqlite3"),
            },
            "pg": _database(POSTGRES_URL, "django.db.backends.postgresql"),
            "mysql": _database(MYSQL_URL, "django.db.backends.mysql"),
        },
        INSTALLED_APPS=["celery_resumable.contrib.django", "tests.unit.django_app"],
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        LOGGING_CONFIG=None,
    )
    django.setup()

SERVICES = {"pg": "postgres", "mysql": "mysql"}


@pytest.fixture(
    params=[
        "default",
        pytest.param("pg", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def alias(request: pytest.FixtureRequest) -> str:
    """The alias of each database; the server ones skip (or fail in CI) when down."""
    if request.param in SERVICES:
        require(SERVICES[request.param])
    return str(request.param)


@pytest.fixture
def tables(alias: str) -> Iterator[None]:
    """The tables of the test models, on the alias under test."""
    from tests.unit.django_app.models import Event, Item

    with model_tables(alias, Item, Event):
        yield


@contextlib.contextmanager
def model_tables(alias: str, *models: Any) -> Iterator[None]:
    """The tables of ``models`` on ``alias``, made afresh and dropped afterwards."""
    connection = connections[alias]
    with connection.schema_editor() as editor:
        for model in models:
            name = connection.ops.quote_name(model._meta.db_table)
            editor.execute(f"DROP TABLE IF EXISTS {name}")
            editor.create_model(model)
    try:
        yield
    finally:
        with connection.schema_editor() as editor:
            for model in models:
                editor.delete_model(model)


@pytest.fixture
def django_app(alias: str, table_name: str) -> Iterator[Celery]:
    """A Celery app whose checkpoints live in the Django database under test."""
    with app_on(alias, table_name) as app:
        yield app


@contextlib.contextmanager
def app_on(alias: str, table_name: str) -> Iterator[Celery]:
    """A Celery app whose checkpoints live in table ``table_name`` of the Django ``alias``."""
    app = Celery("django-tests", broker="memory://", backend="cache+memory://")
    app.conf.update(
        resumable_store_url=f"django://{alias}",
        resumable_table_name=table_name,
        resumable_checkpoint_interval=None,
        task_store_eager_result=False,
    )
    try:
        yield app
    finally:
        clear_shutdown()
        app.close()
        drop(alias, table_name)


def drop(alias: str, table_name: str) -> None:
    """Drop ``table_name`` from the database of ``alias`` if it is there."""
    connection = connections[alias]
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {connection.ops.quote_name(table_name)}")


@pytest.fixture(scope="session", autouse=True)
def close_connections() -> Iterator[None]:
    """Close Django's connections after the tests, then remove the SQLite database."""
    yield
    connections.close_all()
    # Before the run looks for what it left in the temporary directory.
    shutil.rmtree(_DIRECTORY, ignore_errors=True)
