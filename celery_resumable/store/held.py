"""The connections of a run's statements: idle ones kept by store URL, each with its cursor.

A run sends two statements (its claim and its completion). Checking a connection out of
SQLAlchemy's pool and back in around each costs more Python than the rest of the
statement's plumbing, so the hot path keeps its own connections instead: made by the
engine (its ``connect`` events, timeouts and autocommit applied), then detached from
its pool, and kept, with one cursor each, on a stack per URL. A statement takes the
connection used last (a SQLite connection keeps its page cache; a server may close the
ones a quiet process no longer needs) and gives it back after; no pre-ping, no reset (every
statement commits on its own). The stack is not tied to a thread, so a gevent or
eventlet pool shares it as threads do, and it keeps at most ``engines.pool_size()``
connections: one per concurrent run, plus the lease keeper's.

A connection an exception interrupted is closed, never given back (see ``abandon``); a
connection the database dropped is closed with every idle one of its URL (a database
restart drops them all). A forked child leaves its parent's connections alone (closing
one would end the parent's session); the process closes its own when it exits.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from typing import Any, NamedTuple

from sqlalchemy.engine import Engine

__all__ = ["Held", "close", "drop_all", "give_back", "take"]


class Held(NamedTuple):
    """A DBAPI connection of the hot path, and its cursor."""

    connection: Any
    cursor: Any


_idle: dict[str, list[Held]] = {}
_lock = threading.Lock()
_hooks = False
# The connections a forked child found idle: its parent's, kept referenced so that they
# are never finalized (and closed) from the child.
_inherited: list[Held] = []


def take(url: str, engine: Engine) -> Held:
    """The idle connection of ``url`` used last, or a new one made by ``engine``.

    Driver errors while connecting pass as they are.
    """
    stack = _idle.get(url)
    if stack is None:
        stack = _stack(url)
    try:
        return stack.pop()
    except IndexError:
        pass
    fairy = engine.raw_connection()
    fairy.detach()
    connection: Any = fairy.dbapi_connection
    return Held(connection, connection.cursor())


def give_back(url: str, held: Held, limit: int) -> None:
    """Keep ``held`` for the next statement of ``url``; closed when ``limit`` are idle."""
    stack = _idle.get(url)
    if stack is not None and len(stack) < limit:
        stack.append(held)
    else:
        close(held)


def close(held: Held) -> None:
    """Close ``held`` (an exception interrupted it, or its database dropped it)."""
    with contextlib.suppress(Exception):
        held.cursor.close()
    with contextlib.suppress(Exception):
        held.connection.close()


def drop_all(url: str, *, closing: bool = True) -> None:
    """Close (or only forget) every idle connection of ``url``."""
    stack = _idle.get(url)
    while stack:
        try:
            held = stack.pop()
        except IndexError:
            break
        if closing:
            close(held)


def _stack(url: str) -> list[Held]:
    global _hooks
    with _lock:
        if not _hooks:
            _hooks = True
            os.register_at_fork(after_in_child=_forget_after_fork)
            atexit.register(_close_all)
        return _idle.setdefault(url, [])


def _forget_after_fork() -> None:
    for stack in _idle.values():
        _inherited.extend(stack)
        stack.clear()


def _close_all() -> None:
    for url in list(_idle):
        drop_all(url)
