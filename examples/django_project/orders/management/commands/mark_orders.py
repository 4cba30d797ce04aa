"""``manage.py mark_orders``: send the task that marks every order, and show its id."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from orders.tasks import mark_orders


class Command(BaseCommand):
    help = "Send the mark_orders task to the workers."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=100)
        parser.add_argument("--pause", type=float, default=0.0)

    def handle(self, *args: Any, batch_size: int, pause: float, **options: Any) -> None:
        result = mark_orders.delay(batch_size=batch_size, pause=pause)
        self.stdout.write(f"sent mark_orders: task id {result.id}")
