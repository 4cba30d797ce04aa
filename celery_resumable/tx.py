"""Checkpoint writes inside the caller's own transaction.

One flow serves every kind of connection: check the call, let the run prepare the
change (``Run.tx_change``), write it fenced on the lease in the caller's transaction,
and tell the run how that transaction ended. What the flow needs of a connection is a
``Transaction``; ``SQLAlchemyTransaction`` is the one of a SQLAlchemy ``Connection`` or
``Session``. Django's connections are understood by ``celery_resumable.contrib.django.tx``
(its ``transaction_of``), imported by name once ``django.db`` is: before that no
Django connection can exist, and importing this package never imports Django.
"""

from __future__ import annotations

import importlib
import sys
import weakref
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeAlias

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, ExceptionContext
from sqlalchemy.orm import Session

from celery_resumable.codec.encode import encode
from celery_resumable.errors import NotInStepError
from celery_resumable.run.context import Run, TxChange, current_run
from celery_resumable.steps import cursor_scope
from celery_resumable.store.records import State

if TYPE_CHECKING:
    from celery_resumable.store.store import CheckpointStore

__all__ = [
    "SQLAlchemyTransaction",
    "Transaction",
    "TxEnding",
    "TxWrite",
    "set_step_cursor_tx",
    "set_step_tx",
]

# ``django.db.connection`` or ``django.db.connections[alias]``.
DjangoConnection: TypeAlias = Any

# The module that understands Django's connections, and the module whose import says a
# Django connection may exist.
_DJANGO_ADAPTER = "celery_resumable.contrib.django.tx"
_DJANGO_DB = "django.db"


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
    the run's state changes only on commit. The cursor is checked against the step
    function's cursor type as ``set_cursor`` checks it (CursorEncodeError when it would
    not come back equal and of the same type). Raises what ``set_step_tx`` raises.
    """
    run = current_run("set_step_cursor_tx")
    _write(run, conn, "set_step_cursor_tx", False, cursor, "the cursor")


class TxEnding:
    """How the transaction of one write ends, told to its run; a ``Transaction`` calls it."""

    __slots__ = ("change", "run")

    def __init__(self, run: Run, change: TxChange) -> None:
        self.run = run
        self.change = change

    def committing(self) -> None:
        """The COMMIT was sent and may still fail (the run counts it once its code goes on)."""
        self.run.tx_committing(self.change)

    def committed(self) -> None:
        """The transaction committed."""
        self.run.tx_committed(self.change)

    def rolled_back(self) -> None:
        """The transaction (or the savepoint holding the write) rolled back."""
        self.run.tx_rolled_back(self.change)

    def commit_failed(self, *, unknown: bool) -> None:
        """The COMMIT failed; with ``unknown`` its connection was lost during it."""
        self.run.tx_commit_failed(self.change, unknown=unknown)


class TxWrite(NamedTuple):
    """What one write stores in the caller's transaction: in the order of
    ``CheckpointStore.save_in_transaction``'s arguments after the connection."""

    task_id: str
    owner: str
    state: State
    lease_seconds: float
    stored_steps: int


class Transaction(Protocol):
    """The caller's open transaction, as the transactional writes use it."""

    def save(self, store: CheckpointStore, write: TxWrite) -> bool:
        """Write ``write.state`` in this transaction, fenced on ``write.owner``'s lease.

        False when the owner no longer holds the lease. Raises CheckpointStoreError when
        the transaction's database has no checkpoint table holding the task, with the
        database's own error as its ``__cause__``.
        """
        ...  # pragma: no cover

    def on_end(self, ending: TxEnding) -> None:
        """Call ``ending`` when this transaction commits, rolls back or fails to commit."""
        ...  # pragma: no cover


def _write(
    run: Run,
    conn: Connection | Session | DjangoConnection,
    function: str,
    finish: bool,
    value: object,
    what: str,
) -> None:
    transaction = _transaction_of(conn, function)
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
    write = TxWrite(run.task_id, run.owner, change.state, run.lease_seconds, run.stored_steps)
    if not transaction.save(store, write):
        run.tx_lost()
    run.tx_written(change)
    transaction.on_end(TxEnding(run, change))


def _transaction_of(conn: object, function: str) -> Transaction:
    if isinstance(conn, Session):
        return SQLAlchemyTransaction(conn.connection())
    if isinstance(conn, Connection):
        return SQLAlchemyTransaction(conn)
    django = _DJANGO_DB in sys.modules
    if django:
        adapter = importlib.import_module(_DJANGO_ADAPTER)
        transaction: Transaction | None = adapter.transaction_of(conn, function)
        if transaction is not None:
            return transaction
    also = "; or Django's connection, or connections[alias]" if django else ""
    raise TypeError(
        f"expected a SQLAlchemy Connection or Session, not {type(conn).__qualname__}{also}"
    )


class SQLAlchemyTransaction:
    """The transaction open on a SQLAlchemy ``Connection`` (a ``Session``'s included)."""

    __slots__ = ("connection",)

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def save(self, store: CheckpointStore, write: TxWrite) -> bool:
        """Write on the connection, in its transaction, fenced on the lease."""
        return store.save_in_transaction(self.connection, *write)

    def on_end(self, ending: TxEnding) -> None:
        """Call ``ending`` from the connection's commit, rollback and failed COMMIT events."""
        connection = self.connection
        endings = _pending.get(connection)
        if endings is None:
            endings = _pending[connection] = []
            event.listen(connection, "commit", _committing_event)
            event.listen(connection, "rollback", _rolled_back_event)
        engine = connection.engine
        if engine not in _engines_watched:
            _engines_watched.add(engine)
            event.listen(engine, "handle_error", _failed_event)
        endings.append(ending)


# SQLAlchemy's ``commit`` event fires before the database commits, and a COMMIT can fail
# (a serialization failure detected at commit, a dropped connection). So a commit event
# only moves a change to "committing"; a failure of that COMMIT, seen by the engine's
# ``handle_error`` event, moves it back, and the run counts it as committed only when
# its own code goes on (``Run`` settles committing changes at its next call), which
# happens after the COMMIT returned.

# The writes of each connection's open transaction, then of its COMMIT under way.
_pending: weakref.WeakKeyDictionary[Connection, list[TxEnding]] = weakref.WeakKeyDictionary()
_committing: weakref.WeakKeyDictionary[Connection, list[TxEnding]] = weakref.WeakKeyDictionary()
_engines_watched: weakref.WeakSet[Engine] = weakref.WeakSet()


def _committing_event(connection: Connection) -> None:
    endings = _pending.get(connection)
    _committing[connection] = ended = list(endings or ())
    if endings:
        endings.clear()
    for ending in ended:
        ending.committing()


def _rolled_back_event(connection: Connection) -> None:
    endings = _pending.get(connection)
    if endings:
        ended, endings[:] = list(endings), []
        for ending in ended:
            ending.rolled_back()


def _failed_event(context: ExceptionContext) -> None:
    # A statement-less error is a failed BEGIN, COMMIT or ROLLBACK; only a COMMIT in
    # progress has committing writes that the run has not settled yet.
    connection = context.connection
    if context.statement is not None or connection is None:
        return
    for ending in _committing.pop(connection, None) or ():
        ending.commit_failed(unknown=context.is_disconnect)
