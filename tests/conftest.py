"""Fixtures shared by the unit and integration tests."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from celery_resumable import CheckpointStore
from tests.services import MYSQL_URL, POSTGRES_URL, require

# For tests/unit/test_pytest_plugin.py, which runs pytest on a user's tests.
pytest_plugins = ["pytester"]


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of each supported database; the server ones skip (or fail in CI) when down.

    The server cases are marked ``postgres`` and ``mysql``: ``pytest tests/unit -m "not
    postgres and not mysql"`` runs the unit tier without any server.
    """
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'checkpoints.sqlite3'}"
    require(request.param)
    return POSTGRES_URL if request.param == "postgres" else MYSQL_URL


@pytest.fixture
def table_name() -> str:
    """A checkpoint table name of this test alone."""
    return f"ckpt_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(store_url: str, table_name: str) -> Iterator[CheckpointStore]:
    """A checkpoint store on each database, its table dropped after the test."""
    checkpoint_store = CheckpointStore(store_url, table_name)
    yield checkpoint_store
    drop_table(store_url, table_name)


def drop_table(url: str, table_name: str) -> None:
    """Drop ``table_name`` if it exists."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP TABLE IF EXISTS {table_name}"))
    finally:
        engine.dispose()


@pytest.fixture
def unique_id() -> Callable[[], str]:
    """Make task ids unique to the test."""
    return lambda: str(uuid.uuid4())


def pytest_collection_modifyitems(items: list[Any]) -> None:
    """Run the fast unit tests first."""
    items.sort(key=lambda item: "integration" in str(item.fspath))
