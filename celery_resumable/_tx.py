"""Checkpoint writes inside the caller's own SQLAlchemy transaction."""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from ._codec import encode
from ._context import Run, current_run
from ._records import FinishedStep, State
from .errors import LeaseLostError, NotInStepError

__all__ = ["set_step_cursor_tx", "set_step_tx"]


def set_step_tx(conn: Connection | Session, result: object = None) -> None:
    """Mark the running step finished, with ``result``, inside ``conn``'s transaction.

    The checkpoint commits or rolls back with the caller's writes; the run's state
    changes only when the transaction commits. A skipped step then returns ``result``.
    Raises NotInStepError, NotInResumableTaskError, CursorEncodeError,
    CheckpointStoreError (no checkpoint table or row in ``conn``'s database),
    LeaseLostError, and TaskInterrupted (before writing) when the run must stop.
    """
    run, name = _running_step("set_step_tx")
    encoded = encode(result, f"the result of step {name!r}")
    state = State((*run.finished, FinishedStep(name, encoded)), None, None, run.interruptions)

    def apply() -> None:
        run.finished.append(FinishedStep(name, encoded))
        run.in_progress = None
        run.finished_by_tx = name

    _write(run, conn, state, apply)


def set_step_cursor_tx(conn: Connection | Session, cursor: object) -> None:
    """Save ``cursor`` as the running step's cursor inside ``conn``'s transaction.

    Like ``set_step_tx``: the cursor commits or rolls back with the caller's writes and
    the run's state changes only on commit. Raises what ``set_step_tx`` raises.
    """
    run, name = _running_step("set_step_cursor_tx")
    encoded = encode(cursor, f"the cursor of step {name!r}")
    state = State(tuple(run.finished), name, encoded, run.interruptions)

    def apply() -> None:
        run.in_progress = (name, encoded)
        run.progressed = True

    _write(run, conn, state, apply)


def _running_step(function: str) -> tuple[Run, str]:
    run = current_run(function)
    if run.active is None:
        raise NotInStepError(function)
    # Stopping here rolls the caller's transaction back: its work is redone, never lost.
    run.check_stop("cursor")
    run.unconfirmed = False  # code went on after the last commit, so it succeeded
    return run, run.active


def _connection_of(conn: Connection | Session) -> Connection:
    if isinstance(conn, Session):
        return conn.connection()
    if isinstance(conn, Connection):
        return conn
    raise TypeError(f"expected a SQLAlchemy Connection or Session, not {type(conn).__qualname__}")


def _write(run: Run, conn: Connection | Session, state: State, apply: Callable[[], None]) -> None:
    connection = _connection_of(conn)
    store = run.store
    if store is None or run.task_id is None:
        return  # a direct call: nothing is persisted, like every other write
    run.ensure_loaded()
    task_id = run.task_id
    if not store.save_in_transaction(connection, task_id, run.owner, state, run.lease_seconds):
        run.lease_lost = True
        raise LeaseLostError(task_id)
    run.tx_writes += 1
    _on_commit(connection, run, run.tx_writes, apply)


def _on_commit(connection: Connection, run: Run, sequence: int, apply: Callable[[], None]) -> None:
    def committed() -> None:
        if run.tx_writes == sequence:
            apply()
            run.dirty = False
            run.unconfirmed = True
            run.last_write = time.monotonic()

    callbacks = _pending.get(connection)
    if callbacks is None:
        callbacks = _pending[connection] = []
        event.listen(connection, "commit", _committed)
        event.listen(connection, "rollback", _rolled_back)
    callbacks.append(committed)


# What to apply when a connection's transaction commits; one listener pair per connection.
_pending: weakref.WeakKeyDictionary[Connection, list[Callable[[], None]]] = (
    weakref.WeakKeyDictionary()
)


def _committed(connection: Connection) -> None:
    callbacks = _pending.get(connection)
    if callbacks:
        applied, callbacks[:] = list(callbacks), []
        for apply in applied:
            apply()


def _rolled_back(connection: Connection) -> None:
    callbacks = _pending.get(connection)
    if callbacks:
        callbacks.clear()
