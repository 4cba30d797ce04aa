"""What a checkpoint store sends to its database, counted from outside the library.

Both counters attach to the store's engine (``checkpoint_store(app).engine``) and depend
on nothing inside celery-resumable, so they keep counting whatever the store does:

- ``StatementLog``: every SQL statement SQLAlchemy executes (``before_cursor_execute``),
  with the size of its parameters.
- ``RoundTrips``: every request the database driver sends and waits for, below
  SQLAlchemy, so BEGIN, COMMIT, ROLLBACK, the pool's pre-ping and session SET statements
  count too. SQLite: each statement the ``sqlite3`` module runs (its trace callback; no
  network, but each is a call into the database). PostgreSQL with psycopg 3: libpq's
  protocol trace, one round trip per burst of messages the client sends before reading
  the answer. MySQL/MariaDB with PyMySQL: each command packet.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa

# -- SQL statements --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Statement:
    """One statement SQLAlchemy executed."""

    sql: str
    parameter_bytes: int
    parameter_sets: int

    @property
    def verb(self) -> str:
        """The first word of the statement, upper case."""
        words = self.sql.split(None, 1)
        return words[0].upper() if words else ""


def value_bytes(value: Any) -> int:
    """The size of one bound value as the database receives it, in bytes (text form)."""
    if value is None:
        return 0
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, bool | int | float):
        return len(str(value))
    if isinstance(value, dt.date | dt.time):
        return len(value.isoformat())
    wrapped = getattr(value, "obj", None)  # psycopg's Json/Jsonb wrappers
    if wrapped is not None:
        return len(json.dumps(wrapped).encode())
    return len(json.dumps(value, default=str).encode())


def parameter_bytes(parameters: Any) -> int:
    """The size of a statement's parameters: a dict, a tuple, or a list of either."""
    if parameters is None:
        return 0
    if isinstance(parameters, dict):
        return sum(value_bytes(value) for value in parameters.values())
    if isinstance(parameters, list):
        return sum(parameter_bytes(item) for item in parameters)
    if isinstance(parameters, tuple):
        return sum(value_bytes(value) for value in parameters)
    return value_bytes(parameters)


class StatementLog:
    """Records the statements executed on ``engine`` while ``recording`` is true.

    Use as a context manager: the listener is attached on entry and removed on exit.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.recording = False
        self.statements: list[Statement] = []

    def _on_execute(
        self,
        _connection: Any,
        _cursor: Any,
        statement: str,
        parameters: Any,
        _context: Any,
        executemany: bool,
    ) -> None:
        if self.recording:
            sets = len(parameters) if executemany and parameters is not None else 1
            self.statements.append(Statement(statement, parameter_bytes(parameters), sets))

    def __enter__(self) -> StatementLog:
        sa.event.listen(self.engine, "before_cursor_execute", self._on_execute)
        return self

    def __exit__(self, *_: object) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._on_execute)
        self.recording = False


class ExecuteTimer:
    """Adds up the time SQLAlchemy's statements spend in the driver's ``cursor.execute``.

    Use as a context manager; ``seconds`` is the total, ``statements`` their number.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.seconds = 0.0
        self.statements = 0
        self._started: dict[int, float] = {}

    def _before(self, _connection: Any, cursor: Any, *_: Any) -> None:
        self._started[id(cursor)] = time.perf_counter()

    def _after(self, _connection: Any, cursor: Any, *_: Any) -> None:
        started = self._started.pop(id(cursor), None)
        if started is not None:
            self.seconds += time.perf_counter() - started
            self.statements += 1

    def __enter__(self) -> ExecuteTimer:
        sa.event.listen(self.engine, "before_cursor_execute", self._before)
        sa.event.listen(self.engine, "after_cursor_execute", self._after)
        return self

    def __exit__(self, *_: object) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._before)
        sa.event.remove(self.engine, "after_cursor_execute", self._after)


_SET_COLUMNS = re.compile(r"\bSET\b(.*?)(?:\bWHERE\b|$)", re.IGNORECASE | re.DOTALL)


def assigned_columns(sql: str) -> list[str]:
    """The columns an UPDATE statement assigns, in its order (empty for other statements)."""
    if not sql.lstrip().upper().startswith("UPDATE"):
        return []
    match = _SET_COLUMNS.search(sql)
    if match is None:
        return []
    columns = []
    depth = 0
    current = ""
    for char in match.group(1):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            columns.append(current)
            current = ""
        else:
            current += char
    columns.append(current)
    names = [column.split("=", 1)[0].strip().strip('"`') for column in columns if "=" in column]
    return [name.rsplit(".", 1)[-1].strip('"`') for name in names]


# -- round trips -----------------------------------------------------------------------


def kind_of(sql: str) -> str:
    """What a request is for: a SQL statement, or the driver's BEGIN, COMMIT, SET..."""
    text = " ".join(sql.split()).rstrip(";").strip()
    upper = text.upper()
    if upper in ("", "SELECT 1"):
        return "pre-ping"
    first = upper.split(" ", 1)[0]
    if first in ("BEGIN", "START"):
        return "BEGIN"
    if first in ("COMMIT", "ROLLBACK"):
        return first
    if first in ("SET", "PRAGMA", "SHOW"):
        return re.sub(r"\s*=.*$", "", text)
    return "SQL statement"


