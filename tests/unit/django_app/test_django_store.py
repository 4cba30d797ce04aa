"""resumable_store_url = "django": checkpoints in the Django project's own database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from django.db import connections

from celery_resumable import CheckpointStore, ResumableTask, checkpoint_store, iterate, step
from celery_resumable.contrib.django.database import sqlalchemy_url
from celery_resumable.errors import CheckpointStoreError
from celery_resumable.store.engines import safe_url, secrets_of
from celery_resumable.testing import interrupt_at_cursor
from tests.unit.django_app.conftest import drop

ROOT = Path(__file__).resolve().parents[3]


def test_a_task_checkpoints_in_the_django_database_and_resumes(
    django_app: Celery, alias: str
) -> None:
    done: list[int] = []

    @django_app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> int:
        total = step("count", lambda: 6)
        for item in iterate("items", range(total)):
            done.append(item)
        return total

    # Given a run stopped part-way, its checkpoint in the Django database
    with interrupt_at_cursor("items", 3):
        first = job.apply()
    assert first.state == "IGNORED"
    checkpoint = checkpoint_store(django_app).get(first.id)
    assert checkpoint is not None
    assert (checkpoint.status, checkpoint.current_step, checkpoint.cursor) == (
        "interrupted",
        "items",
        3,
    )
    table = django_app.conf.resumable_table_name
    assert table in connections[alias].introspection.table_names()

    # When it runs again, then it resumes after the saved cursor
    assert job.apply(task_id=first.id).state == "SUCCESS"
    assert done == [0, 1, 2, 3, 4, 5]


def test_plain_django_names_the_default_database(table_name: str) -> None:
    # Given the store URL "django"
    store = CheckpointStore("django", table_name)
    try:
        # When the store is used
        assert store.get("missing") is None

        # Then its table is in the database of the "default" alias
        assert table_name in connections["default"].introspection.table_names()
        assert store.engine.dialect.name == "sqlite"
    finally:
        drop("default", table_name)


def test_an_alias_missing_from_the_settings_is_a_clear_error(table_name: str) -> None:
    store = CheckpointStore("django://nowhere", table_name)

    with pytest.raises(CheckpointStoreError) as raised:
        store.get("some-task")

    assert str(raised.value) == (
        "resumable_store_url names the Django database 'nowhere', which "
        "settings.DATABASES does not define"
    )
    assert raised.value.transient is False


@pytest.mark.parametrize("url", ["django://", "django://a/b"])
def test_a_malformed_django_url_is_a_clear_error(url: str, table_name: str) -> None:
    with pytest.raises(CheckpointStoreError, match="use 'django' or 'django://ALIAS'"):
        CheckpointStore(url, table_name).get("some-task")


def test_postgresql_settings_become_the_same_database_and_driver() -> None:
    settings = {
        "NAME": "shop",
        "USER": "app",
        "PASSWORD": "s3cret",
        "HOST": "db.internal",
        "PORT": "6432",
        "OPTIONS": {
            "sslmode": "require",
            "options": "-c search_path=shop",
            "connect_timeout": 3,
            "isolation_level": 3,  # Django's own option
            "server_side_binding": True,  # Django's own option
            "pool": {"min_size": 2},  # Django's own option
        },
    }

    url = sqlalchemy_url(settings, "postgresql", "psycopg")

    assert url.render_as_string(hide_password=False) == (
        "postgresql+psycopg://app:s3cret@db.internal:6432/shop"
        "?connect_timeout=3&options=-c+search_path%3Dshop&sslmode=require"
    )
    assert sqlalchemy_url({"NAME": "x"}, "postgresql", "psycopg2").drivername == (
        "postgresql+psycopg2"
    )


def test_a_socket_directory_goes_in_the_query() -> None:
    url = sqlalchemy_url({"NAME": "shop", "HOST": "/run/postgresql"}, "postgresql", "psycopg")
    mysql = sqlalchemy_url({"NAME": "shop", "HOST": "/run/mysqld/mysqld.sock"}, "mysql", "pymysql")

    assert url.render_as_string() == "postgresql+psycopg:///shop?host=%2Frun%2Fpostgresql"
    assert mysql.render_as_string() == (
        "mysql+pymysql:///shop?unix_socket=%2Frun%2Fmysqld%2Fmysqld.sock"
    )


def test_mysql_settings_keep_the_driver_and_the_ssl_options() -> None:
    settings = {
        "NAME": "shop",
        "USER": "root",
        "PASSWORD": "",
        "HOST": "127.0.0.1",
        "PORT": 3306,
        "OPTIONS": {
            "charset": "utf8mb4",
            "ssl": {"ca": "/etc/ca.pem"},
            "isolation_level": "read committed",
        },
    }

    url = sqlalchemy_url(settings, "mysql", "pymysql")
    mysqlclient = sqlalchemy_url(settings, "mysql", "MySQLdb")

    assert url.render_as_string() == (
        "mysql+pymysql://root@127.0.0.1:3306/shop?charset=utf8mb4&ssl_ca=%2Fetc%2Fca.pem"
    )
    assert mysqlclient.drivername == "mysql+mysqldb"


def test_sqlite_settings_become_the_same_file(tmp_path: Any) -> None:
    url = sqlalchemy_url({"NAME": tmp_path / "db.sqlite3"}, "sqlite", "sqlite3.dbapi2")

    assert url.render_as_string() == f"sqlite+pysqlite:///{tmp_path / 'db.sqlite3'}"


@pytest.mark.parametrize("name", [":memory:", "file:memorydb_default?mode=memory&cache=shared"])
def test_an_in_memory_sqlite_database_is_refused(name: str) -> None:
    with pytest.raises(CheckpointStoreError, match="in-memory SQLite database"):
        sqlalchemy_url({"NAME": name}, "sqlite", "sqlite3.dbapi2")


def test_an_unsupported_backend_is_a_clear_error() -> None:
    with pytest.raises(CheckpointStoreError) as raised:
        sqlalchemy_url({"NAME": "x"}, "oracle", "oracledb", "legacy")

    assert str(raised.value) == (
        "the Django database 'legacy' uses the 'oracle' backend; the checkpoint store "
        "supports PostgreSQL, MySQL/MariaDB and SQLite"
    )


def test_the_django_password_is_a_secret_and_the_url_shows_none() -> None:
    settings = connections["pg"].settings_dict
    saved = settings["PASSWORD"]
    settings["PASSWORD"] = "hunter2"
    try:
        assert "hunter2" in secrets_of("django://pg")
    finally:
        settings["PASSWORD"] = saved
    assert safe_url("django://pg") == "django://pg"
    assert secrets_of("django://nowhere") == ()


WITHOUT_DJANGO = """
import sys

class WithoutDjango:
    def find_spec(self, name, path, target=None):
        if name == "django" or name.startswith("django."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, WithoutDjango())
from celery_resumable import CheckpointStore
from celery_resumable.errors import CheckpointStoreError

try:
    CheckpointStore("django", "ckpt_without_django").get("some-task")
except CheckpointStoreError as error:
    print(error, error.transient)
"""


def test_a_django_url_without_django_installed_says_what_to_install() -> None:
    # Given a process where Django cannot be imported
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_DJANGO], cwd=ROOT, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip

    # When a store on "django" is used, then it fails for good, naming the extra
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "task some-task: could not open the checkpoint store (resumable_store_url = 'django'): "
        'Django is not installed; pip install "celery-resumable[django]" False'
    )
