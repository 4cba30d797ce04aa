"""Settings of the example project: one app, its database and broker from the environment.

EXAMPLE_DB_ENGINE (``sqlite3`` by default, ``postgresql`` or ``mysql``), EXAMPLE_DB_NAME,
EXAMPLE_DB_USER, EXAMPLE_DB_PASSWORD, EXAMPLE_DB_HOST and EXAMPLE_DB_PORT choose the
database; EXAMPLE_BROKER_URL and EXAMPLE_QUEUE the broker and the queue.
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "example-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS: list[str] = []
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "celery_resumable.contrib.django",  # the checkpoint table, as a migration
    "orders",
]

ENGINE = os.environ.get("EXAMPLE_DB_ENGINE", "sqlite3")
if ENGINE == "mysql":
    # Django's MySQL backend expects mysqlclient; PyMySQL stands in for it.
    import pymysql

    pymysql.install_as_MySQLdb()

DATABASES = {
    "default": {
        "ENGINE": f"django.db.backends.{ENGINE}",
        "NAME": os.environ.get("EXAMPLE_DB_NAME", str(BASE_DIR / "example.sqlite3")),
        "USER": os.environ.get("EXAMPLE_DB_USER", ""),
        "PASSWORD": os.environ.get("EXAMPLE_DB_PASSWORD", ""),
        "HOST": os.environ.get("EXAMPLE_DB_HOST", ""),
        "PORT": os.environ.get("EXAMPLE_DB_PORT", ""),
    }
}

CELERY_BROKER_URL = os.environ.get("EXAMPLE_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("EXAMPLE_QUEUE", "celery")
CELERY_WORKER_PREFETCH_MULTIPLIER = 1

# The checkpoints live in DATABASES["default"], next to the orders they track.
CELERY_RESUMABLE_STORE_URL = "django"
# `manage.py migrate` creates the checkpoint table (the celery_resumable app above).
CELERY_RESUMABLE_CREATE_TABLES = False