_PYMYSQL_COMMANDS = {3: None, 14: "pre-ping", 1: "QUIT"}
_pymysql_recorders: list[RoundTrips] = []
_pymysql_patched = False


def _patch_pymysql() -> None:
    """Count every command packet PyMySQL sends (one wrapper for the whole process)."""
    global _pymysql_patched
    if _pymysql_patched:
        return
    from pymysql import connections

    original = connections.Connection._execute_command

    def execute_command(self: Any, command: int, sql: Any) -> Any:
        for recorder in _pymysql_recorders:
            if recorder.recording:
                kind = _PYMYSQL_COMMANDS.get(command, f"command {command}")
                if kind is None:
                    text = sql.decode(errors="replace") if isinstance(sql, bytes) else str(sql)
                    kind = kind_of(text)
                recorder.kinds[kind] += 1
        return original(self, command, sql)

    connections.Connection._execute_command = execute_command
    _pymysql_patched = True


_PG_MESSAGE = re.compile(r"^([FB])\t\d+\t(\w+)\t?(.*)$")
_PG_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _pg_bursts(lines: Iterator[str]) -> Iterator[list[tuple[str, str]]]:
    """The client's bursts in a libpq trace: messages sent before reading an answer."""
    burst: list[tuple[str, str]] = []
    for line in lines:
        match = _PG_MESSAGE.match(line)
        if match is None:
            continue
        side, message, rest = match.groups()
        if side == "F":
            burst.append((message, rest))
        elif burst:
            yield burst
            burst = []
    if burst:
        yield burst


def _pg_kind(burst: list[tuple[str, str]]) -> str:
    messages = [message for message, _ in burst]
    if messages == ["Terminate"]:
        return "QUIT"
    for message, rest in burst:
        quoted = _PG_QUOTED.findall(rest)
        if message == "Query":
            return kind_of(quoted[0] if quoted else "")
        if message == "Parse":
            if "Bind" not in messages:
                return "prepare (psycopg)"
            return kind_of(quoted[1] if len(quoted) > 1 else "")
        if message == "Bind":
            return "SQL statement"  # a statement psycopg prepared earlier
    return "other: " + "+".join(messages)


class RoundTrips:
    """Counts what the driver of ``engine`` sends, by kind, while ``recording``.

    Attach before the store first connects, or call it right after creating it: the
    engine's pooled connections are closed so that every connection is a watched one.
    """

    SUPPORTED = ("sqlite+pysqlite", "postgresql+psycopg", "mysql+pymysql", "mariadb+pymysql")

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.driver = f"{engine.dialect.name}+{engine.dialect.driver}"
        self.supported = self.driver in self.SUPPORTED
        self.kinds: collections.Counter[str] = collections.Counter()
        self.recording = False
        self._connections: list[Any] = []
        self._traces: list[tuple[Any, str, int]] = []
        if not self.supported:
            return
        if self.driver.endswith("+pymysql"):
            _patch_pymysql()
            _pymysql_recorders.append(self)
        sa.event.listen(engine, "connect", self._on_connect)
        engine.dispose()

    @property
    def total(self) -> int:
        """All round trips counted so far."""
        return sum(self.kinds.values())

    def _on_connect(self, dbapi_connection: Any, _record: Any) -> None:
        self._connections.append(dbapi_connection)
        if self.recording:
            self._watch(dbapi_connection)

    def _watch(self, connection: Any) -> None:
        if self.driver == "sqlite+pysqlite":
            connection.set_trace_callback(self._on_sqlite_statement)
        elif self.driver == "postgresql+psycopg":
            if connection.closed:
                return
            from psycopg import pq

            descriptor, path = tempfile.mkstemp(prefix="bench-libpq-trace-")
            connection.pgconn.trace(descriptor)
            connection.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
            self._traces.append((connection, path, descriptor))

    def _on_sqlite_statement(self, sql: str) -> None:
        self.kinds[kind_of(sql)] += 1

    def start(self) -> None:
        """Start counting."""
        self.recording = True
        for connection in self._connections:
            try:
                self._watch(connection)
            except Exception:  # noqa: BLE001 - a connection the pool closed meanwhile
                continue

    def stop(self) -> None:
        """Stop counting; read what libpq traced."""
        self.recording = False
        for connection in self._connections:
            if self.driver == "sqlite+pysqlite":
                try:
                    connection.set_trace_callback(None)
                except Exception:  # noqa: BLE001 - a connection the pool closed meanwhile
                    continue
        traces, self._traces = self._traces, []
        for connection, path, descriptor in traces:
            if not connection.closed:
                connection.pgconn.untrace()  # flushes the trace file
            # libpq's stream on it stays open but empty: closing the file is enough.
            os.close(descriptor)
            try:
                with open(path, encoding="utf-8", errors="replace") as lines:
                    for burst in _pg_bursts(lines):
                        self.kinds[_pg_kind(burst)] += 1
            finally:
                os.unlink(path)

    def count(self, run: Callable[[], None]) -> collections.Counter[str]:
        """Count what ``run()`` sends; return the counts by kind (and keep them)."""
        self.kinds.clear()
        self.start()
        try:
            run()
        finally:
            self.stop()
        return collections.Counter(self.kinds)

    def close(self) -> None:
        """Stop watching the engine."""
        if not self.supported:
            return
        sa.event.remove(self.engine, "connect", self._on_connect)
        if self in _pymysql_recorders:
            _pymysql_recorders.remove(self)
        self._connections.clear()
