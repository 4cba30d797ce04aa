"""The demo: a resumable task surviving a redeploy, on embedded defaults.

``celery-resumable demo`` starts a real ``celery worker`` on a file-system broker with
a SQLite checkpoint store, sends a task over a few hundred records, stops the worker
with SIGTERM mid-way (a deploy), starts a second worker and shows that it finishes the
task from where the first stopped. The module is also the Celery app the demo workers
load (``celery -A celery_resumable.demo worker``).

Everything the demo writes (broker messages and bindings, databases, worker logs) goes
under one new temporary folder; it never writes to the working directory. Whatever
happens (a timeout, Ctrl+C), the worker processes it started are stopped before it ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from celery import Celery

from celery_resumable import ResumableTask, checkpoint_store, iterate, step

__all__ = ["app", "import_records", "run"]

_DIRECTORY = Path(os.environ.get("CELERY_RESUMABLE_DEMO_DIR") or tempfile.gettempdir())
_QUEUE = "resumable-demo"

# Seconds a worker gets to finish a warm shutdown when the demo stops it early.
_STOP_GRACE = 10.0


def _transport_options(directory: Path) -> dict[str, Any]:
    """File-system broker folders, all under ``directory``.

    kombu's defaults are relative to the working directory (``control/`` for exchange
    bindings) or the system's temporary folder (messages being read), hence each is set.
    """
    return {
        "data_folder_in": str(directory / "broker"),
        "data_folder_out": str(directory / "broker"),
        "control_folder": str(directory / "broker-control"),
        "store_processed": True,
        "processed_folder": str(directory / "broker-processed"),
        "polling_interval": 0.1,
    }


app = Celery("celery_resumable_demo")
app.conf.update(
    broker_url="filesystem://",
    broker_transport_options=_transport_options(_DIRECTORY),
    task_default_queue=_QUEUE,
    resumable_store_url=f"sqlite:///{_DIRECTORY / 'checkpoints.sqlite3'}",
    resumable_checkpoint_interval=1.0,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)

_records = sa.Table(
    "demo_records",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("task_id", sa.String(64), nullable=False),
    sa.Column("step", sa.String(32), nullable=False),
    sa.Column("record", sa.Integer, nullable=True),
    sa.Column("pid", sa.Integer, nullable=False),
)


_engine: sa.Engine | None = None


def _note(task_id: str, step_name: str, record: int | None = None) -> None:
    global _engine
    if _engine is None:  # the table is created by run() before the workers start
        _engine = sa.create_engine(f"sqlite:///{_DIRECTORY / 'records.sqlite3'}")
    with _engine.begin() as connection:
        connection.execute(
            _records.insert().values(
                task_id=task_id, step=step_name, record=record, pid=os.getpid()
            )
        )


@app.task(base=ResumableTask, bind=True)  # type: ignore[untyped-decorator]
def import_records(self: Any, count: int, seconds_per_record: float) -> int:
    """Download a batch of record ids, process each one, then report."""

    def download() -> list[int]:
        _note(self.request.id, "download")
        time.sleep(0.5)
        return list(range(count))

    ids = step("download", download)
    for record in iterate("process", ids):
        time.sleep(seconds_per_record)
        _note(self.request.id, "process", record)
    step("report", _note, self.request.id, "report")
    return len(ids)


def run(
    count: int = 400,
    seconds_per_record: float = 0.01,
    stop_after: int = 150,
    timeout: float = 120.0,
) -> int:
    """Run the demo; return 0 when every record was processed exactly once.

    ``timeout`` bounds each wait for the task (to get going, to finish); on a timeout
    the demo stops its workers and raises ``SystemExit`` with what it was waiting for.
    """
    directory = Path(tempfile.mkdtemp(prefix="celery-resumable-demo-"))
    for folder in ("broker", "broker-control", "broker-processed"):
        (directory / folder).mkdir()
    env = {**os.environ, "CELERY_RESUMABLE_DEMO_DIR": str(directory)}
    records = _Records(directory)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        print("celery-resumable demo: a task surviving a deploy")
        print(f"  broker: file system, checkpoint store: SQLite, in {directory}")
        started = time.monotonic()
        first = _start_worker(directory, env, "worker-1", workers)
        task_id = (
            _client(directory)
            .send_task(import_records.name, args=(count, seconds_per_record), queue=_QUEUE)
            .id
        )
        print(f"sent import_records({count} records) as task {task_id}")
        _wait(
            lambda: len(records.processed(task_id)) >= stop_after,
            timeout,
            "the first worker to get going",
        )
        print(f"worker-1 has processed {len(records.processed(task_id))}/{count} records")

        print("deploy: SIGTERM to worker-1")
        signalled = time.monotonic()
        first.send_signal(signal.SIGTERM)
        _wait(lambda: first.poll() is not None, 60, "worker-1 to stop")
        print(
            f"worker-1 exited after {time.monotonic() - signalled:.1f}s without finishing the task"
        )
        _print_checkpoint(directory, task_id)

        second = _start_worker(directory, env, "worker-2", workers)
        print("worker-2 resumes the task from the checkpoint")
        _wait(lambda: records.steps(task_id, "report") > 0, timeout, "the task to finish")
        second.send_signal(signal.SIGTERM)
        _wait(lambda: second.poll() is not None, 60, "worker-2 to stop")

        counts = Counter(records.processed(task_id))
        repeated = sum(counts.values()) - len(counts)
        missing = count - len(counts)
        downloads = records.steps(task_id, "download")
        print(
            f"done in {time.monotonic() - started:.1f}s: {len(counts)}/{count} records "
            f"processed, {repeated} twice, {missing} missing; 'download' ran {downloads} time(s)"
        )
        ok = missing == 0 and repeated <= 1 and downloads == 1
        print("OK: the task survived the deploy" if ok else "FAILED: see the worker logs")
        return 0 if ok else 1
    finally:
        for worker in workers:
            _stop(worker)
        records.close()
        print(f"worker logs: {directory / 'worker-1.log'}, {directory / 'worker-2.log'}")


class _Records:
    """What the demo task recorded: each step and record it processed, by task id."""

    def __init__(self, directory: Path) -> None:
        self.engine = sa.create_engine(f"sqlite:///{directory / 'records.sqlite3'}")
        _records.metadata.create_all(self.engine)

    def processed(self, task_id: str) -> list[int]:
        with self.engine.connect() as connection:
            query = sa.select(_records.c.record).where(
                _records.c.task_id == task_id, _records.c.step == "process"
            )
            return [row.record for row in connection.execute(query)]

    def steps(self, task_id: str, name: str) -> int:
        with self.engine.connect() as connection:
            query = sa.select(sa.func.count()).where(
                _records.c.task_id == task_id, _records.c.step == name
            )
            return int(connection.execute(query).scalar_one())

    def close(self) -> None:
        self.engine.dispose()


def _print_checkpoint(directory: Path, task_id: str) -> None:
    store = checkpoint_store(_client_app(f"sqlite:///{directory / 'checkpoints.sqlite3'}"))
    checkpoint = store.get(task_id)
    store.engine.dispose()
    if checkpoint is not None:
        print(
            f"checkpoint: status={checkpoint.status}, finished steps="
            f"{[s.name for s in checkpoint.finished_steps]}, step in progress="
            f"{checkpoint.current_step!r} at cursor {checkpoint.cursor}, "
            f"interruptions={checkpoint.interruptions}"
        )


def _client_app(store_url: str) -> Celery:
    client = Celery("celery_resumable_demo_client")
    client.conf.resumable_store_url = store_url
    return client


def _client(directory: Path) -> Celery:
    client = Celery("celery_resumable_demo_client", broker="filesystem://")
    client.conf.broker_transport_options = _transport_options(directory)
    return client


def _start_worker(
    directory: Path,
    env: dict[str, str],
    name: str,
    workers: list[subprocess.Popen[bytes]],
) -> subprocess.Popen[bytes]:
    """Start a worker and add it to ``workers`` (so it is stopped whatever happens next)."""
    log_path = directory / f"{name}.log"
    command = [
        sys.executable, "-m", "celery", "-A", "celery_resumable.demo", "worker",
        "-P", "prefork", "-c", "1", "-Q", _QUEUE, "-n", f"{name}@%h", "--loglevel=INFO",
        "--without-mingle", "--without-gossip", "--without-heartbeat",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        # A session of its own: the worker and its pool processes form one process group
        # that _stop() can end together, and a Ctrl+C at the terminal reaches the demo
        # only, which then stops the workers itself.
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    workers.append(process)
    _wait(
        lambda: b" ready." in log_path.read_bytes() or process.poll() is not None,
        60,
        f"{name} to start",
    )
    if process.poll() is not None:
        raise SystemExit(f"{name} failed to start; see {log_path}")
    print(f"{name} started (pid {process.pid})")
    return process


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a worker: a warm shutdown first, then SIGKILL to its whole process group."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(_STOP_GRACE)
    if process.returncode != 0:
        # A worker that hung, crashed or was killed may leave pool processes behind;
        # they are in its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}; stopping the workers")
        time.sleep(0.1)
