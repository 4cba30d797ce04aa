"""Models of the Django tests: rows written in the caller's transaction, and keys to page.

``Number``, ``Pair`` and ``Nullable`` have the columns of the SQLAlchemy tables of
tests/unit/test_keyset.py, so that one suite pages both.
"""

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


class Number(models.Model):  # type: ignore[misc]
    """A row with the id it was given, and a value."""

    id = models.IntegerField(primary_key=True)
    value = models.CharField(max_length=20)

    class Meta:
        app_label = "django_app"
        db_table = "resumable_django_number"


class Pair(models.Model):  # type: ignore[misc]
    """A row with a composite key: a day and a name."""

    day = models.IntegerField()
    name = models.CharField(max_length=20)

    class Meta:
        app_label = "django_app"
        db_table = "resumable_django_pair"
        unique_together = (("day", "name"),)


class Nullable(models.Model):  # type: ignore[misc]
    """A row whose ``key`` and ``part`` may be NULL."""

    id = models.IntegerField(primary_key=True)
    key = models.IntegerField(null=True)
    part = models.IntegerField(null=True)

    class Meta:
        app_label = "django_app"
        db_table = "resumable_django_nullable"
