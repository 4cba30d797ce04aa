"""An in-process Celery app with a SQLite checkpoint store, for eager runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from celery_resumable import CheckpointStore, checkpoint_store
from celery_resumable._worker import clear_shutdown


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Celery]:
    """A Celery app whose resumable tasks checkpoint to a SQLite file of this test."""
    celery_app = Celery("unit", broker="memory://", backend="cache+memory://")
    celery_app.conf.update(
        resumable_store_url=f"sqlite:///{tmp_path / 'checkpoints.sqlite3'}",
        resumable_checkpoint_interval=None,
        task_store_eager_result=False,
    )
    yield celery_app
    clear_shutdown()
    celery_app.close()


@pytest.fixture
def checkpoints(app: Celery) -> CheckpointStore:
    """The app's checkpoint store."""
    return checkpoint_store(app)
