"""celery-resumable for Django projects (the ``django`` extra).

Add ``"celery_resumable.contrib.django"`` to ``INSTALLED_APPS`` to create the checkpoint
table with ``manage.py migrate`` (its name is ``CELERY_RESUMABLE_TABLE_NAME`` when the
settings define it). ``keyset_queryset`` pages a ``QuerySet`` by key for ``iterate``.
Importing this package does not import Django.
"""

from __future__ import annotations

from celery_resumable.contrib.django.keyset import keyset_queryset

__all__ = ["keyset_queryset"]
