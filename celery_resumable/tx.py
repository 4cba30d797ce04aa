"""Checkpoint writes inside the caller's own SQLAlchemy (or Django) transaction."""

from __future__ import annotations

import sys
import weakref
from typing import Any, TypeAlias

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, ExceptionContext
from sqlalchemy.orm import Session

from celery_resumable.codec.encode import encode
from celery_resumable.errors import NotInStepError
from celery_resumable.run.context import Run, TxChange, current_run
from celery_resumable.steps import cursor_scope

__all__ = ["set_step_cursor_tx", "set_step_tx"]

# ``django.db.connection`` or ``django.db.connections[alias]`` (see ``_django_tx``).
DjangoConnection: TypeAlias = Any


def set_step_tx(conn: Connection | Session | DjangoConnection, result: object = None) -> None:
    """Mark the running step finished, with ``result``, inside ``conn``'s transaction.

    ``conn`` is a SQLAlchemy ``Connection`` or ``Session``, or Django's ``connection``
    (or ``connections[alias]``) inside ``transaction.atomic()``: the run's state then
    follows the outermost atomic block's commit (TransactionManagementError outside one).

    The checkpoint commits or rolls back with the caller's writes; the run's state
    changes only when the transaction commits. A skipped step then returns ``result``.
    The transaction may end inside the step or after it returns.
    Raises NotInStepError, NotInResumableTaskError, CursorEncodeError,
    CheckpointStoreError (no checkpoint table or row in ``conn``'s database; an error of
    the caller's database is its ``__cause__``), LeaseLostError, and TaskInterrupted
    (before writing) when the run must stop.
    """
    run = current_run("set_step_tx")
    _write(run, conn, "set_step_tx", True, result, "the result")


def set_step_cursor_tx(conn: Connection | Session | DjangoConnection, cursor: object) -> None:
    """Save ``cursor`` as the running step's cursor inside ``conn``'s transaction.

    Like ``set_step_tx``: the cursor commits or rolls back with the caller's writes and
    the run's state changes only on commit. Raises what ``set_step_tx`` raises.
    """
    run = current_run("set_step_cursor_tx")
    _write(run, conn, "set_step_cursor_tx", False, cursor, "the cursor")


def _connection_of(conn: Connection | Session) -> Connection:
    if isinstance(conn, Session):
        return conn.connection()
    if isinstance(conn, Connection):
        return conn
    django = "; or Django's connection, or connections[alias]" if "django.db" in sys.modules else ""
    raise TypeError(
        f"expected a SQLAlchemy Connection or Session, not {type(conn).__qualname__}{django}"
    )


def _is_django(conn: object) -> bool:
    # Without django.db imported, nothing can be one of its connections.
    if "django.db" not in sys.modules:
        return False
    from celery_resumable.contrib.django.tx import is_django_connection

    return is_django_connection(conn)


def _write(
    run: Run,
    conn: Connection | Session | DjangoConnection,
    function: str,
    finish: bool,
    value: object,
    what: str,
) -> None:
    if _is_django(conn):
        from celery_resumable.contrib.django.tx import write

        write(run, conn, function, finish, value, what)
        return
    connection = _connection_of(conn)
    step = run.active
    if step is None:
        raise NotInStepError(function)
    # A cursor is checked against how the step_cursor function reads it back.
    scope = None if finish else cursor_scope()
    encoded = encode(value, f"{what} of step {step!r}", scope=scope)
    # Validates the call and stops the run here, before anything is written.
    change = run.tx_change(function, finish, encoded)
    store = run.store
    if store is None or run.task_id is None or not run.claimed:
        return  # a direct call: nothing is persisted, like every other write
    if not store.save_in_transaction(
        connection, run.task_id, run.owner, change.state, run.lease_seconds, run.stored_steps
    ):
        run.tx_lost()
    run.tx_written(change)
    _on_end(connection, run, change)


# SQLAlchemy's ``commit`` event fires before the database commits, and a COMMIT can fail
# (a serialization failure detected at commit, a dropped connection). So a commit event
# only moves a change to "committing"; a failure of that COMMIT, seen by the engine's
# ``handle_error`` event, moves it back, and the run counts it as committed only when
# its own code goes on (``Run`` settles committing changes at its next call), which
# happens after the COMMIT returned.

# The changes of each connection's open transaction, then of its COMMIT under way.
_pending: weakref.WeakKeyDictionary[Connection, list[tuple[Run, TxChange]]] = (
    weakref.WeakKeyDictionary()
)
_committing: weakref.WeakKeyDictionary[Connection, list[tuple[Run, TxChange]]] = (
    weakref.WeakKeyDictionary()
)
_engines_watched: weakref.WeakSet[Engine] = weakref.WeakSet()


def _on_end(connection: Connection, run: Run, change: TxChange) -> None:
    changes = _pending.get(connection)
    if changes is None:
        changes = _pending[connection] = []
        event.listen(connection, "commit", _committed)
        event.listen(connection, "rollback", _rolled_back)
    engine = connection.engine
    if engine not in _engines_watched:
        _engines_watched.add(engine)
        event.listen(engine, "handle_error", _failed)
    changes.append((run, change))


def _committed(connection: Connection) -> None:
    changes = _pending.get(connection)
    _committing[connection] = ended = list(changes or ())
    if changes:
        changes.clear()
    for run, change in ended:
        run.tx_committing(change)


def _rolled_back(connection: Connection) -> None:
    changes = _pending.get(connection)
    if changes:
        ended, changes[:] = list(changes), []
        for run, change in ended:
            run.tx_rolled_back(change)


def _failed(context: ExceptionContext) -> None:
    # A statement-less error is a failed BEGIN, COMMIT or ROLLBACK; only a COMMIT in
    # progress has committing changes that the run has not settled yet.
    connection = context.connection
    if context.statement is not None or connection is None:
        return
    ended = _committing.pop(connection, None)
    for run, change in ended or ():
        run.tx_commit_failed(change, unknown=context.is_disconnect)
