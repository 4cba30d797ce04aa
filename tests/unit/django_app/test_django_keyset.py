"""keyset_queryset: a QuerySet paged by key as a cursor source for iterate."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from celery import Celery
from django.db import connections
from django.test.utils import CaptureQueriesContext

from celery_resumable import ResumableTask, checkpoint_store, iterate
from celery_resumable._django_keyset import is_queryset
from celery_resumable.contrib.django import keyset_queryset
from celery_resumable.errors import CursorDecodeError
from celery_resumable.testing import interrupt_at_cursor
from tests.unit.django_app.models import Event, Item

pytestmark = pytest.mark.usefixtures("tables")

DAY = dt.date(2024, 3, 1)


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
    assert len(queries) == 3  # 3 + 3 + 1 rows


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


def test_an_interrupted_loop_resumes_after_the_last_row_it_finished(
    django_app: Celery, alias: str
) -> None:
    add_items(alias, 10)
    seen: list[int] = []

    @django_app.task(base=ResumableTask, bind=True)
    def mark(self: Any) -> None:
        rows = keyset_queryset(Item.objects.using(alias), key="number", batch_size=4)
        for item in iterate("mark", rows):
            seen.append(item.number)

    # Given a run interrupted after six rows
    with interrupt_at_cursor("mark", 6):
        first = mark.apply()
    assert first.state == "IGNORED"
    checkpoint = checkpoint_store(django_app).get(first.id)
    assert checkpoint is not None and checkpoint.cursor == 5

    # When it resumes, then every row was seen once
    assert mark.apply(task_id=first.id).state == "SUCCESS"
    assert seen == list(range(10))


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
        ({"key": ()}, ValueError, "key must be a field name or a tuple of field names"),
        ({"key": "missing"}, ValueError, "key 'missing' is neither a field of django_app.Item"),
        ({"batch_size": 0}, ValueError, "batch_size must be a whole number above zero"),
    ],
)
def test_bad_arguments_are_clear_errors(
    alias: str, arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    options = {"queryset": Item.objects.all(), **arguments}

    with pytest.raises(error, match=message):
        keyset_queryset(**options)


@pytest.mark.parametrize("alias", ["default"])
def test_a_sliced_queryset_or_a_cursor_of_another_shape_is_refused(alias: str) -> None:
    with pytest.raises(ValueError, match="cannot page a sliced QuerySet"):
        keyset_queryset(Item.objects.all()[:5])

    source = keyset_queryset(Event.objects.all(), key=("day", "seq"))
    with pytest.raises(CursorDecodeError, match="as a key of 2 fields"):
        list(source(5))


@pytest.mark.parametrize("alias", ["default"])
def test_is_queryset_tells_querysets_apart(alias: str) -> None:
    assert is_queryset(Item.objects.all())
    assert not is_queryset(Item.objects)  # a manager, not a queryset
    assert not is_queryset([1, 2])
