"""keyset over a QuerySet: what a QuerySet alone has (its fields, values() rows, ordering).

The paging shared with SQLAlchemy (batches, resumes, NULL keys, counts, bad arguments)
runs through both adapters in tests/unit/test_keyset.py.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from django.db import connections
from django.db.models import Case, F, IntegerField, Value, When
from django.test.utils import CaptureQueriesContext

from celery_resumable import ResumableTask, checkpoint_store, iterate, keyset
from celery_resumable.contrib.django import keyset_queryset
from celery_resumable.contrib.django.keyset import is_queryset
from celery_resumable.testing import interrupt_at_cursor
from tests.unit.django_app.conftest import model_tables
from tests.unit.django_app.models import Event, Item, Nullable

pytestmark = pytest.mark.usefixtures("tables")

DAY = dt.date(2024, 3, 1)

NULL_KEY = (
    r"keyset\(\) key \({}\) is NULL in a row of the query; a keyset key must never be NULL: "
    "filter those rows out or page by a key that has no NULL"
)


@pytest.fixture
def nullable(alias: str) -> Iterator[None]:
    """The table of ``Nullable`` on the alias under test."""
    with model_tables(alias, Nullable):
        yield


def add_nullable(alias: str, keys: list[int | None]) -> None:
    rows = [Nullable(id=i, key=key) for i, key in enumerate(keys, start=1)]
    Nullable.objects.using(alias).bulk_create(rows)


def add_items(alias: str, count: int) -> list[int]:
    Item.objects.using(alias).bulk_create([Item(number=n) for n in range(count)])
    return list(Item.objects.using(alias).order_by("id").values_list("id", flat=True))


def add_events(alias: str) -> None:
    Event.objects.using(alias).bulk_create(
        [Event(day=DAY + dt.timedelta(days=day), seq=seq) for day in (2, 0, 1) for seq in (3, 1, 2)]
    )


def test_pages_by_id_one_query_per_batch(alias: str) -> None:
    ids = add_items(alias, 7)
    source = keyset_queryset(Item.objects.using(alias).order_by("-number"), batch_size=3)

    with CaptureQueriesContext(connections[alias]) as queries:
        pairs = [(cursor, item.id) for cursor, item in source(None)]

    assert pairs == [(i, i) for i in ids]
    assert len(queries) == 1 + 3  # the NULL check, then 3 + 3 + 1 rows


def test_a_saved_cursor_resumes_after_its_key(alias: str) -> None:
    ids = add_items(alias, 5)
    source = keyset_queryset(Item.objects.using(alias), key="pk", batch_size=2)

    assert [item.id for _, item in source(ids[1])] == ids[2:]
    assert list(source(ids[-1])) == []


def test_a_composite_key_pages_in_order_and_resumes_from_json(alias: str) -> None:
    add_events(alias)
    source = keyset_queryset(Event.objects.using(alias), key=("day", "-seq"), batch_size=2)

    keys = [cursor for cursor, _ in source(None)]

    expected = [(DAY + dt.timedelta(days=day), seq) for day in (0, 1, 2) for seq in (3, 2, 1)]
    assert keys == expected
    # A cursor read back from the checkpoint is JSON: a list with the date as text
    resumed = [(e.day, e.seq) for _, e in source([str(DAY + dt.timedelta(days=1)), 2])]
    assert resumed == expected[5:]


def test_a_date_key_comes_back_as_a_date_in_a_resumed_run(django_app: Celery, alias: str) -> None:
    add_events(alias)
    seen: list[tuple[dt.date, int]] = []

    @django_app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        source = keyset(Event.objects.using(alias), key=("day", "seq"), batch_size=2)
        for event in iterate("events", source):
            seen.append((event.day, event.seq))

    # Given a run interrupted after its fourth event
    with interrupt_at_cursor("events", 4):
        first = job.apply()
    checkpoint = checkpoint_store(django_app).get(first.id)
    assert checkpoint is not None
    assert checkpoint.cursor == {
        "$type": "tuple",
        "items": [{"$type": "date", "value": "2024-03-02"}, 1],
    }

    # When it resumes, then the stored cursor was read back as a date and an int
    assert job.apply(task_id=first.id).state == "SUCCESS"
    assert seen == [(DAY + dt.timedelta(days=day), seq) for day in (0, 1, 2) for seq in (1, 2, 3)]


def test_connection_chooses_the_database(alias: str) -> None:
    add_items(alias, 2)

    source = keyset_queryset(Item.objects.all(), connection=connections[alias])

    assert [item.number for _, item in source(None)] == [0, 1]


def test_values_querysets_page_too(alias: str) -> None:
    add_items(alias, 3)
    source = keyset_queryset(Item.objects.using(alias).values("id", "number"), batch_size=2)

    assert [row["number"] for _, row in source(None)] == [0, 1, 2]


@pytest.mark.parametrize("alias", ["default"])
@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"queryset": [1, 2]}, TypeError, "expected a Django QuerySet, not list"),
        ({"key": ()}, TypeError, r"keyset\(\) key must be a name or a tuple of names"),
        ({"key": "missing"}, ValueError, "key 'missing' is neither a field of django_app.Item"),
    ],
)
def test_bad_arguments_are_clear_errors(
    alias: str, arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    options = {"queryset": Item.objects.all(), **arguments}

    with pytest.raises(error, match=message):
        keyset_queryset(**options)


@pytest.mark.parametrize("alias", ["default"])
def test_a_sliced_queryset_is_refused(alias: str) -> None:
    with pytest.raises(ValueError, match="cannot page a sliced QuerySet"):
        keyset_queryset(Item.objects.all()[:5])


@pytest.mark.parametrize("alias", ["default"])
def test_is_queryset_tells_querysets_apart(alias: str) -> None:
    assert is_queryset(Item.objects.all())
    assert not is_queryset(Item.objects)  # a manager, not a queryset
    assert not is_queryset([1, 2])


@pytest.mark.usefixtures("nullable")
def test_a_null_key_paged_in_descending_order_fails_the_run_before_any_row(
    django_app: Celery, alias: str
) -> None:
    # Given keys with a NULL among them, paged from the highest
    add_nullable(alias, [1, 2, None, 5])
    seen: list[int] = []

    @django_app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        rows = keyset(Nullable.objects.using(alias), key="-key", batch_size=2)
        for row in iterate("rows", rows):
            seen.append(row.id)

    # When the task runs
    result = job.apply()

    # Then it fails with the keyset's ValueError before the loop body saw a row
    assert result.state == "FAILURE"
    assert isinstance(result.result, ValueError)
    assert re.fullmatch(NULL_KEY.format("key"), str(result.result))
    assert seen == []


def test_a_null_annotation_key_fails_before_any_row(alias: str) -> None:
    add_items(alias, 6)
    rank = Case(
        When(number__in=[2, 3], then=Value(None)), default=F("number"), output_field=IntegerField()
    )
    queryset = Item.objects.using(alias).annotate(rank=rank)
    source = keyset_queryset(queryset, key="rank", batch_size=2)
    seen: list[int] = []

    with pytest.raises(ValueError, match=NULL_KEY.format("rank")):
        seen.extend(item.number for _, item in source(None))
    assert seen == []


@pytest.mark.parametrize(
    ("make", "key", "read"),
    [
        (lambda q: q.values("id", "number"), "id", lambda row: row["number"]),
        (lambda q: q.values(), "pk", lambda row: row["number"]),
        (lambda q: q.values("number"), "number", lambda row: row["number"]),
        (lambda q: q.values("pk", "number"), "pk", lambda row: row["number"]),
        (lambda q: q.values_list("number", "id"), "id", lambda row: row[0]),
        (lambda q: q.values_list(), "id", lambda row: row[1]),
        (lambda q: q.values_list("number", named=True), "number", lambda row: row.number),
        (lambda q: q.values_list("number", flat=True), "-number", lambda row: row),
    ],
    ids=[
        "values",
        "values all",
        "values key only",
        "values pk",
        "values_list",
        "values_list all",
        "named",
        "flat",
    ],
)
def test_values_and_values_list_querysets_page_too(
    alias: str, make: Any, key: str, read: Any
) -> None:
    add_items(alias, 5)
    source = keyset_queryset(make(Item.objects.using(alias)), key=key, batch_size=2)

    numbers = [read(row) for _, row in source(None)]

    assert numbers == ([4, 3, 2, 1, 0] if key.startswith("-") else [0, 1, 2, 3, 4])


@pytest.mark.parametrize("alias", ["default"])
@pytest.mark.parametrize(
    "make",
    [
        lambda q: q.values("number"),
        lambda q: q.values_list("number"),
        lambda q: q.values_list("number", flat=True),
        lambda q: q.values_list("number", named=True),
    ],
    ids=["values", "values_list", "flat", "named"],
)
def test_a_values_queryset_without_the_key_is_a_clear_error(alias: str, make: Any) -> None:
    with pytest.raises(ValueError, match=r"keyset\(\) key 'id' is not among the fields"):
        keyset_queryset(make(Item.objects.all()), key="id")
