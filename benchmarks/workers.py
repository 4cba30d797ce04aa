"""Real ``celery worker`` processes for the benchmarks, and the CPU time they used.

Imports nothing of celery-resumable: the app module named in the command decides.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]


class WorkerError(RuntimeError):
    """A worker exited, or its tasks did not finish in time."""


def worker_env(settings: Mapping[str, str]) -> dict[str, str]:
    """This process's environment with the checkout on ``PYTHONPATH`` and ``settings``."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **settings}


class Worker:
    """One ``celery worker`` process (``python -m celery``), in its own process group."""

    def __init__(
        self,
        app: str,
        queue: str,
        name: str,
        env: Mapping[str, str],
        log: Path,
        pool: str = "solo",
        options: Sequence[str] = (),
    ) -> None:
        self.log_path = log
        command = [
            sys.executable, "-m", "celery", "-A", app, "worker",
            "-P", pool, "-Q", queue, "-n", f"{name}@%h", "--loglevel=WARNING",
            "--without-mingle", "--without-gossip", "--without-heartbeat", *options,
        ]  # fmt: skip
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=dict(env), stdout=out, stderr=out, start_new_session=True
            )

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self.process.pid

    def check(self) -> None:
        """Raise WorkerError when the worker has exited."""
        if self.process.poll() is not None:
            raise WorkerError(f"the worker exited with {self.process.returncode}: {self.tail()}")

    def tail(self) -> str:
        """The end of the worker's log."""
        return self.log_path.read_text(errors="replace")[-2000:]

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU time the worker's process has used so far (Linux schedstat): its main
        thread's, and its other threads' together."""
        main = others = 0
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                used = int((task / "schedstat").read_text().split()[0])
                if task.name == str(self.pid):
                    main += used
                else:
                    others += used
        return main / 1e9, others / 1e9

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the worker (warm shutdown, then SIGKILL to its process group)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def wait_for_count(
    client: redis.Redis,
    key: str,
    target: int,
    workers: Sequence[Worker],
    timeout: float,
    failed_key: str | None = None,
) -> float:
    """Wait until the Redis counter ``key`` reaches ``target``; return the time it did."""
    deadline = time.monotonic() + timeout
    while int(client.get(key) or 0) < target:
        if failed_key is not None and int(client.get(failed_key) or 0):
            raise WorkerError(f"a task failed: {workers[0].tail()}")
        for worker in workers:
            worker.check()
        if time.monotonic() > deadline:
            raise WorkerError(f"{key} below {target} after {timeout:.0f} s")
        time.sleep(0.002)
    return time.perf_counter()


def delete_keys(client: redis.Redis, pattern: str) -> None:
    """Delete the Redis keys matching ``pattern``."""
    keys = list(client.scan_iter(match=pattern))
    if keys:
        client.delete(*keys)
