"""The ``Pages`` of a Django ``QuerySet``, for ``keyset()``'s paging loop.

``celery_resumable.keyset`` pages every query the same way and finds this adapter by
name (``is_queryset``, ``QuerySetPages``) once ``django.db.models`` is imported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db.models import Q, QuerySet
from django.db.models.query import (
    FlatValuesListIterable,
    ModelIterable,
    ValuesIterable,
    ValuesListIterable,
)

from celery_resumable.keyset import Keyset, keyset

__all__ = ["QuerySetPages", "is_queryset", "keyset_queryset"]


def is_queryset(query: object) -> bool:
    """Whether ``query`` is a Django ``QuerySet``."""
    return isinstance(query, QuerySet)


def keyset_queryset(
    queryset: Any,
    *,
    key: str | Sequence[str] = "id",
    batch_size: int = 500,
    connection: Any = None,
) -> Keyset:
    """A cursor source for ``iterate`` that pages ``queryset`` by ``key``, one query per batch.

    ``keyset(queryset, key=key, ...)`` for querysets alone, with ``key="id"`` by default.
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

    Raises TypeError for something else than a QuerySet, a key that is not a name or a
    tuple of names, or a batch size that is not an int; ValueError for a sliced
    queryset, a key that is neither a field nor an annotation, a batch size below 1 or a
    ``values()`` / ``values_list()`` queryset without the key's fields; and
    CursorDecodeError when a saved cursor does not fit the key.
    """
    if not isinstance(queryset, QuerySet):
        raise TypeError(f"expected a Django QuerySet, not {type(queryset).__qualname__}")
    names = key if isinstance(key, str | tuple) else tuple(key)
    return keyset(queryset, key=names, batch_size=batch_size, connection=connection)


class QuerySetPages:
    """The rows of a ``QuerySet`` in key order; ``-name`` orders that field descending."""

    def __init__(
        self, queryset: Any, names: tuple[str, ...], batch_size: int, connection: Any
    ) -> None:
        if queryset.query.is_sliced:
            raise ValueError("cannot page a sliced QuerySet by key; slice each batch instead")
        if connection is not None:
            alias = connection if isinstance(connection, str) else connection.alias
            queryset = queryset.using(alias)
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
                        f"keyset() key {name!r} is neither a field of {meta.label} nor an "
                        "annotation of the queryset"
                    ) from None
                field = model_field.attname  # a foreign key pages by its column
                row_names.append([name.lstrip("-"), field, model_field.name])
                if model_field.primary_key:
                    row_names[-1].append("pk")
            fields.append((field, descending))
        self.names = tuple(name.lstrip("-") for name in names)
        # Django's fields do not say their Python type: a cursor is plain (tagged) JSON.
        self.key_types: tuple[Any, ...] = (None,) * len(names)
        self._fields = fields
        self._batch_size = batch_size
        self._single = len(fields) == 1
        self._read = _key_reader(queryset, [field for field, _ in fields], row_names)
        self._ordered = queryset.order_by(*[f"-{f}" if desc else f for f, desc in fields])
        null_key = Q()
        for field, _ in fields:
            null_key |= Q(**{f"{field}__isnull": True})
        self._null_key = self._ordered.filter(null_key)

    def after(self, key: Any) -> Sequence[Any]:
        """The next batch of rows after ``key`` in key order, or from the start when None."""
        if key is None:
            return list(self._ordered[: self._batch_size])
        last = (key,) if self._single else tuple(key)
        return list(self._ordered.filter(_after(self._fields, last))[: self._batch_size])

    def key_of(self, row: Any) -> Any:
        """The key of ``row``: a value for a key of one field, a tuple for several."""
        key = self._read(row)
        return key[0] if self._single else key

    def has_null_key(self) -> bool:
        """Whether a row has a NULL key (or a NULL in a part of it): one query."""
        return bool(self._null_key.exists())

    def count(self) -> int:
        """How many rows the queryset has: one COUNT query."""
        return int(self._ordered.count())


def _key_reader(
    queryset: Any, fields: list[str], row_names: list[list[str]]
) -> Callable[[Any], tuple[Any, ...]]:
    """A function reading the key of a row of ``queryset``, whatever kind of row it yields."""
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


def _after(fields: list[tuple[str, bool]], last: tuple[Any, ...]) -> Q:
    """Rows after ``last`` in key order: (a > x) OR (a = x AND b > y) OR ..."""
    after = Q()
    for position, (field, descending) in enumerate(fields):
        equal = {name: value for (name, _), value in zip(fields[:position], last, strict=False)}
        beyond = {f"{field}__{'lt' if descending else 'gt'}": last[position]}
        after |= Q(**equal, **beyond)
    return after
