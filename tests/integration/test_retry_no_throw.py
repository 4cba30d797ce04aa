"""``self.retry(throw=False)`` publishes the retry while the body goes on: the retry
must not run beside it."""

from __future__ import annotations

import time

import pytest

from tests.integration.conftest import DeploymentFactory
from tests.integration.harness import wait_for

pytestmark = pytest.mark.redis


def test_a_retry_without_throw_never_runs_beside_the_run_that_asked_for_it(
    deploy: DeploymentFactory,
) -> None:
    # Given two pool processes, and a task that asks for a retry and goes on working
    deployment = deploy("redis")
    deployment.start_worker(concurrency=2)
    task_id = deployment.send("retries_without_throw", 30, 0.05)

    # When the first run finishes (and the retry message has had time to be delivered)
    wait_for(lambda: deployment.events(task_id, "end"), 30, "the first run to end")
    time.sleep(3)

    # Then no run started while another was in its body
    kinds = [row.kind for row in deployment.events(task_id) if row.kind in ("start", "end")]
    running = 0
    for kind in kinds:
        running += 1 if kind == "start" else -1
        assert running <= 1, f"two runs at once: {kinds}"
    assert sorted(deployment.items(task_id)) == list(range(30))
