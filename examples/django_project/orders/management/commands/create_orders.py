"""``manage.py create_orders COUNT``: add COUNT unmarked orders."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db.models import Max

from orders.models import Order


class Command(BaseCommand):
    help = "Add unmarked orders."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("count", type=int)

    def handle(self, *args: Any, count: int, **options: Any) -> None:
        first = (Order.objects.aggregate(last=Max("number"))["last"] or 0) + 1
        Order.objects.bulk_create(
            [Order(number=number) for number in range(first, first + count)], batch_size=1000
        )
        self.stdout.write(f"{count} orders added")
