"""Create the checkpoint table (the one ``resumable_create_tables`` would create)."""

from __future__ import annotations

from typing import Any, ClassVar

from django.conf import settings
from django.db import migrations

from celery_resumable.config import DEFAULTS
from celery_resumable.contrib.django.database import create_table, drop_table


def table_name() -> str:
    """``CELERY_RESUMABLE_TABLE_NAME`` of the Django settings, else the default name."""
    default: str = DEFAULTS["resumable_table_name"]
    return str(getattr(settings, "CELERY_RESUMABLE_TABLE_NAME", default))


def create(apps: Any, schema_editor: Any) -> None:
    create_table(schema_editor, table_name())


def drop(apps: Any, schema_editor: Any) -> None:
    drop_table(schema_editor, table_name())


class Migration(migrations.Migration):  # type: ignore[misc]
    initial = True
    dependencies: ClassVar[list[tuple[str, str]]] = []
    # Not wrapped in a transaction of its own: MySQL/MariaDB cannot roll DDL back, and
    # Django refuses DDL inside one there (PostgreSQL and SQLite run the whole migration
    # in one anyway).
    operations: ClassVar[list[Any]] = [migrations.RunPython(create, drop, atomic=False)]
