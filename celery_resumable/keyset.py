"""keyset(): a cursor source for ``iterate`` that pages through a query by its key.

``Keyset`` does the paging (a batch at a time; the cursor is the last key done; a NULL
key refused) and asks a ``Pages`` for each batch: "the first rows after this key, in
key order". ``SelectPages`` answers for a SQLAlchemy ``Select``. A Django ``QuerySet``
is answered by ``celery_resumable.contrib.django.keyset`` (its ``is_queryset`` and
``QuerySetPages``), imported by name once ``django.db.models`` is: before that no
``QuerySet`` can exist, and importing this package never imports Django.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator, Sequence
from operator import attrgetter, itemgetter
from typing import Any, Protocol, TypeAlias

from sqlalchemy import Select, and_, bindparam, func, inspect, literal, or_, select, tuple_
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.sql.selectable import Subquery

from celery_resumable.errors import CursorDecodeError

__all__ = ["CountedKeyset", "Keyset", "Pages", "SelectPages", "keyset"]

AnyRow: TypeAlias = Row[Any]

# PostgreSQL and SQLite turn a row-value comparison `(a, b) > (:a, :b)` into one index
# range; MySQL and MariaDB scan the index from its start for it, so they get the
# expanded form `a >= :a AND (a > :a OR a = :a AND b > :b)`, whose leading term is a range.
_ROW_VALUE_DIALECTS = frozenset({"postgresql", "sqlite"})

# The module that pages Django querysets, and the module whose import says one may exist.
_DJANGO_ADAPTER = "celery_resumable.contrib.django.keyset"
_DJANGO_MODELS = "django.db.models"


class Pages(Protocol):
    """The rows of one query in key order, a batch at a time."""

    names: tuple[str, ...]
    """The names of the key columns."""

    key_types: tuple[Any, ...]
    """The Python type of each key column, or None where it is not known."""

    def after(self, key: Any) -> Sequence[Any]:
        """The next batch of rows after ``key`` in key order, or from the start when None.

        A key is a value for a key of one column, a tuple for a composite key.
        """
        ...  # pragma: no cover

    def key_of(self, row: Any) -> Any:
        """The key of ``row``: a value for a key of one column, a tuple for a composite key."""
        ...  # pragma: no cover

    def has_null_key(self) -> bool:
        """Whether a row of the query has a NULL key (or a NULL in a part of it)."""
        ...  # pragma: no cover

    def count(self) -> int:
        """How many rows the query has."""
        ...  # pragma: no cover


class Keyset:
    """A cursor source for ``iterate``: ``source(cursor)`` yields ``(key, row)`` after ``cursor``.

    The cursor is the last key done: a scalar for a key of one column, a tuple for a
    composite key. ``cursor_type`` is the type a saved cursor is decoded to.
    """

    def __init__(self, pages: Pages, batch_size: int) -> None:
        self._pages = pages
        self._batch_size = batch_size
        self._composite = len(pages.names) > 1
        self.cursor_type: Any = _cursor_type(pages.key_types, self._composite)
        # iterate() decodes a saved cursor to the annotation of its source's first
        # parameter; this source's type depends on the key columns, so it is set here.
        self.__annotations__ = {"cursor": self.cursor_type}

    def __call__(self, cursor: Any) -> Iterator[tuple[Any, Any]]:
        """Yield ``(key, row)`` for the rows after ``cursor`` (all rows when None)."""
        return self._rows(None if cursor is None else self._key_from_cursor(cursor))

    def __bool__(self) -> bool:
        return True  # never count the rows to answer a truth test

    def __repr__(self) -> str:
        return f"keyset(key={self._pages.names!r}, batch_size={self._batch_size})"

    def _rows(self, after: Any) -> Iterator[tuple[Any, Any]]:
        # A NULL key sorts first or last depending on the database, and no "after the last
        # key" predicate is true for it: such rows would be skipped, or met only after
        # others were processed. One query per pass finds them before any row is yielded.
        if self._pages.has_null_key():
            raise _null_key_error(self._pages.names)
        key_of = self._pages.key_of
        composite = self._composite
        while True:
            batch = self._pages.after(after)
            last = len(batch) < self._batch_size  # no query to learn there is no more
            for row in batch:
                after = key_of(row)
                # A row made NULL since the check: stop before its NULL becomes the cursor.
                if after is None or (composite and any(part is None for part in after)):
                    raise _null_key_error(self._pages.names)
                yield after, row
            if last:
                return
            del batch  # let it go before the next one comes: one batch in memory at a time

    def _key_from_cursor(self, cursor: Any) -> Any:
        if not self._composite:
            return cursor
        if not isinstance(cursor, tuple | list) or len(cursor) != len(self._pages.names):
            raise CursorDecodeError(
                f"cannot read the keyset cursor {cursor!r} back as a key of "
                f"{len(self._pages.names)} columns ({', '.join(self._pages.names)})"
            )
        return tuple(cursor)


class CountedKeyset(Keyset):
    """A ``Keyset`` that knows its length: ``len()`` runs one COUNT query."""

    def __len__(self) -> int:
        return self._pages.count()


def keyset(
    query: object,
    *,
    key: str | tuple[str, ...],
    batch_size: int = 500,
    connection: Engine | Connection | Session | None = None,
    count: bool = False,
) -> Keyset:
    """Return a cursor source for ``iterate`` that pages through ``query`` by ``key``.

    ``query`` is a Django ``QuerySet`` (``connection``: a Django connection or alias;
    see docs/django.md), or a SQLAlchemy ``Select`` run on ``connection``: an ``Engine`` (a
    connection per batch, no transaction held across the loop body), a ``Connection``
    or a ``Session`` (their transaction is used). ``key`` names a selected column, or a
    tuple of them for a composite key (for a ``Session``'s select of one ORM entity, its
    mapped attributes; for a ``QuerySet``, fields or annotations); the key must be unique
    and never NULL. Rows come in ascending key order, ``batch_size`` per query; the
    cursor is the last key done, so a resumed run continues after it. With
    ``count=True`` the source has a ``len()`` (one COUNT query), which ``iterate``
    reports as the progress total.

    Raises TypeError for a query that is neither a ``Select`` nor a ``QuerySet``, a
    missing or unsupported ``connection``, a ``key`` that is not a name or a tuple of
    names, or a ``batch_size`` that is not an int; ValueError for an unknown key column,
    a key naming a column twice, ``batch_size`` below 1, or a query with LIMIT or OFFSET
    (a sliced ``QuerySet``). Each pass (a fresh start or a resume) first runs one query
    that looks for a row whose key (or a part of it) is NULL, and raises ValueError if
    there is one, before any row is yielded; a saved cursor that is not a key of the key
    columns raises CursorDecodeError.
    """
    names = _key_names(key)
    _check_batch_size(batch_size)
    pages = _pages_of(query, names, batch_size, connection)
    return CountedKeyset(pages, batch_size) if count else Keyset(pages, batch_size)


def _pages_of(query: object, names: tuple[str, ...], batch_size: int, connection: object) -> Pages:
    if isinstance(query, Select):
        return SelectPages(query, names, batch_size, connection)
    if _DJANGO_MODELS in sys.modules:
        adapter = importlib.import_module(_DJANGO_ADAPTER)
        if adapter.is_queryset(query):
            pages: Pages = adapter.QuerySetPages(query, names, batch_size, connection)
            return pages
    raise TypeError(
        f"keyset() pages through a SQLAlchemy Select or a Django QuerySet, not "
        f"{type(query).__qualname__}"
    )


def _key_names(key: object) -> tuple[str, ...]:
    names = (key,) if isinstance(key, str) else key
    if (
        not isinstance(names, tuple)
        or not names
        or not all(isinstance(name, str) and name for name in names)
    ):
        raise TypeError(f"keyset() key must be a name or a tuple of names, not {key!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"keyset() key names a column twice: {key!r}")
    return names


def _check_batch_size(batch_size: object) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"keyset() batch_size must be an int, not {type(batch_size).__qualname__}")
    if batch_size < 1:
        raise ValueError(f"keyset() batch_size must be at least 1, not {batch_size}")


def _null_key_error(names: Sequence[str]) -> ValueError:
    return ValueError(
        f"keyset() key ({', '.join(names)}) is NULL in a row of the query; a keyset key "
        "must never be NULL: filter those rows out or page by a key that has no NULL"
    )


class SelectPages:
    """The rows of a SQLAlchemy ``Select`` in key order, on an Engine, Connection or Session."""

    def __init__(
        self, query: Select[Any], names: tuple[str, ...], batch_size: int, connection: object
    ) -> None:
        if not isinstance(connection, Engine | Connection | Session):
            what = "None" if connection is None else type(connection).__qualname__
            raise TypeError(
                "keyset() needs connection= (a SQLAlchemy Engine, Connection or Session) "
                f"to run a Select, not {what}"
            )
        if query._has_row_limiting_clause:  # no public accessor for LIMIT/OFFSET/FETCH
            raise ValueError("keyset() cannot page a query with LIMIT or OFFSET; remove them")
        entity = _single_entity(query) if isinstance(connection, Session) else None
        if entity is not None:
            # A Session returns rows holding one object each: the key is read from it.
            available = list(inspect(entity).mapper.column_attrs.keys())
            _check_names(names, available, "mapped column attribute of the selected entity")
            columns = [getattr(entity, name) for name in names]
            read_object = attrgetter(*names)
            self._read: Callable[[AnyRow], Any] = lambda row: read_object(row[0])
        else:
            available = list(query.selected_columns.keys())
            _check_names(names, available, "column selected by the query")
            columns = [query.selected_columns[name] for name in names]
            self._read = itemgetter(*(available.index(name) for name in names))
        rows = query.order_by(None).subquery()
        if entity is None:
            exported = list(rows.c)  # one per selected column, in the same order
            null_keys = [exported[available.index(name)].is_(None) for name in names]
        else:
            null_keys = [
                _exported(rows, column, name).is_(None)
                for column, name in zip(columns, names, strict=True)
            ]
        self.names = names
        self.key_types = tuple(_python_type(column) for column in columns)
        self._connection = connection
        self._composite = len(names) > 1
        params = [
            bindparam(f"keyset_after_{i}", type_=column.type) for i, column in enumerate(columns)
        ]
        self._first = query.order_by(None).order_by(*columns).limit(batch_size)
        self._next = self._first.where(_after(columns, params, _dialect_name(connection, query)))
        self._count = select(func.count()).select_from(rows)
        self._null_key = select(literal(1)).select_from(rows).where(or_(*null_keys)).limit(1)

    def after(self, key: Any) -> Sequence[AnyRow]:
        """The next batch of rows after ``key`` in key order, or from the start when None."""
        if key is None:
            return self._execute(self._first, {})
        values = key if self._composite else (key,)
        return self._execute(self._next, {f"keyset_after_{i}": v for i, v in enumerate(values)})

    def count(self) -> int:
        """How many rows the query has: one COUNT query."""
        return int(self._execute(self._count, {})[0][0])

    def has_null_key(self) -> bool:
        """Whether a row has a NULL key (or a NULL in a part of it): one query."""
        return bool(self._execute(self._null_key, {}))

    def _execute(self, statement: Select[Any], params: dict[str, Any]) -> Sequence[AnyRow]:
        if isinstance(self._connection, Engine):
            with self._connection.connect() as connection:
                return connection.execute(statement, params).all()
        return self._connection.execute(statement, params).all()

    def key_of(self, row: AnyRow) -> Any:
        """The key of ``row``: a value for a key of one column, a tuple for a composite key."""
        return self._read(row)


def _check_names(names: tuple[str, ...], available: list[str], what: str) -> None:
    for name in names:
        if name not in available:
            raise ValueError(
                f"keyset() key {name!r} is not a {what}; "
                f"the query has {', '.join(map(repr, available))}"
            )


def _exported(rows: Subquery, column: Any, name: str) -> ColumnElement[Any]:
    """The column of ``rows`` (the query as a subquery) that ``column`` of the query became."""
    exported = rows.corresponding_column(column)
    if exported is None:
        raise ValueError(f"keyset() cannot find the key column {name!r} in the query's rows")
    return exported


def _single_entity(query: Select[Any]) -> Any:
    """The ORM entity (class or alias) of a select of exactly one entity, else None."""
    descriptions = query.column_descriptions
    if len(descriptions) == 1 and isinstance(descriptions[0]["type"], type):
        return descriptions[0]["expr"]
    return None


def _after(
    columns: list[ColumnElement[Any]], params: list[BindParameter[Any]], dialect: str
) -> ColumnElement[bool]:
    if len(columns) == 1:
        return columns[0] > params[0]
    if dialect in _ROW_VALUE_DIALECTS:
        return tuple_(*columns) > tuple_(*params)
    later = [
        and_(
            *(c == p for c, p in zip(columns[:i], params[:i], strict=True)), columns[i] > params[i]
        )
        for i in range(len(columns))
    ]
    return and_(columns[0] >= params[0], or_(*later))


def _dialect_name(connection: Engine | Connection | Session, query: Select[Any]) -> str:
    if isinstance(connection, Session):
        return connection.get_bind(clause=query).dialect.name
    return connection.dialect.name


def _python_type(column: ColumnElement[Any]) -> Any:
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return None
    return None if python_type is object else python_type


def _cursor_type(key_types: tuple[Any, ...], composite: bool) -> Any:
    # Any, not None, where a type is not known: None as an annotation means NoneType.
    known = tuple(Any if t is None else t for t in key_types)
    return tuple[known] if composite else known[0]  # type: ignore[valid-type]
