"""Mark every order exactly once, in batches, surviving a worker stopped mid-run.

Each batch is one ``transaction.atomic()`` block: the orders' update and the step's
cursor (the last order id done) commit together, or roll back together. A worker told
to stop makes the task stop at its next ``set_step_cursor_tx``, inside the block, so
the unfinished batch rolls back; the task goes back on the queue and the next worker
resumes after the last committed batch.
"""

from __future__ import annotations

import os
import time

from celery import shared_task
from django.db import connection, transaction
from django.db.models import F

from celery_resumable import ResumableTask, set_step_cursor_tx, step_cursor

from .models import Order


@shared_task(base=ResumableTask, bind=True)
def mark_orders(self: ResumableTask, batch_size: int = 100, pause: float = 0.0) -> int:
    """Mark every order once; returns the id of the last order marked."""

    def mark(cursor: int | None) -> int:
        last = cursor or 0
        while True:
            with transaction.atomic():
                batch = Order.objects.filter(id__gt=last).order_by("id")[:batch_size]
                ids = list(batch.values_list("id", flat=True))
                if not ids:
                    return last
                Order.objects.filter(id__in=ids).update(marks=F("marks") + 1, marked_by=os.getpid())
                set_step_cursor_tx(connection, ids[-1])  # commits with the batch
            last = ids[-1]
            time.sleep(pause)

    return step_cursor("mark", mark)
