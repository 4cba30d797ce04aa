"""The Django app that ships the checkpoint table as a migration."""

from __future__ import annotations

from django.apps import AppConfig


class CeleryResumableConfig(AppConfig):  # type: ignore[misc]
    """celery-resumable's app: its migration creates the checkpoint table."""

    name = "celery_resumable.contrib.django"
    label = "celery_resumable"
    verbose_name = "celery-resumable"
