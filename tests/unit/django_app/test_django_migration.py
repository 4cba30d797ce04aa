"""The checkpoint table as a Django migration (the celery_resumable.contrib.django app)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery
from django.core.management import call_command
from django.db import connections, transaction
from django.test import override_settings

from celery_resumable import ResumableTask, checkpoint_store, set_step_cursor_tx, step_cursor
from celery_resumable.store.schema import table


@pytest.fixture
def migrations_table(alias: str) -> Iterator[None]:
    """Drop Django's migration records afterwards if this test made them."""
    connection = connections[alias]
    existed = "django_migrations" in connection.introspection.table_names()
    yield
    if not existed:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS django_migrations")


@pytest.mark.usefixtures("migrations_table")
def test_migrate_creates_the_table_the_store_uses_and_zero_drops_it(
    django_app: Celery, alias: str, table_name: str
) -> None:
    connection = connections[alias]
    django_app.conf.resumable_create_tables = False

    # Given the table created by `migrate`, named by the Django settings
    with override_settings(CELERY_RESUMABLE_TABLE_NAME=table_name):
        call_command("migrate", "celery_resumable", database=alias, verbosity=0)
    assert table_name in connection.introspection.table_names()
    store = checkpoint_store(django_app)
    columns = {column["name"] for column in sa.inspect(store.engine).get_columns(table_name)}
    assert columns == {column.name for column in table(table_name).c}

    # When a task that never creates tables checkpoints there
    @django_app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        def work(cursor: int | None) -> None:
            with transaction.atomic(using=alias):
                set_step_cursor_tx(connection, 3)

        step_cursor("work", work)

    result = job.apply()

    # Then it works, and migrating back to zero drops the table
    assert result.state == "SUCCESS"
    checkpoint = store.get(result.id)
    assert checkpoint is not None and checkpoint.status == "completed"
    with override_settings(CELERY_RESUMABLE_TABLE_NAME=table_name):
        call_command("migrate", "celery_resumable", "zero", database=alias, verbosity=0)
    assert table_name not in connection.introspection.table_names()


@pytest.mark.usefixtures("migrations_table")
def test_migrate_keeps_a_table_the_store_already_created(
    django_app: Celery, alias: str, table_name: str
) -> None:
    # Given a table the store created on first use, with a row in it
    store = checkpoint_store(django_app)
    store.claim("task-1", "job", "owner", 60.0)

    # When the project starts managing it with migrations
    with override_settings(CELERY_RESUMABLE_TABLE_NAME=table_name):
        call_command("migrate", "celery_resumable", database=alias, verbosity=0)

    # Then the table and its rows are kept
    checkpoint = store.get("task-1")
    assert checkpoint is not None and checkpoint.owner == "owner"
    with override_settings(CELERY_RESUMABLE_TABLE_NAME=table_name):
        call_command("migrate", "celery_resumable", "zero", database=alias, verbosity=0)
