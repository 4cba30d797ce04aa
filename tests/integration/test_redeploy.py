"""A warm shutdown interrupts running tasks at a boundary; the next worker finishes them."""

from __future__ import annotations

import signal
from collections import Counter
from datetime import UTC, datetime

import pytest

from celery_resumable import CheckpointStore
from tests.integration.conftest import DeploymentFactory
from tests.integration.harness import HARD_KILL_SETTINGS, Deployment, wait_for

COUNT = 300
DELAY = 0.02
BROKERS = [
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
]


def assert_finished_once(deployment: Deployment, task_id: str, repeats: int = 1) -> None:
    """Every item recorded, at most ``repeats`` twice, first and last steps once, no retry."""
    items = deployment.items(task_id)
    counts = Counter(items)
    assert set(counts) == set(range(COUNT)), "some items were never processed"
    assert sum(counts.values()) - COUNT <= repeats, f"items repeated: {counts.most_common(3)}"
    assert len(deployment.events(task_id, "prepare")) == 1
    assert len(deployment.events(task_id, "finish")) == 1
    assert {row.retries for row in deployment.events(task_id)} == {0}


def interrupt_mid_cursor(
    deployment: Deployment, pool: str, signum: int, exit_within: float = 5.0, **worker_env: str
) -> str:
    # Given a worker running a three-step task in the middle of its cursor step
    first = deployment.start_worker(pool=pool, **worker_env)
    task_id = deployment.send("three_steps", COUNT, DELAY)
    wait_for(lambda: len(deployment.items(task_id)) >= 30, 30, "the cursor step to start")

    # When the worker is told to stop
    signalled = datetime.now(UTC)
    seconds = first.stop(signum)

    # Then the task saved at once, and the worker exits without waiting for the task
    assert seconds < exit_within, f"worker took {seconds:.1f}s to stop"
    assert len(deployment.items(task_id)) < COUNT
    checkpoint = CheckpointStore(deployment.store).get(task_id)
    assert checkpoint is not None
    assert checkpoint.status == "interrupted"
    assert checkpoint.current_step == "process"
    assert checkpoint.interruptions == 1
    saved_after = (checkpoint.updated_at - signalled).total_seconds()
    assert saved_after < 1.0, f"checkpoint saved {saved_after:.2f}s after the signal"
    return task_id


def finish_on_second_worker(deployment: Deployment, task_id: str, pool: str) -> None:
    deployment.start_worker(pool=pool)
    wait_for(lambda: deployment.events(task_id, "finish"), 60, "the task to finish")
    assert_finished_once(deployment, task_id)
    checkpoint = CheckpointStore(deployment.store).get(task_id)
    assert checkpoint is not None
    assert checkpoint.status == "completed"


@pytest.mark.parametrize(
    ("broker", "pool"),
    [
        pytest.param("redis", "prefork", marks=pytest.mark.redis),
        pytest.param("redis", "threads", marks=pytest.mark.redis),
        pytest.param("redis", "solo", marks=pytest.mark.redis),
        pytest.param("rabbitmq", "prefork", marks=pytest.mark.rabbitmq),
    ],
)
def test_warm_shutdown_interrupts_and_next_worker_resumes(
    deploy: DeploymentFactory, broker: str, pool: str
) -> None:
    deployment = deploy(broker)
    task_id = interrupt_mid_cursor(deployment, pool, signal.SIGTERM)
    finish_on_second_worker(deployment, task_id, pool)


@pytest.mark.redis
def test_soft_shutdown_with_remapped_sigterm_interrupts_before_the_wait(
    deploy: DeploymentFactory,
) -> None:
    # Celery sleeps out the whole soft timeout; the task must not run through it.
    deployment = deploy("redis", settings={"worker_soft_shutdown_timeout": 2.0})
    task_id = interrupt_mid_cursor(
        deployment, "prefork", signal.SIGTERM, exit_within=7.0, REMAP_SIGTERM="SIGQUIT"
    )
    finish_on_second_worker(deployment, task_id, "prefork")


