"""The checkpoint model of the admin page: unmanaged, so this migration changes no table."""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import migrations, models

from celery_resumable.contrib.django.models import StoredJSONField, table_name


class Migration(migrations.Migration):  # type: ignore[misc]
    dependencies: ClassVar[list[tuple[str, str]]] = [("celery_resumable", "0001_initial")]
    operations: ClassVar[list[Any]] = [
        migrations.CreateModel(
            name="Checkpoint",
            fields=[
                ("task_id", models.CharField(max_length=255, primary_key=True, serialize=False)),
                ("task_name", models.CharField(max_length=255)),
                ("status", models.CharField(max_length=16)),
                ("finished_steps", StoredJSONField(default=list)),
                ("current_step", models.CharField(blank=True, max_length=255, null=True)),
                ("cursor", StoredJSONField(blank=True, null=True)),
                ("interruptions", models.IntegerField(default=0)),
                ("owner", models.CharField(blank=True, max_length=64, null=True)),
                ("lease_expires_at", models.DateTimeField(blank=True, null=True)),
                ("created_at", models.DateTimeField()),
                ("updated_at", models.DateTimeField()),
                ("request", models.TextField(blank=True, null=True)),
                ("done", models.IntegerField(blank=True, null=True)),
                ("total", models.IntegerField(blank=True, null=True)),
            ],
            options={
                "verbose_name": "checkpoint",
                "verbose_name_plural": "checkpoints",
                "db_table": table_name(),
                "ordering": ("-updated_at", "task_id"),
                "managed": False,
            },
        ),
    ]
