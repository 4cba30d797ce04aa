"""Django's side of the suites run through both adapters (tests/unit/test_tx.py and
tests/unit/test_keyset.py): the same behaviour, through Django's connection and
querysets. Importing this module configures Django for the tests.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from celery import Celery
from django.db import DatabaseError, connections, transaction

from celery_resumable import keyset
from celery_resumable.keyset import Keyset
from tests.services import MYSQL_URL, POSTGRES_URL
from tests.unit.django_app.conftest import app_on, model_tables  # configures Django
from tests.unit.django_app.models import Item, Nullable, Number, Pair


def alias_for(store_url: str) -> str:
    """The Django alias of the database ``store_url`` names (for SQLite: another file)."""
    aliases = {POSTGRES_URL: "pg", MYSQL_URL: "mysql"}
    return aliases.get(store_url, "default")


class DjangoTx:
    """Transactional writes through Django's connection inside ``transaction.atomic()``."""

    def __init__(self, app: Celery, alias: str) -> None:
        self.app = app
        self.alias = alias

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """An atomic block; yields the connection to write the checkpoint through."""
        with transaction.atomic(using=self.alias):
            yield connections[self.alias]

    def insert(self, conn: Any, numbers: Iterable[int]) -> None:
        """Insert an item per number in the open atomic block."""
        Item.objects.using(self.alias).bulk_create([Item(number=n) for n in numbers])

    def count(self) -> int:
        """How many items are stored."""
        return int(Item.objects.using(self.alias).count())

    def fail(self, conn: Any) -> None:
        """Make the open transaction fail on the database, as a statement that raised."""
        with pytest.raises(DatabaseError), conn.cursor() as cursor:
            cursor.execute("SELECT 1 / 0")

    def driver_error(self, cause: BaseException | None) -> BaseException | None:
        """The driver's error under the cause of a failed write: Django's, over the driver's."""
        assert isinstance(cause, DatabaseError)
        return cause.__cause__


@contextlib.contextmanager
def django_tx(store_url: str, table_name: str) -> Iterator[DjangoTx]:
    """The Django side of the transactional suite, on the database of ``store_url``."""
    alias = alias_for(store_url)
    with model_tables(alias, Item), app_on(alias, table_name) as app:
        yield DjangoTx(app, alias)


class DjangoRows:
    """Querysets of the models shaped like the keyset suite's tables."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.statements: list[str] = []

    def numbers(self, ids: list[int]) -> Any:
        """The ``Number`` rows of ``ids``, inserted in random order, with a value each."""
        self.add_numbers(ids)
        return Number.objects.using(self.alias)

    def add_numbers(self, ids: list[int]) -> None:
        """More ``Number`` rows, in random order."""
        shuffled = random.sample(ids, len(ids))
        rows = [Number(id=i, value=f"v{i}") for i in shuffled]
        Number.objects.using(self.alias).bulk_create(rows)

    def pairs(self, keys: list[tuple[int, str]]) -> Any:
        """The ``Pair`` rows of the ``(day, name)`` keys, in random order."""
        shuffled = random.sample(keys, len(keys))
        rows = [Pair(day=day, name=name) for day, name in shuffled]
        Pair.objects.using(self.alias).bulk_create(rows)
        return Pair.objects.using(self.alias)

    def nullable(self, rows: list[tuple[int, int | None, int | None]]) -> Any:
        """The ``Nullable`` rows of ``(id, key, part)``."""
        self.add_nullable(rows)
        return Nullable.objects.using(self.alias)

    def add_nullable(self, rows: list[tuple[int, int | None, int | None]]) -> None:
        """More ``Nullable`` rows."""
        made = [Nullable(id=i, key=key, part=part) for i, key, part in rows]
        Nullable.objects.using(self.alias).bulk_create(made)

    def keyset(self, query: Any, **options: Any) -> Keyset:
        """``keyset()`` of ``query`` (a queryset of the alias)."""
        return keyset(query, **options)

    def queries(self) -> list[str]:
        """The SQL sent on the alias from now on."""
        self.statements = []
        return self.statements

    def _record(self, execute: Callable[..., Any], sql: str, *args: Any) -> Any:
        self.statements.append(sql)
        return execute(sql, *args)


@contextlib.contextmanager
def django_rows(store_url: str) -> Iterator[DjangoRows]:
    """The Django side of the keyset suite, on the database of ``store_url``."""
    alias = alias_for(store_url)
    rows = DjangoRows(alias)
    connection = connections[alias]
    with model_tables(alias, Number, Pair, Nullable):
        connection.execute_wrappers.append(rows._record)
        try:
            yield rows
        finally:
            connection.execute_wrappers.remove(rows._record)
