"""gevent and eventlet pools: a redeploy interrupts and resumes; leases renew in greenlets."""

from __future__ import annotations

import signal
from collections import Counter

import pytest

from celery_resumable import CheckpointStore
from tests.integration.conftest import DeploymentFactory
from tests.integration.harness import wait_for
from tests.integration.test_redeploy import finish_on_second_worker, interrupt_mid_cursor

pytestmark = pytest.mark.redis

POOLS = ["gevent", "eventlet"]


@pytest.fixture(params=POOLS)
def pool(request: pytest.FixtureRequest) -> str:
    """A green pool whose package is installed."""
    pytest.importorskip(request.param, reason=f"{request.param} is not installed")
    return str(request.param)


def test_warm_shutdown_interrupts_a_greenlet_and_the_next_worker_resumes(
    deploy: DeploymentFactory, pool: str
) -> None:
    deployment = deploy("redis")
    task_id = interrupt_mid_cursor(deployment, pool, signal.SIGTERM)
    finish_on_second_worker(deployment, task_id, pool)


def test_leases_are_renewed_while_a_greenlet_runs(deploy: DeploymentFactory, pool: str) -> None:
    # Given leases of one second, no periodic writes, and a task of about four seconds
    deployment = deploy(
        "redis",
        settings={"resumable_lease_seconds": 1.0, "resumable_checkpoint_interval": None},
    )
    deployment.start_worker(pool=pool, concurrency=4)

    # When it runs in a greenlet
    task_id = deployment.send("three_steps", 200, 0.02)
    wait_for(lambda: deployment.events(task_id, "finish"), 60, "the task to finish")

    # Then only renewals kept its lease: it never stopped for want of one
    assert "lease_expired" not in deployment.logs()
    assert Counter(deployment.items(task_id)) == Counter(range(200))
    checkpoint = CheckpointStore(deployment.store).get(task_id)
    assert checkpoint is not None
    assert (checkpoint.status, checkpoint.interruptions) == ("completed", 0)
