"""Faults that land while a statement runs: its row held by another transaction, then the
session ended by the server, the lock held past the statement timeout, or an exception
raised in the waiting thread."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa


class AlarmError(Exception):
    """Raised from a signal handler while a statement waits, as a soft time limit is."""


DESCRIBE = {
    "postgres": "SELECT pid, state, wait_event_type, left(query, 100) FROM pg_stat_activity "
    "WHERE datname = current_database()",
    "mysql": "SELECT id, command, state, left(info, 100) FROM information_schema.processlist",
}


class Obstruction:
    """Holds a checkpoint row in another transaction, then ends the statement that waits
    on it in one of three ways: ``restart`` (the server ends its session, as a restart
    does), ``locked`` (the lock outlives the statement timeout) or ``exception``
    (AlarmError raised in the main thread while it waits)."""

    def __init__(self, server: str, url: str, table: str, timeout: float) -> None:
        self.server = server
        self.engine = sa.create_engine(url)
        self.table = table
        self.timeout = timeout
        self.connection: sa.Connection | None = None
        self.thread: threading.Thread | None = None
        self.done = threading.Event()
        self.done.set()  # nothing held yet
        self.error: BaseException | None = None

    def close(self) -> None:
        self.release()
        if self.thread is not None:
            self.thread.join(30)
        self.engine.dispose()

    def hold(self, task_id: str, how: str, waiting: str, *, insert: bool = False) -> None:
        """Lock ``task_id``'s row (``insert``: a row of that id not committed yet), and
        in the background end ``how`` the first statement waiting on it whose SQL
        contains ``waiting``."""
        assert self.connection is None
        self.connection = self.engine.connect()
        if insert:
            now = sa.func.now()
            self.connection.execute(
                sa.text(
                    f"INSERT INTO {self.table} (task_id, task_name, status, finished_steps, "
                    "interruptions, created_at, updated_at) VALUES "
                    "(:id, 'obstruction', 'running', '[]', 0, :now, :now)"
                ),
                {"id": task_id, "now": self.connection.execute(sa.select(now)).scalar_one()},
            )
        else:
            self.connection.execute(
                sa.text(f"SELECT task_id FROM {self.table} WHERE task_id = :id FOR UPDATE"),
                {"id": task_id},
            )
        main = threading.main_thread().ident
        self.done.clear()
        self.thread = threading.Thread(target=self._end, args=(how, waiting, main), daemon=True)
        self.thread.start()

    def release(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                connection.rollback()
            connection.close()

    def _end(self, how: str, waiting: str, main: int | None) -> None:
        try:
            waiter = self._wait_for_waiter(waiting)
            if how == "restart":
                self._terminate(waiter)
                time.sleep(0.1)
            elif how == "locked":
                time.sleep(self.timeout + 0.5)
            elif how == "exception" and main is not None:
                signal.pthread_kill(main, signal.SIGALRM)
                time.sleep(0.1)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            self.release()
            self.done.set()

    def _wait_for_waiter(self, waiting: str) -> Any:
        if self.server == "postgres":
            query = sa.text(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query ILIKE :table AND query ILIKE :waiting AND pid <> pg_backend_pid()"
            )
        else:
            # Every such statement waits: the row it needs is held.
            query = sa.text(
                "SELECT id FROM information_schema.processlist WHERE command = 'Query' "
                "AND info LIKE :table AND info LIKE :waiting AND id <> connection_id()"
            )
        deadline = time.monotonic() + 15
        like = {"table": f"%{self.table}%", "waiting": f"%{waiting}%"}
        with self.engine.connect() as probe:
            while time.monotonic() < deadline:
                found = probe.execute(query, like).scalars().first()
                probe.rollback()
                if found is not None:
                    return found
                time.sleep(0.01)
            seen = probe.execute(sa.text(DESCRIBE[self.server])).all()
        raise AssertionError(f"no statement came to wait on the held row; the server has: {seen}")

    def _terminate(self, waiter: Any) -> None:
        with self.engine.connect() as killer:
            if self.server == "postgres":
                killer.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": waiter})
            else:
                killer.execute(sa.text(f"KILL CONNECTION {int(waiter)}"))


@contextlib.contextmanager
def alarm_raises() -> Iterator[None]:
    """While inside, SIGALRM raises AlarmError in the main thread."""

    def raise_alarm(*_: Any) -> None:
        raise AlarmError("an exception raised while a statement was on the wire")

    previous: Callable[..., Any] | int | None = signal.signal(signal.SIGALRM, raise_alarm)
    try:
        yield
    finally:
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def row_locked(url: str, table: str, task_id: str) -> Iterator[None]:
    """Hold ``task_id``'s row in another transaction until the block ends."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(
                sa.text(f"SELECT task_id FROM {table} WHERE task_id = :id FOR UPDATE"),
                {"id": task_id},
            )
            try:
                yield
            finally:
                connection.rollback()
    finally:
        engine.dispose()