@pytest.mark.parametrize("broker", BROKERS)
def test_hard_kill_resumes_from_the_last_periodic_write(
    deploy: DeploymentFactory, broker: str
) -> None:
    # Given short leases, a short Redis visibility timeout and a write every half second
    interval = 0.5
    deployment = deploy(
        broker,
        settings={**HARD_KILL_SETTINGS, "resumable_checkpoint_interval": interval},
    )
    first = deployment.start_worker()
    task_id = deployment.send("three_steps", COUNT, DELAY)
    wait_for(lambda: len(deployment.items(task_id)) >= 60, 30, "the cursor step to start")

    # When the whole worker is killed with SIGKILL
    first.kill_all()
    checkpoint = CheckpointStore(deployment.store).get(task_id)
    assert checkpoint is not None and checkpoint.status == "running"
    assert isinstance(checkpoint.cursor, int)
    done_before = len(deployment.items(task_id))

    # Then the next worker resumes from the last write once the message comes back
    deployment.start_worker()
    wait_for(lambda: deployment.events(task_id, "finish"), 60, "the task to finish")
    repeated = len(deployment.items(task_id)) - COUNT
    assert repeated == done_before - checkpoint.cursor
    assert repeated <= interval / DELAY + 2, f"{repeated} items repeated"
    counts = Counter(deployment.items(task_id))
    assert set(counts) == set(range(COUNT))
    assert len(deployment.events(task_id, "prepare")) == 1


@pytest.mark.redis
def test_duplicate_delivery_runs_one_at_a_time(deploy: DeploymentFactory) -> None:
    # Given two workers and the same task published twice under one id
    deployment = deploy("redis", settings={"resumable_lease_seconds": 2.0})
    deployment.start_worker()
    deployment.start_worker()
    task_id = deployment.send("three_steps", COUNT, DELAY)
    deployment.send("three_steps", COUNT, DELAY, task_id=task_id)

    # When both deliveries have been handled
    wait_for(lambda: deployment.events(task_id, "finish"), 60, "the task to finish")
    logs = wait_for(
        lambda: "already completed" in deployment.logs() and deployment.logs(),
        30,
        "the second delivery to be skipped",
    )

    # Then the body ran once: every item once, no concurrent second run
    assert "is running elsewhere" in logs
    assert Counter(deployment.items(task_id)) == Counter(range(COUNT))
    assert len(deployment.events(task_id, "prepare")) == 1
    assert len(deployment.events(task_id, "finish")) == 1


@pytest.mark.redis
def test_max_runtime_requeues_and_still_finishes(deploy: DeploymentFactory) -> None:
    # Given runs limited to one second and a task of about six seconds
    deployment = deploy("redis", settings={"resumable_max_runtime": 1.0})
    deployment.start_worker()

    # When it runs
    task_id = deployment.send("three_steps", COUNT, DELAY)
    wait_for(lambda: deployment.events(task_id, "finish"), 60, "the task to finish")

    # Then it yielded several times and processed every item once
    checkpoint = CheckpointStore(deployment.store).get(task_id)
    assert checkpoint is not None and checkpoint.status == "completed"
    assert checkpoint.interruptions >= 3
    assert_finished_once(deployment, task_id, repeats=0)


@pytest.mark.redis
def test_soft_shutdown_ends_once_every_task_went_back_on_the_queue(
    deploy: DeploymentFactory,
) -> None:
    # Given a soft shutdown timeout of twenty seconds and a resumable task mid-cursor
    deployment = deploy("redis", settings={"worker_soft_shutdown_timeout": 20.0})

    # When the worker is stopped the soft way, the task saves and goes back on the queue,
    # and the worker leaves the soft wait then, not after twenty seconds
    task_id = interrupt_mid_cursor(
        deployment, "prefork", signal.SIGTERM, exit_within=5.0, REMAP_SIGTERM="SIGQUIT"
    )
    assert "no task runs any more" in deployment.logs()

    # Then the next worker resumes it, repeating at most one item
    finish_on_second_worker(deployment, task_id, "prefork")
