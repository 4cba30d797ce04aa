"""An order the task marks: ``marks`` counts how many times (1 when exactly once)."""

from __future__ import annotations

from django.db import models


class Order(models.Model):
    """One order."""

    number = models.IntegerField(unique=True)
    marks = models.IntegerField(default=0)
    marked_by = models.IntegerField(null=True)  # the id of the process that marked it

    def __str__(self) -> str:
        return f"order {self.number}"
