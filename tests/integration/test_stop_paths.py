"""Every way a worker is told to stop reaches a running task; pool recycling does not."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

from celery_resumable import CheckpointStore
from tests.integration.conftest import DeploymentFactory
from tests.integration.harness import Deployment, Worker, wait_for
from tests.integration.test_redeploy import COUNT, finish_on_second_worker

pytestmark = pytest.mark.redis

# About nine seconds of work: a worker that waits for the task instead of interrupting
# it takes far longer to stop than one whose task saves at the next item.
DELAY = 0.03
EXIT_WITHIN = 5.0
SPAWN = {"worker_pool_start_method": "spawn"}


def start_long_task(deployment: Deployment, worker: Worker) -> str:
    task_id = deployment.send("three_steps", COUNT, DELAY)
    wait_for(lambda: len(deployment.items(task_id)) >= 30, 60, "the cursor step to start")
    assert not worker.exited()
    return task_id


def stop_and_time(worker: Worker, tell_to_stop: Callable[[], None]) -> float:
    started = time.monotonic()
    tell_to_stop()
    worker.wait(60)
    return time.monotonic() - started


def assert_interrupted_once(deployment: Deployment, task_id: str) -> None:
    assert len(deployment.items(task_id)) < COUNT
    checkpoint = CheckpointStore(deployment.store).get(task_id)
    assert checkpoint is not None
    assert (checkpoint.status, checkpoint.current_step) == ("interrupted", "process")
    assert checkpoint.interruptions == 1


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_remote_shutdown_command_interrupts_and_next_worker_resumes(
    deploy: DeploymentFactory, pool: str
) -> None:
    # Given a worker running a long task in the middle of its cursor step
    deployment = deploy("redis")
    first = deployment.start_worker(pool=pool)
    task_id = start_long_task(deployment, first)

    # When the worker is told to stop with the remote-control `shutdown` command
    seconds = stop_and_time(
        first, lambda: deployment.client.control.shutdown(destination=[first.nodename])
    )

    # Then the task saved and went back on the queue, so the worker did not wait for it
    assert seconds < EXIT_WITHIN, f"worker took {seconds:.1f}s to stop"
    assert "Got shutdown from remote" in first.output()
    assert_interrupted_once(deployment, task_id)
    finish_on_second_worker(deployment, task_id, pool)


@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_sighup_restart_interrupts_and_the_restarted_worker_resumes(
    deploy: DeploymentFactory, pool: str
) -> None:
    # Given a worker (not on a terminal, so SIGHUP restarts it) running a long task
    deployment = deploy("redis")
    worker = deployment.start_worker(pool=pool, console_script=True)
    task_id = start_long_task(deployment, worker)
    store = CheckpointStore(deployment.store)

    # When it receives SIGHUP
    worker.send_signal(signal.SIGHUP)

    # Then the task saved and went back on the queue at once, without waiting to finish
    checkpoint = wait_for(
        lambda: (found := store.get(task_id)) is not None and found.interruptions >= 1 and found,
        3,
        "the task to be interrupted",
        every=0.05,
    )
    assert checkpoint.current_step == "process"
    assert len(deployment.items(task_id)) < COUNT

    # And the same worker process, restarted, resumes it and finishes every item once
    wait_for(lambda: worker.output().count(" ready.") >= 2, 60, "the worker to restart")
    wait_for(lambda: deployment.events(task_id, "finish"), 60, "the task to finish")
    assert not worker.exited()
    finished = store.get(task_id)
    assert finished is not None
    assert (finished.status, finished.interruptions) == ("completed", 1)
    items = deployment.items(task_id)
    assert set(items) == set(range(COUNT))
    assert len(items) - COUNT <= 1, "more than one item repeated"
    assert len(deployment.events(task_id, "prepare")) == 1
    worker.stop()


def test_spawned_pool_processes_get_the_notice(deploy: DeploymentFactory) -> None:
    # Given a prefork worker whose pool processes are spawned, not forked
    deployment = deploy("redis", settings=SPAWN)
    first = deployment.start_worker()
    task_id = start_long_task(deployment, first)

    # When the worker receives SIGTERM
    seconds = stop_and_time(first, lambda: first.send_signal(signal.SIGTERM))

    # Then the spawned process saw the notice: the task saved and went back on the queue
    assert seconds < EXIT_WITHIN, f"worker took {seconds:.1f}s to stop"
    assert_interrupted_once(deployment, task_id)
    finish_on_second_worker(deployment, task_id, "prefork")


def test_recycling_a_pool_process_is_not_a_stop(deploy: DeploymentFactory) -> None:
    # Given a worker whose spawned pool processes are replaced after each task
    deployment = deploy("redis", settings={**SPAWN, "worker_max_tasks_per_child": 1})
    first = deployment.start_worker()
    short = deployment.send("three_steps", 3, 0.0)
    wait_for(lambda: deployment.events(short, "finish"), 60, "the short task to finish")

    # When the next task runs in the replacement process
    task_id = start_long_task(deployment, first)

    # Then the recycling did not count as a stop: nothing was interrupted
    pids = {row.pid for row in deployment.events(short)} | {
        row.pid for row in deployment.events(task_id)
    }
    assert len(pids) == 2, "the pool process was not replaced between the tasks"
    checkpoint = CheckpointStore(deployment.store).get(short)
    assert checkpoint is not None
    assert (checkpoint.status, checkpoint.interruptions) == ("completed", 0)

    # And a real stop still reaches the replacement process
    seconds = stop_and_time(first, lambda: first.send_signal(signal.SIGTERM))
    assert seconds < EXIT_WITHIN, f"worker took {seconds:.1f}s to stop"
    assert_interrupted_once(deployment, task_id)
    finish_on_second_worker(deployment, task_id, "prefork")
