"""What dashboards show of a running task: celery-progress's bar data and Flower's result API."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.result import AsyncResult

from tests.integration.conftest import DeploymentFactory
from tests.integration.harness import APP, ROOT, Deployment, wait_for
from tests.services import REDIS_URL

pytestmark = pytest.mark.redis

celery_progress = pytest.importorskip("celery_progress.backend")

COUNT = 400
DELAY = 0.05


@pytest.fixture
def running(deploy: DeploymentFactory) -> Iterator[tuple[Deployment, Celery, str]]:
    """A task running on a real worker, its state on the Redis result backend."""
    deployment = deploy("redis", backend=REDIS_URL)
    deployment.start_worker()
    results = Celery("progress_results", broker=REDIS_URL, backend=REDIS_URL)
    task_id = deployment.send("three_steps", COUNT, DELAY)
    wait_for(lambda: len(deployment.items(task_id)) >= 20, 30, "the cursor step to start")
    yield deployment, results, task_id
    results.close()


def _bar(results: Celery, task_id: str) -> dict[str, Any] | None:
    info: dict[str, Any] = celery_progress.Progress(AsyncResult(task_id, app=results)).get_info()
    progress = info.get("progress") or {}
    return info if info["state"] == "PROGRESS" and progress.get("current", 0) > 0 else None


def test_celery_progress_reads_a_bar_of_a_running_task(
    running: tuple[Deployment, Celery, str],
) -> None:
    # Given a resumable task running on a worker, with a Redis result backend
    _, results, task_id = running

    # When celery-progress reads it, as its view behind the progress bar does
    info = wait_for(lambda: _bar(results, task_id), 30, "a PROGRESS state with items done")

    # Then it gets a bar it can draw: items done of the total, and the step in progress
    progress = info["progress"]
    assert info["complete"] is False
    assert progress["pending"] is False
    assert progress["total"] == COUNT
    assert 0 < progress["current"] < COUNT
    assert progress["percent"] == round(100 * progress["current"] / COUNT, 2)
    assert progress["description"] == f"step process, cursor {progress['cursor']}"
    assert progress["step"] == "process"
    assert progress["finished_steps"] == ["prepare"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body: bytes = response.read()
            return body
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


@pytest.fixture
def flower(running: tuple[Deployment, Celery, str], tmp_path: Path) -> Iterator[str]:
    """``celery flower`` against the deployment's broker and result backend; its URL."""
    pytest.importorskip("flower")
    deployment, _, _ = running
    port = _free_port()
    log = open(tmp_path / "flower.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", APP, "flower", f"--port={port}",
         "--address=127.0.0.1"],
        cwd=ROOT,
        env={
            **os.environ,
            **deployment.env,
            "PYTHONPATH": str(ROOT),
            "FLOWER_UNAUTHENTICATED_API": "true",
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _get(f"{url}/healthcheck") is not None or process.poll() is not None,
                 30, "flower to listen", every=0.2)  # fmt: skip
        if process.poll() is not None:
            raise AssertionError((tmp_path / "flower.log").read_text())
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def test_flower_result_api_shows_the_state_of_a_running_task_only(
    running: tuple[Deployment, Celery, str], flower: str
) -> None:
    # Given a resumable task running, and its PROGRESS info on the result backend
    _, results, task_id = running
    wait_for(lambda: _bar(results, task_id), 30, "a PROGRESS state with items done")

    # When Flower's result API is asked for it
    body = _get(f"{flower}/api/task/result/{task_id}")
    assert body is not None
    answer = json.loads(body)

    # Then it gives the state, PROGRESS, without the info (Flower shows a result only
    # once the task is ready); the info is AsyncResult(task_id).info
    assert answer == {"task-id": task_id, "state": "PROGRESS"}
    info = AsyncResult(task_id, app=results).info
    assert info["step"] == "process"
    assert info["cursor"] > 0
