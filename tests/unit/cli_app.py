"""A Celery app for the command-line tests; its store URL comes from the environment."""

from __future__ import annotations

import os

from celery import Celery

app = Celery("cli_tests")
app.conf.resumable_store_url = os.environ.get("RESUMABLE_CLI_STORE", "sqlite://")
