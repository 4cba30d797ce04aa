"""An interrupted task keeps its place in chains and chords."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
import sqlalchemy as sa

from celery_resumable import CheckpointStore
from tests.integration.conftest import DeploymentFactory
from tests.integration.harness import ROOT, wait_for
from tests.integration.worker_app import events
from tests.services import REDIS_BACKEND_URL

pytestmark = pytest.mark.redis

COUNT = 200
DELAY = 0.02


def test_chain_and_chord_continue_after_an_interrupt(deploy: DeploymentFactory) -> None:
    # Given a chain and a chord whose resumable members are running mid-cursor
    backend = REDIS_BACKEND_URL
    deployment = deploy("redis", backend=backend)
    first = deployment.start_worker(concurrency=3)
    sent = subprocess.run(
        [sys.executable, "-m", "tests.integration.canvas_client", deployment.broker, backend,
         deployment.queue, str(COUNT), str(DELAY)],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    ids = json.loads(sent.stdout)
    task_ids = [ids["chain"], *ids["chord"]]
    for task_id in task_ids:
        wait_for(lambda t=task_id: len(deployment.items(t)) >= 20, 30, "the tasks to start")

    # When the worker is stopped and a new one takes over
    first.stop(signal.SIGTERM)
    store = CheckpointStore(deployment.store)
    for task_id in task_ids:
        checkpoint = store.get(task_id)
        assert checkpoint is not None
        assert checkpoint.status == "interrupted"
    deployment.start_worker(concurrency=3)

    # Then the chain's next task and the chord's callback run once, with the results
    def collected(tag: str) -> list[int]:
        query = sa.select(events.c.item).where(events.c.kind == f"collect-{tag}")
        with deployment.events_engine.connect() as connection:
            return list(connection.execute(query).scalars())

    wait_for(lambda: collected("chain") and collected("chord"), 60, "the callbacks")
    assert collected("chain") == [COUNT]
    assert collected("chord") == [2 * COUNT]
