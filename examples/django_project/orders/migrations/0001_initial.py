"""The orders table."""

from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies: list[tuple[str, str]] = []  # noqa: RUF012 - Django's own declaration

    operations = [  # noqa: RUF012 - Django's own declaration
        migrations.CreateModel(
            name="Order",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("number", models.IntegerField(unique=True)),
                ("marks", models.IntegerField(default=0)),
                ("marked_by", models.IntegerField(null=True)),
            ],
        ),
    ]
