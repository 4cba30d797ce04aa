"""An in-process Celery app with a SQLite checkpoint store, for eager runs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from celery import Celery

from celery_resumable import CheckpointStore, checkpoint_store
from celery_resumable.worker.notice import clear_shutdown


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


@pytest.fixture
def rows(store_url: str) -> Iterator[tuple[sa.Engine, sa.Table]]:
    """The caller's own table, in the same database as the checkpoints."""
    engine = sa.create_engine(store_url)
    table = sa.Table(
        f"rows_{uuid.uuid4().hex[:10]}",
        sa.MetaData(),
        sa.Column("item", sa.Integer, primary_key=True, autoincrement=False),
    )
    table.create(engine)
    yield engine, table
    table.drop(engine)
    engine.dispose()
