"""Guarantees at the edges, on real workers: expiry, replace, unreachable stores, retry."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
from celery import Celery

from celery_resumable import CheckpointStore
from tests.conftest import drop_table
from tests.integration.conftest import DeploymentFactory, fresh_table, proxied
from tests.integration.harness import APP, ROOT, TcpProxy, wait_for
from tests.services import POSTGRES_URL, REDIS_BACKEND_URL

pytestmark = pytest.mark.redis

COUNT = 300
DELAY = 0.02
BACKEND = REDIS_BACKEND_URL


def results(broker: str) -> Celery:
    """A client reading task states from the result backend of the deployments below."""
    return Celery("edge_results", broker=broker, backend=BACKEND)


def test_an_interrupted_task_does_not_expire_in_the_queue(deploy: DeploymentFactory) -> None:
    # Given a task sent with an expiry, interrupted by a deploy before it finished
    deployment = deploy("redis")
    first = deployment.start_worker()
    sent_at = time.monotonic()
    sent = deployment.client.send_task(
        f"{APP}.three_steps", args=(COUNT, DELAY), queue=deployment.queue, expires=6
    )
    task_id = str(sent.id)
    wait_for(lambda: len(deployment.items(task_id)) >= 30, 30, "the cursor step to start")
    first.stop()

    # When the next worker starts after the expiry has passed
    time.sleep(max(0.0, 6.5 - (time.monotonic() - sent_at)))
    deployment.start_worker()

    # Then the task still resumes and finishes
    wait_for(lambda: deployment.events(task_id, "finish"), 60, "the task to finish")
    assert set(deployment.items(task_id)) == set(range(COUNT))


def test_a_self_replacing_task_runs_every_replacement_fresh(deploy: DeploymentFactory) -> None:
    # Given a task that replaces itself page after page, under one task id
    deployment = deploy("redis")
    deployment.start_worker()

    # When it runs on a worker
    task_id = deployment.send("paginate", 0, 3)

    # Then every page was fetched once, and the last replacement completed the id
    wait_for(lambda: deployment.events(task_id, "finish"), 30, "the last page")
    assert [row.item for row in deployment.events(task_id, "page")] == [0, 1, 2, 3]
    checkpoint = CheckpointStore(deployment.store).get(task_id)
    assert checkpoint is not None and checkpoint.status == "completed"


@pytest.mark.postgres
def test_an_unreachable_store_defers_the_task_then_fails_it(
    deploy: DeploymentFactory, proxy: TcpProxy
) -> None:
    # Given a worker whose checkpoint store cannot be reached
    proxy.cut()
    deployment = deploy(
        "redis",
        store=proxied(proxy.port),
        events=POSTGRES_URL,
        backend=BACKEND,
        settings={"resumable_store_wait": 4.0, "resumable_table_name": fresh_table()},
    )
    deployment.start_worker()

    # When a task arrives
    started = time.monotonic()
    task_id = deployment.send("three_steps", 10, 0.0)
    result = results(deployment.broker).AsyncResult(task_id)
    wait_for(lambda: result.state == "FAILURE", 40, "the task to fail")

    # Then it was deferred with backoff for the store wait, never run, then failed
    assert 4.0 <= time.monotonic() - started < 30
    assert type(result.result).__name__ == "CheckpointStoreError"
    assert deployment.logs().count(f"[{task_id}] deferred") >= 2
    assert deployment.events(task_id) == []


def test_a_permanent_store_error_fails_the_task_at_once(deploy: DeploymentFactory) -> None:
    # Given a store whose table does not exist and may not be created
    deployment = deploy("redis", backend=BACKEND, settings={"resumable_create_tables": False})
    deployment.start_worker()

    # When a task arrives
    task_id = deployment.send("three_steps", 10, 0.0)
    result = results(deployment.broker).AsyncResult(task_id)

    # Then it fails at once, without a deferral loop and without running
    wait_for(lambda: result.state == "FAILURE", 20, "the task to fail")
    assert "no such table" in str(result.result)
    assert f"[{task_id}] deferred" not in deployment.logs()
    assert deployment.events(task_id) == []


@pytest.mark.postgres
def test_a_run_cut_off_from_the_database_stops_when_its_lease_may_have_expired(
    deploy: DeploymentFactory, proxy: TcpProxy
) -> None:
    # Given a run whose worker reaches the store through a path that can be cut
    lease = 2.0
    deployment = deploy(
        "redis",
        store=proxied(proxy.port),
        events=POSTGRES_URL,
        settings={"resumable_lease_seconds": lease, "resumable_table_name": fresh_table()},
    )
    deployment.start_worker()
    task_id = deployment.send("three_steps", COUNT, DELAY)
    wait_for(lambda: len(deployment.items(task_id)) >= 30, 30, "the cursor step to start")

    # When this worker alone loses the database for longer than the lease
    proxy.cut()
    time.sleep(lease + 1.5)
    stopped_at = len(deployment.items(task_id))
    time.sleep(1.5)

    # Then the run stopped: it cannot know that no other run took the task
    assert len(deployment.items(task_id)) == stopped_at < COUNT
    assert "interrupted (lease_expired)" in deployment.logs()

    # And once the database is back, the task resumes and finishes with nothing lost
    proxy.restore()
    wait_for(lambda: deployment.events(task_id, "finish"), 90, "the task to finish")
    counts = Counter(deployment.items(task_id))
    assert set(counts) == set(range(COUNT))


def test_retry_sends_a_failed_task_again_and_it_resumes(
    deploy: DeploymentFactory, tmp_path: Path
) -> None:
    # Given a task that failed for good half-way through its cursor
    deployment = deploy("redis", settings={"resumable_checkpoint_interval": None})
    deployment.start_worker()
    flag = tmp_path / "fixed"
    task_id = deployment.send("fails_until_fixed", 200, 120, str(flag))
    store = CheckpointStore(deployment.store)
    wait_for(
        lambda: (c := store.get(task_id)) is not None and c.status == "failed", 30, "the failure"
    )

    # When the cause is fixed and an operator retries it from the command line
    flag.touch()
    sent = subprocess.run(
        [sys.executable, "-m", "celery", "-A", APP, "resumable", "retry", task_id],
        cwd=ROOT, env={**os.environ, **deployment.env}, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.strip() == f"{task_id}: sent"

    # Then it resumed where it failed and finished
    wait_for(lambda: deployment.events(task_id, "finish"), 30, "the task to finish")
    assert Counter(deployment.items(task_id)) == Counter(range(200))
    assert len(deployment.events(task_id, "prepare")) == 1
    again = subprocess.run(
        [sys.executable, "-m", "celery", "-A", APP, "resumable", "retry", task_id],
        cwd=ROOT, env={**os.environ, **deployment.env}, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert again.returncode == 1
    assert "completed; nothing to retry" in again.stdout


@pytest.mark.postgres
def test_a_late_duplicate_is_skipped_from_the_partitions(deploy: DeploymentFactory) -> None:
    # Given a task completed on a worker whose completed runs go to time partitions, its
    # completed checkpoint row since deleted by purge (it is known from its _done row)
    table = fresh_table()
    settings = {"resumable_partitions": True, "resumable_table_name": table}
    deployment = deploy("redis", store=POSTGRES_URL, settings=settings)
    deployment.start_worker()
    task_id = deployment.send("no_steps")
    wait_for(lambda: deployment.events(task_id, "ran"), 30, "the task to run")
    store = CheckpointStore(POSTGRES_URL, table, partitions=True)
    try:
        completed = lambda: getattr(store.get(task_id), "status", None) == "completed"  # noqa: E731
        wait_for(completed, 30, "the completion")
        with store.engine.begin() as connection:
            connection.execute(
                sa.text(f"UPDATE {table} SET updated_at = updated_at - interval '1 hour'")
            )
        store.purge()
        with store.engine.connect() as connection:
            assert connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() == 0

        # When the same id is delivered again
        deployment.send("no_steps", task_id=task_id)

        # Then the duplicate is skipped: the body ran once
        wait_for(
            lambda: "already completed" in deployment.logs(), 30, "the duplicate to be skipped"
        )
        assert len(deployment.events(task_id, "ran")) == 1
    finally:
        store.engine.dispose()
        drop_table(POSTGRES_URL, table)
        drop_table(POSTGRES_URL, f"{table}_done")


def test_a_duplicate_of_a_completed_task_without_steps_is_skipped(
    deploy: DeploymentFactory,
) -> None:
    # Given a task that uses no step, completed on a worker
    deployment = deploy("redis")
    deployment.start_worker()
    task_id = deployment.send("no_steps")
    wait_for(lambda: deployment.events(task_id, "ran"), 30, "the task to run")

    # When the same id is delivered again
    deployment.send("no_steps", task_id=task_id)

    # Then the duplicate is skipped: the body ran once
    wait_for(lambda: "already completed" in deployment.logs(), 30, "the duplicate to be skipped")
    assert len(deployment.events(task_id, "ran")) == 1
