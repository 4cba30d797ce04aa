"""Database errors translated into CheckpointStoreError, in one place.

A fault is *transient* when the store could not be reached or did not answer in time
(the same call may succeed later: defer and retry) and *permanent* otherwise (no table,
no permission, a value the database refuses: retrying cannot help).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

from sqlalchemy import exc as sa_exc

from .errors import CheckpointStoreError

__all__ = ["is_conflict", "is_transient", "translated"]

# PostgreSQL SQLSTATEs of faults that pass: connection lost or refused by the server,
# too many connections, out of resources, serialization failures, a lock not granted,
# a statement cancelled by its timeout.
_PG_TRANSIENT = frozenset(
    {"57P01", "57P02", "57P03", "53000", "53100", "53200", "53300", "53400"}
    | {"40001", "40P01", "55P03", "57014"}
)
# MySQL/MariaDB error codes of the same kinds: cannot connect, server gone or lost,
# too many connections, lock wait timeout, deadlock, connection killed, server shutdown.
_MYSQL_TRANSIENT = frozenset(
    {2002, 2003, 2005, 2006, 2013, 2014, 2055, 1040, 1053, 1205, 1213, 1927, 4031}
)


# Deadlock victims and serialization failures: the database rolled the statement back
# and the same statement, run again, usually goes through.
_PG_CONFLICT = frozenset({"40001", "40P01"})
_MYSQL_CONFLICT = frozenset({1213})


def is_conflict(error: BaseException) -> bool:
    """Whether the database rolled ``error``'s statement back to break a deadlock."""
    original = getattr(error, "orig", None)
    if not isinstance(error, sa_exc.DBAPIError) or original is None:
        return False
    if _is_postgres_error(original):
        sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
        return sqlstate in _PG_CONFLICT
    code = original.args[0] if original.args else None
    return not isinstance(original, sqlite3.Error) and code in _MYSQL_CONFLICT


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` means the store could not be reached, rather than refused the call."""
    if isinstance(error, OSError | sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated or isinstance(error, sa_exc.InterfaceError):
            return True
        return _transient_driver_error(error.orig)
    return False


def _transient_driver_error(original: BaseException | None) -> bool:
    if original is None:
        return False
    if isinstance(original, sqlite3.OperationalError):
        text = str(original).lower()
        return "locked" in text or "busy" in text
    sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if _is_postgres_error(original):
        # psycopg reports failures to connect without a SQLSTATE.
        return sqlstate is None or sqlstate.startswith("08") or sqlstate in _PG_TRANSIENT
    code = original.args[0] if original.args else None
    return isinstance(code, int) and code in _MYSQL_TRANSIENT


def _is_postgres_error(error: BaseException) -> bool:
    module = type(error).__module__
    return module.startswith(("psycopg", "psycopg2", "asyncpg", "pg8000"))


@contextlib.contextmanager
def translated(
    task_id: str | None, what: str, secrets: tuple[str, ...], *, chain: bool = False
) -> Iterator[None]:
    """Raise database errors inside the block as CheckpointStoreError.

    ``what`` completes "could not ...". Secrets are masked in the message. With
    ``chain`` the database error stays reachable as ``__cause__`` (for errors raised by
    the caller's own transaction); otherwise it is dropped, so that no traceback can
    carry the store's connection details.
    """
    try:
        yield
    except CheckpointStoreError:
        raise
    except (sa_exc.SQLAlchemyError, OSError, ImportError) as exc:
        detail = _describe(exc)
        for secret in secrets:
            detail = detail.replace(secret, "***")
        error = CheckpointStoreError(f"could not {what}: {detail}", task_id, is_transient(exc))
        if chain:
            raise error from exc
        raise error from None


def _describe(error: BaseException) -> str:
    original = getattr(error, "orig", None)
    text = str(original if original is not None else error).strip()
    first_line = text.splitlines()[0] if text else type(error).__name__
    return f"{type(original or error).__name__}: {first_line}"[:500]
