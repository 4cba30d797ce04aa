"""Celery's own retry resumes a resumable task where it failed."""

from __future__ import annotations

from collections import Counter

import pytest

from celery_resumable import CheckpointStore
from tests.integration.conftest import DeploymentFactory
from tests.integration.harness import wait_for


@pytest.mark.parametrize(
    "broker",
    [
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    ],
)
def test_retry_processes_only_the_remaining_items(deploy: DeploymentFactory, broker: str) -> None:
    # Given a task that fails at item 120 of 200 on its first attempt and calls self.retry
    deployment = deploy(broker, settings={"resumable_checkpoint_interval": None})
    deployment.start_worker()

    # When it runs and retries
    task_id = deployment.send("fails_once", 200, 120)
    wait_for(lambda: deployment.events(task_id, "finish"), 60, "the task to finish")

    # Then the retry processed only the items after the failure, and it is retry 1
    items = deployment.events(task_id, "item")
    assert Counter(row.item for row in items) == Counter(range(200))
    assert {row.item for row in items if row.retries == 0} == set(range(120))
    assert {row.item for row in items if row.retries == 1} == set(range(120, 200))
    assert [row.retries for row in deployment.events(task_id, "prepare")] == [0]
    assert [row.retries for row in deployment.events(task_id, "finish")] == [1]
    checkpoint = CheckpointStore(deployment.store).get(task_id)
    assert checkpoint is not None and checkpoint.status == "completed"
