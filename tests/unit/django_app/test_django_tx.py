"""set_step_tx and set_step_cursor_tx through Django's connection: what Django alone has.

The behaviour shared with SQLAlchemy runs through both adapters in tests/unit/test_tx.py
and tests/unit/test_tx_edges.py; here are ``django.db.connection``, atomic blocks and
savepoints.
"""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery
from django.db import connection, connections, transaction

from celery_resumable import (
    ResumableTask,
    checkpoint_store,
    set_cursor,
    set_step_cursor_tx,
    set_step_tx,
    step,
    step_cursor,
)
from tests.unit.django_app.models import Item

pytestmark = pytest.mark.usefixtures("tables")


class RollbackError(Exception):
    """Raised by a test to roll its atomic block back."""


def add_items(alias: str, numbers: range) -> None:
    Item.objects.using(alias).bulk_create([Item(number=n) for n in numbers])


def count(alias: str) -> int:
    return int(Item.objects.using(alias).count())


@pytest.mark.parametrize("alias", ["default"])
def test_django_db_connection_works_for_the_default_database(
    django_app: Celery, alias: str
) -> None:
    store = checkpoint_store(django_app)

    @django_app.task(base=ResumableTask, bind=True)
    def load(self: Any) -> Any:
        def batches(cursor: int | None) -> None:
            with transaction.atomic():
                add_items(alias, range(2))
                set_step_cursor_tx(connection, 2)  # django.db.connection, a proxy
            checkpoint = store.get(self.request.id)
            assert checkpoint is not None and checkpoint.cursor == 2

        step_cursor("batches", batches)

    assert load.apply().state == "SUCCESS"


def test_outside_an_atomic_block_is_a_clear_error(django_app: Celery, alias: str) -> None:
    @django_app.task(base=ResumableTask, bind=True)
    def load(self: Any) -> None:
        step("work", lambda: set_step_tx(connections[alias]))

    result = load.apply()

    assert isinstance(result.result, transaction.TransactionManagementError)
    assert str(result.result) == (
        "set_step_tx() needs a transaction: call it inside "
        f"`with transaction.atomic(using={alias!r}):` so that the checkpoint commits with "
        "your writes"
    )


def test_a_savepoint_rolled_back_alone_undoes_its_write_and_the_run_goes_on(
    django_app: Celery, alias: str
) -> None:
    django_app.conf.resumable_checkpoint_interval = 0
    store = checkpoint_store(django_app)
    stored: list[Any] = []

    @django_app.task(base=ResumableTask, bind=True)
    def load(self: Any) -> None:
        def batches(cursor: int | None) -> None:
            with transaction.atomic(using=alias):
                add_items(alias, range(0, 5))
                set_step_cursor_tx(connections[alias], 5)
                # Given a nested block (a savepoint) that writes a cursor, then rolls back
                try:
                    with transaction.atomic(using=alias):
                        add_items(alias, range(5, 10))
                        set_step_cursor_tx(connections[alias], 10)
                        raise RollbackError()
                except RollbackError:
                    pass
            checkpoint = store.get(self.request.id)
            assert checkpoint is not None
            stored.append(checkpoint.cursor)
            # When the run reaches a boundary after the outer block committed
            set_cursor(7)
            checkpoint = store.get(self.request.id)
            assert checkpoint is not None
            stored.append(checkpoint.cursor)

        step_cursor("batches", batches)

    assert load.apply().state == "SUCCESS"

    # Then the outer block's write committed alone, and the run writes again: it does
    # not wait for the rolled-back savepoint's write to end
    assert stored == [5, 7]
    assert count(alias) == 5
