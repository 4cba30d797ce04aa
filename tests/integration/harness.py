"""Real worker processes for the integration tests, and a TCP proxy to cut a database off."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from celery import Celery

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.integration.worker_app"
CELERY_SCRIPT = Path(sys.executable).with_name("celery")

# Settings for hard-kill tests: short leases, and Redis returning unacknowledged
# messages after three seconds instead of an hour.
HARD_KILL_SETTINGS: dict[str, Any] = {
    "resumable_lease_seconds": 3.0,
    "broker_transport_options": {
        "visibility_timeout": 3,
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    },
}


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


class Worker:
    """One ``celery worker`` process on the deployment's queue."""

    def __init__(
        self,
        deployment: Deployment,
        name: str,
        pool: str,
        concurrency: int,
        env: dict[str, str],
        console_script: bool = False,
    ) -> None:
        self.deployment = deployment
        self.name = name
        # Unique on the broker: a remote-control command addressed to this worker must not
        # reach the workers of tests running at the same time.
        self.nodename = f"{name}-{deployment.queue[-12:]}@{socket.gethostname()}"
        self.log_path = deployment.directory / f"{name}.log"
        # A SIGHUP restart re-executes ``sys.argv``, which works from the ``celery``
        # script but not from ``python -m celery``.
        launcher = [str(CELERY_SCRIPT)] if console_script else ["-m", "celery"]
        command = [
            sys.executable,
            *launcher,
            "-A",
            APP,
            "worker",
            "-P",
            pool,
            "-c",
            str(concurrency),
            "-Q",
            deployment.queue,
            "-n",
            self.nodename,
            "--loglevel=INFO",
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
        ]
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={
                **os.environ,
                **deployment.env,
                **env,
                "PYTHONPATH": _python_path(),
                # Files a killed worker leaves behind (its shutdown notice) go with the test.
                "TMPDIR": str(deployment.directory),
            },
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(
            lambda: b" ready." in self.log_path.read_bytes() or self.exited(),
            60,
            f"worker {name} to start",
        )
        if self.exited():
            raise AssertionError(f"worker {name} exited at start:\n{self.output()}")

    def exited(self) -> bool:
        return self.process.poll() is not None

    def send_signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60.0) -> float:
        """Send ``signum`` and return the seconds the worker took to exit."""
        started = time.monotonic()
        if not self.exited():
            self.send_signal(signum)
        self.wait(timeout)
        return time.monotonic() - started

    def wait(self, timeout: float = 60.0) -> None:
        """Wait for the worker process to exit (told to stop some other way)."""
        try:
            self.process.wait(timeout)
        finally:
            self.log.close()

    def kill_all(self) -> None:
        """SIGKILL the worker and its pool processes at once (a hard kill of the machine)."""
        children = _children(self.process.pid)
        for pid in [self.process.pid, *children]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(30)
        self.log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def _python_path() -> str:
    """This checkout ahead of any installed copy, however the worker is launched."""
    return os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])


def _children(pid: int) -> list[int]:
    result = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(line) for line in result.stdout.split()]


class Deployment:
    """A queue, a checkpoint store and the workers of one test."""

    def __init__(
        self,
        directory: Path,
        broker: str,
        store: str,
        settings: dict[str, Any] | None = None,
        events: str | None = None,
        backend: str | None = None,
    ) -> None:
        self.directory = directory
        self.broker = broker
        self.store = store
        self.queue = f"resumable-test-{uuid.uuid4().hex[:12]}"
        self.env = {
            "RESUMABLE_TEST_BROKER": broker,
            "RESUMABLE_TEST_QUEUE": self.queue,
            "RESUMABLE_TEST_STORE": store,
            "RESUMABLE_TEST_EVENTS": events or store,
            "RESUMABLE_TEST_SETTINGS": json.dumps(settings or {}),
            "RESUMABLE_TEST_BACKEND": backend or "",
        }
        self.workers: list[Worker] = []
        self.client = Celery("resumable_test_client", broker=broker)
        self.client.conf.update(
            broker_transport_options=(settings or {}).get("broker_transport_options", {})
        )
        self.events_engine = sa.create_engine(events or store)
        from tests.integration.worker_app import metadata

        metadata.create_all(self.events_engine)

    def start_worker(
        self, pool: str = "prefork", concurrency: int = 1, console_script: bool = False, **env: str
    ) -> Worker:
        worker = Worker(self, f"w{len(self.workers) + 1}", pool, concurrency, env, console_script)
        self.workers.append(worker)
        return worker

    def send(self, task: str, *args: Any, task_id: str | None = None) -> str:
        result = self.client.send_task(
            f"{APP}.{task}", args=args, queue=self.queue, task_id=task_id
        )
        return str(result.id)

    def events(self, task_id: str, kind: str | None = None) -> list[Any]:
        from tests.integration.worker_app import events

        query = sa.select(events).where(events.c.task_id == task_id).order_by(events.c.id)
        if kind is not None:
            query = query.where(events.c.kind == kind)
        with self.events_engine.connect() as connection:
            return list(connection.execute(query))

    def items(self, task_id: str) -> list[int]:
        return [row.item for row in self.events(task_id, "item")]

    def close(self) -> None:
        for worker in self.workers:
            if not worker.exited():
                worker.kill_all()
        self.client.close()
        self.events_engine.dispose()

    def logs(self) -> str:
        return "\n".join(f"--- {w.name} ---\n{w.output()}" for w in self.workers)


class TcpProxy:
    """Forwards a local port to a server; ``cut()`` drops every connection and refuses new ones."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.open = True
        self.closing = False
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        # One armed fault: (bytes a client's packet contains, "before" or "after").
        self.armed: tuple[bytes, str] | None = None
        self.cut_after = False
        self.struck = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, server)
        selector.register(server, selectors.EVENT_READ, client)
        swallow = False  # the next answer of the server is lost
        try:
            while True:
                for key, _ in selector.select():
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    fault = self._strikes(data) if key.fileobj is client else None
                    if fault == "before":
                        return  # the statement never reaches the server
                    swallow = swallow or fault == "after"
                    if key.fileobj is server and swallow:
                        return  # the server answered; the answer is lost
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            selector.close()
            client.close()
            server.close()

    def fail_on(self, contains: bytes, when: str, *, then_cut: bool = False) -> None:
        """Drop the connection of the next client packet that ``contains`` these bytes.

        ``when="before"``: the packet never reaches the server. ``when="after"``: the
        server gets it and answers, and the answer is lost. One packet, once. With
        ``then_cut`` new connections are refused from then on, until ``restore()``.
        """
        assert when in ("before", "after")
        self.struck.clear()
        self.cut_after = then_cut
        self.armed = (contains, when)

    def _strikes(self, data: bytes) -> str | None:
        with self.lock:
            armed = self.armed
            if armed is None or armed[0] not in data:
                return None
            self.armed = None
            if self.cut_after:
                self.open = False
        self.struck.set()
        return armed[1]

    def cut(self) -> None:
        self.open = False
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for client, server in pairs:
            for sock in (client, server):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def restore(self) -> None:
        self.open = True

    def close(self) -> None:
        self.closing = True
        self.cut()
        self.listener.close()
