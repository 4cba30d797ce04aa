"""The checkpoint store going away during a run loses nothing."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from celery_resumable import CheckpointStore
from celery_resumable.store.records import State
from tests.integration.conftest import DeploymentFactory, fresh_table, proxied
from tests.integration.harness import TcpProxy, wait_for
from tests.services import POSTGRES_URL

pytestmark = pytest.mark.postgres

COUNT = 300
DELAY = 0.02
TABLE = "celery_resumable_checkpoints"


@pytest.mark.redis
def test_run_goes_on_while_the_store_is_down(deploy: DeploymentFactory, proxy: TcpProxy) -> None:
    # Given a task checkpointing through a path to PostgreSQL that can be cut
    table = fresh_table()
    deployment = deploy(
        "redis",
        store=proxied(proxy.port),
        events=POSTGRES_URL,
        settings={"resumable_table_name": table},
    )
    deployment.start_worker()
    task_id = deployment.send("three_steps", COUNT, DELAY)
    wait_for(lambda: len(deployment.items(task_id)) >= 30, 30, "the cursor step to start")

    # When the store is unreachable for two seconds mid-run
    proxy.cut()
    time.sleep(2.0)
    proxy.restore()

    # Then the task went on, and finished with every item once
    wait_for(lambda: deployment.events(task_id, "finish"), 60, "the task to finish")
    assert Counter(deployment.items(task_id)) == Counter(range(COUNT))
    assert "checkpoint write failed; the task goes on" in deployment.logs()
    checkpoint = CheckpointStore(POSTGRES_URL, table).get(task_id)
    assert checkpoint is not None and checkpoint.status == "completed"


@pytest.mark.redis
def test_interrupt_with_the_store_down_requeues_and_resumes_from_the_last_write(
    deploy: DeploymentFactory, proxy: TcpProxy
) -> None:
    # Given a task mid-cursor whose store becomes unreachable; the lease it cannot give
    # up then has to expire before the next run may take the task
    deployment = deploy(
        "redis",
        store=proxied(proxy.port),
        events=POSTGRES_URL,
        settings={"resumable_lease_seconds": 3.0, "resumable_table_name": fresh_table()},
    )
    first = deployment.start_worker()
    task_id = deployment.send("three_steps", COUNT, DELAY)
    wait_for(lambda: len(deployment.items(task_id)) >= 60, 30, "the cursor step to start")
    proxy.cut()

    # When the worker is stopped while the store is down
    seconds = first.stop()

    # Then the message still went back on the queue after a brief retry
    assert seconds < 10
    assert "interrupted run could not save" in first.output()
    proxy.restore()
    deployment.start_worker()
    wait_for(lambda: deployment.events(task_id, "finish"), 60, "the task to finish")
    counts = Counter(deployment.items(task_id))
    assert set(counts) == set(range(COUNT)), "an item was lost"
    assert len(deployment.events(task_id, "prepare")) == 1


def test_a_dropped_connection_is_replaced_without_a_ping(proxy: TcpProxy) -> None:
    # Given a store whose pooled connection the database side dropped (a restart)
    store = CheckpointStore(proxied(proxy.port), fresh_table())
    try:
        store.claim("task-1", "t", "owner", 60)
        proxy.cut()
        proxy.restore()

        # When the run writes next
        saved = store.save("task-1", "owner", State((), "loop", 5, 0), lease_seconds=60)

        # Then the write went through on a new connection, without an error
        assert saved
        checkpoint = store.get("task-1")
        assert checkpoint is not None and checkpoint.cursor == 5
    finally:
        store.table.drop(store.engine)


@pytest.mark.redis
def test_an_interrupt_whose_answer_is_lost_still_requeues_the_task(
    deploy: DeploymentFactory, proxy: TcpProxy
) -> None:
    # Given a task mid-cursor on a worker whose store is reached through the proxy
    deployment = deploy(
        "redis",
        store=proxied(proxy.port),
        events=POSTGRES_URL,
        settings={"resumable_table_name": fresh_table()},
    )
    first = deployment.start_worker()
    task_id = deployment.send("three_steps", COUNT, DELAY)
    wait_for(lambda: len(deployment.items(task_id)) >= 30, 30, "the cursor step to start")

    # When the worker is stopped and the interrupt write's answer is lost after it committed
    proxy.fail_on(b"interrupted", "after")
    first.stop()
    assert proxy.struck.is_set()

    # Then the task went back on the queue all the same, and a new worker finishes it
    deployment.start_worker()
    wait_for(lambda: deployment.events(task_id, "finish"), 60, "the task to finish")
    assert set(deployment.items(task_id)) == set(range(COUNT)), "an item was lost"
    assert "another run took over" not in first.output()
