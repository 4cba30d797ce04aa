"""A hard kill after a committed set_step_cursor_tx resumes exactly after it."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from celery_resumable import CheckpointStore
from tests.conftest import drop_table
from tests.integration.conftest import DeploymentFactory
from tests.integration.harness import HARD_KILL_SETTINGS, wait_for
from tests.services import MYSQL_URL, POSTGRES_URL, require

pytestmark = pytest.mark.redis

COUNT = 200
BATCH = 10


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data.sqlite3'}"
    require(request.param)
    url = POSTGRES_URL if request.param == "postgres" else MYSQL_URL
    for table in ("resumable_test_rows", "resumable_test_events", "celery_resumable_checkpoints"):
        drop_table(url, table)
    return url


def test_hard_kill_after_commit_resumes_exactly_after_it(
    deploy: DeploymentFactory, database: str
) -> None:
    # Given a task inserting rows in batches, each saving its cursor in the same transaction
    deployment = deploy(
        "redis",
        store=database,
        settings={**HARD_KILL_SETTINGS, "resumable_checkpoint_interval": None},
    )
    first = deployment.start_worker()
    task_id = deployment.send("transactional", COUNT, BATCH, 0.2)
    wait_for(lambda: len(deployment.events(task_id, "batch")) >= 4, 30, "a few batches")

    # When the whole worker is killed
    first.kill_all()
    checkpoint = CheckpointStore(database).get(task_id)
    assert checkpoint is not None and isinstance(checkpoint.cursor, int)
    committed = checkpoint.cursor
    first_pids = {row.pid for row in deployment.events(task_id)}

    # Then the next run starts at the committed cursor and every row exists once
    deployment.start_worker()
    wait_for(lambda: deployment.events(task_id, "finish"), 60, "the task to finish")
    batches = [row.item for row in deployment.events(task_id, "batch")]
    assert batches == list(range(0, COUNT, BATCH))
    from tests.integration.worker_app import rows

    with deployment.events_engine.connect() as connection:
        items = (
            connection.execute(
                sa.select(rows.c.item).where(rows.c.task_id == task_id).order_by(rows.c.item)
            )
            .scalars()
            .all()
        )
    assert items == list(range(COUNT))
    resumed = [row for row in deployment.events(task_id, "batch") if row.pid not in first_pids]
    assert resumed[0].item == committed
