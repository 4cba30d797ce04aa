"""Transactional checkpoints: each batch's rows and its cursor commit together.

Run it: ``python examples/transactional.py [DATABASE_URL]`` (SQLite in a temporary
directory by default). The script runs the task in a child process, kills that process
with SIGKILL part-way, runs the task again under the same id, and checks that every row
is in the table exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from celery import Celery

from celery_resumable import ResumableTask, set_step_cursor_tx, step_cursor

DATABASE = os.environ.get("EXAMPLE_DATABASE_URL", "sqlite:///example.sqlite3")
TOTAL = 500
BATCH = 25

app = Celery("examples.transactional", broker="memory://")
app.conf.update(resumable_store_url=DATABASE, resumable_lease_seconds=2.0)

metadata = sa.MetaData()
orders = sa.Table(
    "example_orders",
    metadata,
    sa.Column("task_id", sa.String(64), primary_key=True),
    sa.Column("order_id", sa.Integer, primary_key=True, autoincrement=False),
)


@app.task(base=ResumableTask, bind=True)
def copy_orders(self: Any) -> int:
    engine = sa.create_engine(DATABASE)

    def copy(cursor: int | None) -> int:
        start = cursor or 0
        print(f"  copying from order {start}", flush=True)
        for first in range(start, TOTAL, BATCH):
            batch = range(first, min(first + BATCH, TOTAL))
            with engine.begin() as connection:
                connection.execute(
                    orders.insert(), [{"task_id": self.request.id, "order_id": n} for n in batch]
                )
                # Same transaction: the rows and the cursor commit (or roll back) together.
                set_step_cursor_tx(connection, batch[-1] + 1)
            time.sleep(0.05)
        return TOTAL

    return step_cursor("copy", copy)


def count(engine: sa.Engine, task_id: str) -> tuple[int, int]:
    with engine.connect() as connection:
        query = sa.select(sa.func.count(), sa.func.count(sa.distinct(orders.c.order_id))).where(
            orders.c.task_id == task_id
        )
        total, distinct = connection.execute(query).one()
        return int(total), int(distinct)


def child(task_id: str) -> None:
    result = copy_orders.apply(task_id=task_id)
    print(f"  run finished: {result.state}", flush=True)


def main() -> int:
    url = (
        sys.argv[1]
        if len(sys.argv) > 1
        else (f"sqlite:///{Path(tempfile.mkdtemp()) / 'example.sqlite3'}")
    )
    env = {**os.environ, "EXAMPLE_DATABASE_URL": url}
    engine = sa.create_engine(url)
    metadata.create_all(engine)
    task_id = str(uuid.uuid4())
    command = [sys.executable, __file__, "--child", task_id]

    print("run 1, killed with SIGKILL part-way:")
    process = subprocess.Popen(command, env=env)
    while count(engine, task_id)[0] < TOTAL // 3:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    print(f"  killed with {count(engine, task_id)[0]} rows committed")

    print("run 2, once the killed run's lease has expired:")
    time.sleep(2.5)
    subprocess.run(command, env=env, check=True)

    total, distinct = count(engine, task_id)
    print(f"rows: {total}, distinct: {distinct}, expected: {TOTAL}")
    return 0 if total == distinct == TOTAL else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(sys.argv[2])
    else:
        raise SystemExit(main())
