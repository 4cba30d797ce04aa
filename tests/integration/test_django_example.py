"""The Django example on real workers and PostgreSQL: a warm shutdown mid-run loses nothing.

The project (examples/django_project) keeps its checkpoints in its own database
(``CELERY_RESUMABLE_STORE_URL = "django"``, the table made by ``manage.py migrate``) and
marks its orders in ``transaction.atomic()`` batches with ``set_step_cursor_tx``.
Django runs only in the subprocesses: this process checks the database with SQLAlchemy.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery

from tests.integration.harness import wait_for
from tests.services import POSTGRES_URL, REDIS_URL, require

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "examples" / "django_project"
ORDERS = 400
BATCH = 10

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def database() -> Iterator[sa.Engine]:
    """A PostgreSQL database of this test alone, dropped afterwards."""
    require("postgres")
    require("redis")
    name = f"resumable_django_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine = sa.create_engine(sa.engine.make_url(POSTGRES_URL).set(database=name))
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class Project:
    """The example project's commands and workers, on one database and one queue."""

    def __init__(self, engine: sa.Engine, directory: Path) -> None:
        url = engine.url
        self.engine = engine
        self.directory = directory
        self.queue = f"resumable-django-{uuid.uuid4().hex[:12]}"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "proj.settings",
            # The project, then this checkout's celery_resumable.
            "PYTHONPATH": os.pathsep.join([str(PROJECT), str(ROOT)]),
            "EXAMPLE_DB_ENGINE": "postgresql",
            "EXAMPLE_DB_NAME": str(url.database),
            "EXAMPLE_DB_USER": url.username or "",
            "EXAMPLE_DB_PASSWORD": url.password or "",
            "EXAMPLE_DB_HOST": url.host or "",
            "EXAMPLE_DB_PORT": str(url.port or ""),
            "EXAMPLE_BROKER_URL": REDIS_URL,
            "EXAMPLE_QUEUE": self.queue,
        }
        self.workers: list[tuple[subprocess.Popen[bytes], Path]] = []

    def manage(self, *arguments: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *arguments],
            cwd=PROJECT, env=self.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def start_worker(self) -> subprocess.Popen[bytes]:
        log_path = self.directory / f"worker{len(self.workers) + 1}.log"
        command = [
            sys.executable, "-m", "celery", "-A", "proj", "worker", "-P", "prefork", "-c", "1",
            "-Q", self.queue, "-n", f"django{len(self.workers) + 1}@%h", "--loglevel=INFO",
            "--without-mingle", "--without-gossip", "--without-heartbeat",
        ]  # fmt: skip
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self.workers.append((process, log_path))
        wait_for(
            lambda: b" ready." in log_path.read_bytes() or process.poll() is not None,
            60,
            "the worker to start",
        )
        assert process.poll() is None, self.logs()
        return process

    def scalar(self, query: str) -> Any:
        with self.engine.connect() as connection:
            return connection.execute(sa.text(query)).scalar()

    def checkpoint(self, task_id: str) -> Any:
        with self.engine.connect() as connection:
            return connection.execute(
                sa.text("SELECT * FROM celery_resumable_checkpoints WHERE task_id = :id"),
                {"id": task_id},
            ).first()

    def logs(self) -> str:
        return "\n".join(f"--- {path.name} ---\n{path.read_text()}" for _, path in self.workers)

    def close(self) -> None:
        for process, _ in self.workers:
            if process.poll() is None:
                process.kill()
                process.wait(30)


def test_a_worker_stopped_mid_run_leaves_every_order_marked_exactly_once(
    database: sa.Engine, tmp_path: Path
) -> None:
    project = Project(database, tmp_path)
    client = Celery("django-example-client", broker=REDIS_URL)
    try:
        # Given the project's tables (the checkpoint table by its migration) and orders
        project.manage("migrate", "--verbosity", "0")
        project.manage("create_orders", str(ORDERS))
        first = project.start_worker()
        task_id = client.send_task(
            "orders.tasks.mark_orders",
            kwargs={"batch_size": BATCH, "pause": 0.05},
            queue=project.queue,
        ).id
        wait_for(
            lambda: project.scalar("SELECT count(*) FROM orders_order WHERE marks > 0") >= 100,
            60,
            "a hundred orders to be marked",
        )

        # When the worker is told to stop (SIGTERM, a deploy) in the middle of the run
        first.send_signal(signal.SIGTERM)
        first.wait(60)
        stopped = project.checkpoint(task_id)
        assert stopped is not None, project.logs()
        assert (stopped.status, stopped.current_step) == ("interrupted", "mark")
        marked = project.scalar("SELECT count(*) FROM orders_order WHERE marks > 0")
        assert stopped.cursor == marked < ORDERS  # the cursor committed with the orders

        # And another worker takes the task from the queue
        project.start_worker()
        wait_for(
            lambda: (project.checkpoint(task_id) or stopped).status == "completed",
            60,
            "the task to complete",
        )

        # Then every order was marked exactly once: those up to the saved cursor by the
        # first worker, the rest by the second, which resumed after it
        with database.connect() as connection:
            rows = connection.execute(
                sa.text("SELECT id, marks, marked_by FROM orders_order ORDER BY id")
            ).all()
        assert [row.marks for row in rows] == [1] * ORDERS, project.logs()
        by_process = [row.marked_by for row in rows]
        assert len(set(by_process[: stopped.cursor])) == 1
        assert len(set(by_process[stopped.cursor :])) == 1
        assert by_process[0] != by_process[-1]
        assert "interrupted (shutdown)" in project.logs()
        report = project.manage("orders_report")
        assert f"orders: {ORDERS}, marked once: {ORDERS}, more than once: 0" in report
    except BaseException:
        print(project.logs())
        raise
    finally:
        project.close()
        client.close()
