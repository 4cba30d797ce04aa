"""A soft time limit that lands while a checkpoint write is on the wire leaves the
worker's connections usable: the run saves or fails, and later tasks run."""

from __future__ import annotations

import time

import pytest

from celery_resumable import CheckpointStore
from tests.faults.obstruction import row_locked
from tests.integration.conftest import DeploymentFactory, fresh_table
from tests.integration.harness import wait_for
from tests.services import MYSQL_URL, POSTGRES_URL, require

pytestmark = pytest.mark.redis

SOFT_LIMIT = 3.0


@pytest.mark.parametrize(
    "server",
    [
        pytest.param("postgres", marks=pytest.mark.postgres),
        # (the tasks record what they did on PostgreSQL, whichever server holds the store)
        pytest.param("mysql", marks=[pytest.mark.mysql, pytest.mark.postgres]),
    ],
)
def test_a_soft_limit_inside_a_write_leaves_the_worker_able_to_run_tasks(
    deploy: DeploymentFactory, server: str
) -> None:
    require(server)
    url = POSTGRES_URL if server == "postgres" else MYSQL_URL
    table = fresh_table()
    # Given a prefork worker whose task writes its checkpoint at every item
    deployment = deploy(
        "redis",
        store=url,
        events=POSTGRES_URL,
        settings={
            "resumable_table_name": table,
            "resumable_checkpoint_interval": 0,
            "task_soft_time_limit": SOFT_LIMIT,
        },
    )
    worker = deployment.start_worker(concurrency=1)
    task_id = deployment.send("three_steps", 10_000, 0.05)
    wait_for(lambda: len(deployment.items(task_id)) >= 5, 30, "the cursor step to start")
    # When another transaction holds the task's row, so that its next write waits on the
    # lock until the soft time limit strikes inside that write
    with row_locked(url, table, task_id):
        held_at = len(deployment.items(task_id))
        wait_for(
            lambda: "Soft time limit" in worker.output(),
            SOFT_LIMIT + 10,
            "the soft time limit",
        )
        assert len(deployment.items(task_id)) <= held_at + 1
        time.sleep(0.5)

    # Then the run's own failed save goes through once the lock is gone
    store = CheckpointStore(url, table)
    wait_for(
        lambda: (found := store.get(task_id)) is not None and found.status == "failed",
        20,
        "the failed save",
    )
    checkpoint = store.get(task_id)
    assert checkpoint is not None and checkpoint.lease_expires_at is None

    # And the next tasks on the same child run and finish
    later = [deployment.send("no_steps") for _ in range(3)]
    for later_id in later:
        wait_for(lambda i=later_id: deployment.events(i, "ran"), 30, "a later task to run")
    assert "another command is already in progress" not in worker.output()
    assert "Packet sequence number wrong" not in worker.output()
