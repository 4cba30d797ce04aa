"""How long a redeploy takes: SIGTERM to a worker running a long task, plain vs resumable.

Run: ``python benchmarks/bench_redeploy.py [--seconds 20] [--broker URL]`` (Redis on
127.0.0.1 by default). For each kind of task, a real ``celery worker`` (prefork, one
process) starts the task, gets SIGTERM after two seconds, and the script measures how
long the worker takes to exit and how long the task takes to finish on a second worker.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from celery import Celery

from celery_resumable import checkpoint_store

ROOT = Path(__file__).resolve().parents[1]
SECONDS_PER_ITEM = 0.01


def start_worker(env: dict[str, str], queue: str, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "celery", "-A", "benchmarks.redeploy_app", "worker",
        "-P", "prefork", "-c", "1", "-Q", queue, "--loglevel=INFO",
        "--without-mingle", "--without-gossip", "--without-heartbeat",
    ]  # fmt: skip
    with open(log, "ab") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
    deadline = time.monotonic() + 60
    while b" ready." not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"worker did not start; see {log}")
        time.sleep(0.05)
    return process


def measure(kind: str, seconds: float, broker: str, directory: Path) -> tuple[float, float]:
    """Return (seconds for the worker to stop, seconds from SIGTERM to the task's end)."""
    queue = f"bench-redeploy-{uuid.uuid4().hex[:8]}"
    store = f"sqlite:///{directory / 'store.sqlite3'}"
    env = {**os.environ, "BENCH_BROKER": broker, "BENCH_QUEUE": queue, "BENCH_STORE": store}
    log = directory / f"{kind}.log"
    client = Celery("bench_client", broker=broker)
    first = start_worker(env, queue, log)
    items = int(seconds / SECONDS_PER_ITEM)
    task_id = client.send_task(
        f"benchmarks.redeploy_app.{kind}_loop", args=(items, SECONDS_PER_ITEM), queue=queue
    ).id
    time.sleep(2.0)
    signalled = time.monotonic()
    first.send_signal(signal.SIGTERM)
    first.wait()
    stopped = time.monotonic() - signalled
    second = start_worker(env, queue, log)
    marker = f"[{task_id}] succeeded"
    while marker not in log.read_text(errors="replace"):
        time.sleep(0.05)
    finished = time.monotonic() - signalled
    second.send_signal(signal.SIGTERM)
    second.wait()
    client.close()
    if kind == "resumable":
        store_app = Celery("bench_store")
        store_app.conf.resumable_store_url = store
        checkpoint = checkpoint_store(store_app).get(task_id)
        assert checkpoint is not None
        assert checkpoint.status == "completed"
    return stopped, finished


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the task")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/13")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="celery-resumable-redeploy-"))
    rows = [
        (kind, *measure(kind, args.seconds, args.broker, directory))
        for kind in ("plain", "resumable")
    ]
    print(f"Redeploy of a worker running a {args.seconds:.0f} s task (SIGTERM after 2 s)")
    print(f"{'task':10}  {'worker exit after SIGTERM':>26}  {'task done after SIGTERM':>24}")
    for kind, stopped, finished in rows:
        label = "plain Celery" if kind == "plain" else "resumable"
        print(f"{label:12}  {stopped:>24.2f} s  {finished:>22.2f} s")
    print(f"logs: {directory}")


if __name__ == "__main__":
    main()
