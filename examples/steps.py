"""Steps: an interrupted run, then a resumed run that skips what already finished.

Run it: ``python examples/steps.py``. It uses eager runs (no broker) and a SQLite store
in a temporary directory, and prints which steps ran in each run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from celery import Celery

from celery_resumable import ResumableTask, checkpoint_store, step
from celery_resumable.testing import interrupt_after_step

app = Celery("examples.steps", broker="memory://")
app.conf.resumable_store_url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'checkpoints.sqlite3'}"


def download(source: str) -> list[str]:
    print(f"  download: fetching {source}")
    return [f"user-{n}" for n in range(3)]


def transform(users: list[str]) -> list[str]:
    print(f"  transform: {len(users)} users")
    return [user.upper() for user in users]


def publish(users: list[str]) -> int:
    print(f"  publish: {', '.join(users)}")
    return len(users)


@app.task(base=ResumableTask, bind=True)
def sync_users(self: Any, source: str) -> int:
    users = step("download", download, source)
    cleaned = step("transform", transform, users)
    return step("publish", publish, cleaned)


def main() -> None:
    print("run 1 (interrupted after 'transform', as a deploy would):")
    with interrupt_after_step("transform"):
        first = sync_users.apply(args=("https://example.invalid/users",))
    checkpoint = checkpoint_store(app).get(first.id)
    assert checkpoint is not None
    print(f"  -> {first.state}; finished: {[s.name for s in checkpoint.finished_steps]}")

    print("run 2 (same task id):")
    second = sync_users.apply(args=("https://example.invalid/users",), task_id=first.id)
    print(f"  -> {second.state}, result {second.result}; 'download' and 'transform' were skipped")


if __name__ == "__main__":
    main()
