"""``manage.py orders_report``: how many orders were marked once, more, or not at all."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db.models import Count, Q

from orders.models import Order


class Command(BaseCommand):
    help = "Count the orders by how many times they were marked."

    def handle(self, *args: Any, **options: Any) -> None:
        counts = Order.objects.aggregate(
            total=Count("id"),
            once=Count("id", filter=Q(marks=1)),
            more=Count("id", filter=Q(marks__gt=1)),
            unmarked=Count("id", filter=Q(marks=0)),
            processes=Count("marked_by", distinct=True),
        )
        self.stdout.write(
            "orders: {total}, marked once: {once}, more than once: {more}, "
            "unmarked: {unmarked}, by {processes} worker processes".format(**counts)
        )
