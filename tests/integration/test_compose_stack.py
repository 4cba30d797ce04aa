"""The docker-compose stack's own commands, run here against the local services.

Docker is not on the development machines, so the workers' and the producer's commands
from docker-compose.yml run as they are, as processes, with each service's environment
pointed at the test's Redis database and PostgreSQL: the producer sends the long task,
one worker receives it, a restart of that worker (SIGTERM, as ``docker compose restart``
sends) makes it save and re-queue, and the other worker takes the task on: the cursor
advances past the saved one, with ``collect`` still done.

The stack shares that Redis database with the other tests, so its commands get a queue
and worker names of this test alone (``-Q``/``--queue``, ``-n``), and what it left on
Redis is removed by key afterwards; the database is never flushed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from celery_resumable import CheckpointStore
from tests.integration.harness import wait_for
from tests.services import POSTGRES_URL, REDIS_BACKEND_URL, REDIS_URL, require

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (pip install -e '.[test]')")

ROOT = Path(__file__).resolve().parents[2]
SERVICES: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
# The stack's Redis databases (0: the broker, 1: the result backend) become the tests' own.
REDIS_DATABASES = {"/0": REDIS_URL, "/1": REDIS_BACKEND_URL}


def local_environment(service: str) -> dict[str, str]:
    """The service's environment, with its URLs pointed at the tests' services."""
    environment = {}
    for name, value in SERVICES[service]["environment"].items():
        parts = urlsplit(str(value))
        if parts.hostname == "redis":
            local = urlsplit(REDIS_DATABASES[parts.path])
            value = urlunsplit(parts._replace(netloc=local.netloc, path=local.path))
        elif parts.hostname == "postgres":
            value = POSTGRES_URL
        environment[name] = str(value)
    return environment


class Stack:
    """Processes started from the compose file's commands, on a queue of their own."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.queue = f"resumable-stack-{uuid.uuid4().hex[:12]}"
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.task_ids: list[str] = []  # the ids `celery call` printed

    def env(self, service: str) -> dict[str, str]:
        python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        return {
            **os.environ,
            **local_environment(service),
            "PYTHONPATH": python_path,
            # Files a stopped worker may leave behind go with the test's folder.
            "TMPDIR": str(self.directory),
        }

    def command(self, service: str) -> list[str]:
        """The service's command, with this stack's queue and worker names."""
        command = list(SERVICES[service]["command"])
        assert command[0] == "celery"
        subcommand = command[command.index("-A") + 2]
        if subcommand == "worker":
            name = command.index("-n") + 1
            node, _, host = command[name].partition("@")
            command[name] = f"{node}-{self.queue[-12:]}@{host}"
            command += ["-Q", self.queue]
        elif subcommand == "call":
            command += ["--queue", self.queue]
        return [sys.executable, "-m", *command]

    def log(self, service: str) -> str:
        return (self.directory / f"{service}.log").read_text(errors="replace")

    def start(self, service: str) -> None:
        with open(self.directory / f"{service}.log", "ab") as log:
            self.workers[service] = subprocess.Popen(
                self.command(service), cwd=ROOT, env=self.env(service),
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        starts = self.log(service).count(" ready.")
        wait_for(lambda: self.log(service).count(" ready.") > starts, 60, f"{service} to start")

    def stop(self, service: str) -> int:
        process = self.workers[service]
        process.send_signal(signal.SIGTERM)
        return process.wait(60)

    def run(self, service: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.command(service), cwd=ROOT, env=self.env(service),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if done.returncode == 0 and "call" in SERVICES[service]["command"]:
            self.task_ids.append(done.stdout.strip().splitlines()[-1])
        return done

    def close(self) -> None:
        for process in self.workers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@pytest.fixture
def stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    require("redis")
    require("postgres")
    started = Stack(tmp_path)
    try:
        yield started
    finally:
        started.close()
        forget(started)
        if getattr(request.node, "failed", False):
            for service in started.workers:
                print(f"--- {service}\n{started.log(service)}")


def forget(stack: Stack) -> None:
    """Remove the stack's queue (a task re-queued at the last stop) and task results."""
    environment = local_environment("worker1")
    broker = redis.Redis.from_url(environment["REDIS_URL"])
    backend = redis.Redis.from_url(environment["RESULT_BACKEND_URL"])
    try:
        bindings = (f"_kombu.{kind}.{stack.queue}" for kind in ("binding", "binding_permanent"))
        broker.delete(*bindings, *broker.scan_iter(f"{stack.queue}*"))
        for task_id in stack.task_ids:
            backend.delete(f"celery-task-meta-{task_id}")
    finally:
        broker.close()
        backend.close()


def test_a_restart_of_the_worker_with_the_task_hands_it_to_the_other(stack: Stack) -> None:
    # Given both workers of the stack
    stack.start("worker1")
    stack.start("worker2")
    store = CheckpointStore(local_environment("worker1")["STORE_URL"])

    # When the producer sends the long task
    sent = stack.run("producer")
    assert sent.returncode == 0, sent.stderr
    task_id = sent.stdout.strip().splitlines()[-1]
    received = f"examples.deploy.reindex[{task_id}] received"

    def receiver() -> str | None:
        return next((name for name in ("worker1", "worker2") if received in stack.log(name)), None)

    holder = wait_for(receiver, 30, "a worker to receive the task")
    other = "worker2" if holder == "worker1" else "worker1"
    cursor = wait_for(lambda: _cursor(store, task_id), 30, "the first checkpoint")

    try:
        # And the worker that has it is restarted (docker compose restart: SIGTERM, start)
        assert stack.stop(holder) == 0
        saved = store.get(task_id)
        assert saved is not None
        assert saved.interruptions == 1
        # The other worker may have taken it again already.
        assert saved.status in ("interrupted", "running")
        assert saved.cursor is not None and saved.cursor >= cursor
        stack.start(holder)

        # Then the other worker received it again and goes on past the saved cursor
        wait_for(lambda: received in stack.log(other), 30, f"{other} to receive the task")
        wait_for(lambda: (_cursor(store, task_id) or 0) > saved.cursor, 30, "the cursor to advance")
        resumed = store.get(task_id)
        assert resumed is not None
        assert resumed.status == "running"
        assert [step.name for step in resumed.finished_steps] == ["collect"]
        assert resumed.current_step == "index"
    finally:
        stack.close()
        with contextlib.suppress(Exception):
            store.reset(task_id, force=True)
        store.engine.dispose()


def _cursor(store: CheckpointStore, task_id: str) -> int | None:
    checkpoint = store.get(task_id)
    if checkpoint is None or checkpoint.current_step != "index":
        return None
    cursor = checkpoint.cursor
    return cursor if isinstance(cursor, int) and cursor > 0 else None
