"""Keyset pagination of a Django ``QuerySet``, as a cursor source for ``iterate``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .errors import CursorDecodeError

__all__ = ["is_queryset", "keyset_queryset"]

KeysetSource = Callable[[Any], Iterator[tuple[Any, Any]]]


def is_queryset(query: object) -> bool:
    """Whether ``query`` is a Django ``QuerySet`` (never imports Django to find out)."""
    if "django.db.models" not in sys.modules:
        return False
    from django.db.models import QuerySet

    return isinstance(query, QuerySet)


def keyset_queryset(
    queryset: Any,
    *,
    key: str | Sequence[str] = "id",
    batch_size: int = 500,
    connection: Any = None,
) -> KeysetSource:
    """A cursor source for ``iterate`` that pages ``queryset`` by ``key``, one query per batch.

    ``key`` is a field name (``"id"``, ``"pk"``, a foreign key, an annotation) or a tuple
    of them, unique together and never NULL; ``"-name"`` pages that field in descending
    order. The rows come ordered by the key (the queryset's own ordering is replaced);
    each item is a ``(cursor, row)`` pair whose cursor is the row's key: its value for
    one field, a tuple for several. A resumed loop continues after the last key it
    finished. ``connection`` (a Django connection or an alias) runs the queries on that
    database instead of the queryset's own.

    Raises TypeError for something else than a QuerySet, ValueError for a sliced
    queryset, an empty key or a batch size below 1, and CursorDecodeError when a saved
    cursor does not fit the key.
    """
    from django.core.exceptions import FieldDoesNotExist
    from django.db.models import QuerySet

    if not isinstance(queryset, QuerySet):
        raise TypeError(f"expected a Django QuerySet, not {type(queryset).__qualname__}")
    if queryset.query.is_sliced:
        raise ValueError("cannot page a sliced QuerySet by key; slice each batch instead")
    names = (key,) if isinstance(key, str) else tuple(key)
    if not names or not all(isinstance(name, str) and name.lstrip("-") for name in names):
        raise ValueError(f"key must be a field name or a tuple of field names, not {key!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number above zero, not {batch_size!r}")
    if connection is not None:
        queryset = queryset.using(connection if isinstance(connection, str) else connection.alias)

    meta = queryset.model._meta
    fields: list[tuple[str, bool]] = []
    for name in names:
        descending = name.startswith("-")
        field = name.lstrip("-")
        if field == "pk":
            field = meta.pk.attname
        elif field not in queryset.query.annotations:
            try:
                field = meta.get_field(field).attname  # a foreign key pages by its column
            except FieldDoesNotExist:
                raise ValueError(
                    f"key {name!r} is neither a field of {meta.label} nor an annotation "
                    "of the queryset"
                ) from None
        fields.append((field, descending))
    ordered = queryset.order_by(*[f"-{field}" if desc else field for field, desc in fields])
    single = len(fields) == 1

    def source(cursor: Any) -> Iterator[tuple[Any, Any]]:
        last = None if cursor is None else _key(cursor, len(fields))
        while True:
            page = ordered if last is None else ordered.filter(_after(fields, last))
            batch = list(page[:batch_size])
            for row in batch:
                last = tuple(_value(row, field) for field, _ in fields)
                yield (last[0] if single else last), row
            if len(batch) < batch_size:
                return

    return source


def _key(cursor: Any, size: int) -> tuple[Any, ...]:
    if size == 1:
        return (cursor,)
    if not isinstance(cursor, list | tuple) or len(cursor) != size:
        raise CursorDecodeError(
            f"cannot read the saved cursor {cursor!r} back as a key of {size} fields"
        )
    return tuple(cursor)


def _value(row: Any, field: str) -> Any:
    return row[field] if isinstance(row, dict) else getattr(row, field)


def _after(fields: list[tuple[str, bool]], last: tuple[Any, ...]) -> Any:
    """Rows after ``last`` in key order: (a > x) OR (a = x AND b > y) OR ..."""
    from django.db.models import Q

    after = Q()
    for position, (field, descending) in enumerate(fields):
        equal = {name: value for (name, _), value in zip(fields[:position], last, strict=False)}
        beyond = {f"{field}__{'lt' if descending else 'gt'}": last[position]}
        after |= Q(**equal, **beyond)
    return after
