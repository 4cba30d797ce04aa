"""Keyset pagination of a Django ``QuerySet``, as a cursor source for ``iterate``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from celery_resumable.errors import CursorDecodeError

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
    one field, a tuple for several. A row is what the queryset yields: a model instance,
    or for ``values()`` / ``values_list()`` a dict, tuple, named tuple or single value,
    which must then hold the key's fields. A resumed loop continues after the last key
    it finished. ``connection`` (a Django connection or an alias) runs the queries on
    that database instead of the queryset's own.

    Each pass (a fresh start or a resume) first runs one query that looks for a row
    whose key (or a part of it) is NULL, and raises ValueError if there is one, before
    any row is yielded.

    Raises TypeError for something else than a QuerySet or a batch size that is not an
    int; ValueError for a sliced queryset, an empty key, a batch size below 1 or a
    ``values()`` / ``values_list()`` queryset without the key's fields; and
    CursorDecodeError when a saved cursor does not fit the key.
    """
    from django.core.exceptions import FieldDoesNotExist
    from django.db.models import Q, QuerySet

    from celery_resumable._key_checks import check_batch_size, null_key_error

    if not isinstance(queryset, QuerySet):
        raise TypeError(f"expected a Django QuerySet, not {type(queryset).__qualname__}")
    if queryset.query.is_sliced:
        raise ValueError("cannot page a sliced QuerySet by key; slice each batch instead")
    names = (key,) if isinstance(key, str) else tuple(key)
    if not names or not all(isinstance(name, str) and name.lstrip("-") for name in names):
        raise ValueError(f"key must be a field name or a tuple of field names, not {key!r}")
    check_batch_size(batch_size)
    if connection is not None:
        queryset = queryset.using(connection if isinstance(connection, str) else connection.alias)

    meta = queryset.model._meta
    fields: list[tuple[str, bool]] = []
    row_names: list[list[str]] = []  # for each key field, the names a values() row may use
    for name in names:
        descending = name.startswith("-")
        field = name.lstrip("-")
        if field == "pk":
            field = meta.pk.attname
            row_names.append(["pk", field, meta.pk.name])
        elif field in queryset.query.annotations:
            row_names.append([field])
        else:
            try:
                model_field = meta.get_field(field)
            except FieldDoesNotExist:
                raise ValueError(
                    f"key {name!r} is neither a field of {meta.label} nor an annotation "
                    "of the queryset"
                ) from None
            field = model_field.attname  # a foreign key pages by its column
            row_names.append([name.lstrip("-"), field, model_field.name])
            if model_field.primary_key:
                row_names[-1].append("pk")
        fields.append((field, descending))
    read = _key_reader(queryset, [field for field, _ in fields], row_names)
    ordered = queryset.order_by(*[f"-{field}" if desc else field for field, desc in fields])
    null_key = Q()
    for field, _ in fields:
        null_key |= Q(**{f"{field}__isnull": True})
    has_null_key = ordered.filter(null_key)
    shown = [name.lstrip("-") for name in names]
    single = len(fields) == 1

    def source(cursor: Any) -> Iterator[tuple[Any, Any]]:
        last = None if cursor is None else _key(cursor, len(fields))
        # NULL sorts first or last depending on the database and is never "after" a key:
        # one query per pass finds such rows before any row is yielded.
        if has_null_key.exists():
            raise null_key_error(shown)
        while True:
            page = ordered if last is None else ordered.filter(_after(fields, last))
            batch = list(page[:batch_size])
            for row in batch:
                last = read(row)
                if any(value is None for value in last):
                    raise null_key_error(shown)
                yield (last[0] if single else last), row
            if len(batch) < batch_size:
                return

    return source


def _key_reader(
    queryset: Any, fields: list[str], row_names: list[list[str]]
) -> Callable[[Any], tuple[Any, ...]]:
    """A function reading the key of a row of ``queryset``, whatever kind of row it yields."""
    from django.db.models.query import (
        FlatValuesListIterable,
        ModelIterable,
        ValuesIterable,
        ValuesListIterable,
    )

    kind = queryset._iterable_class
    if issubclass(kind, ModelIterable):
        return lambda row: tuple(getattr(row, field) for field in fields)
    if not issubclass(kind, ValuesIterable | ValuesListIterable | FlatValuesListIterable):
        raise TypeError(
            f"keyset() cannot read a key from the rows of this queryset ({kind.__qualname__}); "
            "it pages model instances, values() and values_list()"
        )
    method = "values" if issubclass(kind, ValuesIterable) else "values_list"
    available = _selected_names(queryset)
    found: list[str] = []
    for names in row_names:
        name = next((name for name in names if name in available), None)
        if name is None:
            raise ValueError(
                f"keyset() key {names[0]!r} is not among the fields of the {method}() "
                f"queryset ({', '.join(available)}); add it to {method}()"
            )
        found.append(name)
    if issubclass(kind, ValuesIterable):
        return lambda row: tuple(row[name] for name in found)
    if issubclass(kind, FlatValuesListIterable):
        return lambda row: (row,)  # its one field is the key, found above
    positions = [available.index(name) for name in found]
    return lambda row: tuple(row[position] for position in positions)


def _selected_names(queryset: Any) -> list[str]:
    """The names of the values of a ``values()`` / ``values_list()`` row, in row order."""
    query = queryset.query
    selected = getattr(query, "selected", None)  # Django 5.2 and later
    if selected:
        return list(selected)
    if queryset._fields:
        return [
            *queryset._fields,
            *(a for a in query.annotation_select if a not in queryset._fields),
        ]
    return [*query.extra_select, *query.values_select, *query.annotation_select]


def _key(cursor: Any, size: int) -> tuple[Any, ...]:
    if size == 1:
        return (cursor,)
    if not isinstance(cursor, list | tuple) or len(cursor) != size:
        raise CursorDecodeError(
            f"cannot read the saved cursor {cursor!r} back as a key of {size} fields"
        )
    return tuple(cursor)


def _after(fields: list[tuple[str, bool]], last: tuple[Any, ...]) -> Any:
    """Rows after ``last`` in key order: (a > x) OR (a = x AND b > y) OR ..."""
    from django.db.models import Q

    after = Q()
    for position, (field, descending) in enumerate(fields):
        equal = {name: value for (name, _), value in zip(fields[:position], last, strict=False)}
        beyond = {f"{field}__{'lt' if descending else 'gt'}": last[position]}
        after |= Q(**equal, **beyond)
    return after
