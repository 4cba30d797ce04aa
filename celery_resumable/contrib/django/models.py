"""The checkpoint table as a Django model, for the admin page; the store manages the table."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

from celery_resumable.config import DEFAULTS

__all__ = ["Checkpoint", "StoredJSONField", "table_name"]


def table_name() -> str:
    """``CELERY_RESUMABLE_TABLE_NAME`` of the Django settings, else the default name."""
    default: str = DEFAULTS["resumable_table_name"]
    return str(getattr(settings, "CELERY_RESUMABLE_TABLE_NAME", default))


class StoredJSONField(models.JSONField):  # type: ignore[misc]
    """A JSON column as the store writes it.

    SQLite gives a column declared ``JSON`` numeric affinity, so a stored ``4`` comes
    back as the number, already decoded; PostgreSQL's ``jsonb`` and MySQL's ``JSON``
    come back as text, decoded here.
    """

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value is not None and not isinstance(value, str | bytes | bytearray):
            return value
        return super().from_db_value(value, expression, connection)


class Checkpoint(models.Model):  # type: ignore[misc]
    """One row of the checkpoint table: a task's finished steps, step in progress and lease.

    Unmanaged: the table is created by the store (or the app's first migration) and
    written only by the store. Read it, and act on it through the admin's actions,
    which go through the store and keep its rules.
    """

    task_id = models.CharField(max_length=255, primary_key=True)
    task_name = models.CharField(max_length=255)
    status = models.CharField(max_length=16)
    finished_steps = StoredJSONField(default=list)
    current_step = models.CharField(max_length=255, null=True, blank=True)
    cursor = StoredJSONField(null=True, blank=True)
    interruptions = models.IntegerField(default=0)
    owner = models.CharField(max_length=64, null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    request = models.TextField(null=True, blank=True)
    done = models.IntegerField(null=True, blank=True)
    total = models.IntegerField(null=True, blank=True)

    class Meta:
        managed = False
        db_table = table_name()
        app_label = "celery_resumable"
        ordering = ("-updated_at", "task_id")
        verbose_name = "checkpoint"
        verbose_name_plural = "checkpoints"

    def __str__(self) -> str:
        return f"{self.task_name} {self.task_id}"
