"""Models of the Django tests: rows written in the caller's transaction, and keys to page."""

from __future__ import annotations

from django.db import models


class Item(models.Model):  # type: ignore[misc]
    """A row a task writes or marks."""

    number = models.IntegerField(unique=True)
    marks = models.IntegerField(default=0)

    class Meta:
        app_label = "django_app"
        db_table = "resumable_django_item"


class Event(models.Model):  # type: ignore[misc]
    """A row with a composite key: its day and its number within the day."""

    day = models.DateField()
    seq = models.IntegerField()

    class Meta:
        app_label = "django_app"
        db_table = "resumable_django_event"
        unique_together = (("day", "seq"),)
