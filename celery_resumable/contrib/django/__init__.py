"""celery-resumable for Django projects (the ``django`` extra).

Add ``"celery_resumable.contrib.django"`` to ``INSTALLED_APPS`` to create the checkpoint
table with ``manage.py migrate`` (its name is ``CELERY_RESUMABLE_TABLE_NAME`` when the
settings define it). ``keyset_queryset`` pages a ``QuerySet`` by key for ``iterate``.

This package holds the adapters the core finds by name once Django is in use:
``database`` (a ``django`` store URL), ``tx`` (the ``Transaction`` of a Django
connection) and ``keyset`` (the ``Pages`` of a ``QuerySet``). Importing this package
does not import Django.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery_resumable.contrib.django.keyset import keyset_queryset

__all__ = ["keyset_queryset"]


def __getattr__(name: str) -> Any:
    # keyset_queryset lives with the QuerySet adapter, which imports Django.
    if name == "keyset_queryset":
        return importlib.import_module(f"{__name__}.keyset").keyset_queryset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
