"""What a task's state says while its store is down, and when its URL cannot work."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from celery import Celery

from tests.integration.conftest import DeploymentFactory, fresh_table
from tests.integration.harness import wait_for
from tests.services import POSTGRES_URL, REDIS_BACKEND_URL, require

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

BACKEND = REDIS_BACKEND_URL


def results(broker: str) -> Celery:
    """A client reading task states from the result backend of the deployments below."""
    return Celery("store_down_results", broker=broker, backend=BACKEND)


def test_a_task_deferred_while_the_store_is_down_shows_retry_and_why(
    deploy: DeploymentFactory,
) -> None:
    # Given a worker whose checkpoint store refuses connections (nothing listens there)
    require("postgres")
    down = sa.engine.make_url(POSTGRES_URL).set(host="127.0.0.1", port=9)
    deployment = deploy(
        "redis",
        store=down.render_as_string(hide_password=False),
        events=POSTGRES_URL,
        backend=BACKEND,
        settings={"resumable_table_name": fresh_table()},
    )
    deployment.start_worker()

    # When a task arrives
    task_id = deployment.send("three_steps", 10, 0.0)
    result = results(deployment.broker).AsyncResult(task_id)

    # Then, while it waits for the store, its state says so and why, not PENDING
    wait_for(lambda: result.state == "RETRY", 20, "the task to show RETRY")
    assert type(result.info).__name__ == "CheckpointStoreError"
    assert "the server at 127.0.0.1:9 refused the connection: is it running?" in str(result.info)
    assert "resumable_store_url" in str(result.info)
    assert f"[{task_id}] deferred" in deployment.logs()
    assert deployment.events(task_id) == []


def test_a_missing_database_fails_the_task_at_once(deploy: DeploymentFactory) -> None:
    # Given a worker whose store URL names a database that does not exist
    require("postgres")
    missing = sa.engine.make_url(POSTGRES_URL).set(database="nosuchdb")
    deployment = deploy(
        "redis",
        store=missing.render_as_string(hide_password=False),
        events=POSTGRES_URL,
        backend=BACKEND,
        settings={"resumable_table_name": fresh_table()},
    )
    deployment.start_worker()

    # When a task arrives
    started = time.monotonic()
    task_id = deployment.send("three_steps", 10, 0.0)
    result = results(deployment.broker).AsyncResult(task_id)

    # Then it fails at once with the reason, never deferred as if the server restarted
    wait_for(lambda: result.state == "FAILURE", 20, "the task to fail")
    assert time.monotonic() - started < 20
    assert type(result.result).__name__ == "CheckpointStoreError"
    assert "the database 'nosuchdb' does not exist" in str(result.result)
    assert f"[{task_id}] deferred" not in deployment.logs()
    assert deployment.events(task_id) == []
