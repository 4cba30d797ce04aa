"""Database errors translated into CheckpointStoreError, in one place.

A fault is *transient* when the store could not be reached or did not answer in time
(the same call may succeed later: defer and retry) and *permanent* otherwise (no table,
no permission, a value the database refuses, and a store URL that cannot work: a
database, user or host that does not exist, a wrong password, a driver that is not
installed; retrying cannot help).

Faults of the store URL itself are explained in the user's terms: the setting, what is
wrong, and what to do.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import exc as sa_exc

from celery_resumable.errors import CheckpointStoreError
from celery_resumable.store.engines import CONNECT_TIMEOUT, parsed_url, safe_url

__all__ = ["diagnosis", "is_conflict", "is_transient", "translated"]

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
    {2002, 2003, 2006, 2013, 2014, 2055, 1040, 1053, 1205, 1213, 1927, 4031}
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
    if _connection_fault(error) in _PERMANENT_CONNECTION_FAULTS:
        return False
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
    task_id: str | None,
    what: str,
    secrets: tuple[str, ...],
    *,
    chain: bool = False,
    url: str | None = None,
) -> Iterator[None]:
    """Raise database errors inside the block as CheckpointStoreError.

    ``what`` completes "could not ...". Secrets are masked in the message. With
    ``chain`` the database error stays reachable as ``__cause__`` (for errors raised by
    the caller's own transaction); otherwise it is dropped, so that no traceback can
    carry the store's connection details. Given the store's ``url``, a fault of the URL
    itself (see ``diagnosis``) is explained instead of ``what``.
    """
    try:
        yield
    except CheckpointStoreError:
        raise
    except TRANSLATED as exc:
        error = store_error(exc, task_id, what, secrets, url)
        if chain:
            raise error from exc
        raise error from None


# The errors ``translated`` turns into CheckpointStoreError.
TRANSLATED = (sa_exc.SQLAlchemyError, OSError, ImportError)


def store_error(
    exc: BaseException, task_id: str | None, what: str, secrets: tuple[str, ...], url: str | None
) -> CheckpointStoreError:
    """The CheckpointStoreError saying that ``what`` failed with ``exc`` (see ``translated``)."""
    detail = _describe(exc)
    for secret in secrets:
        detail = detail.replace(secret, "***")
    explained = diagnosis(exc, url) if url is not None else None
    if explained is None:
        message = f"could not {what}: {detail}"
    elif _connection_fault(exc) is not None:
        message = f"{explained} ({detail})"  # the server's own words, for the record
    else:
        message = explained
    return CheckpointStoreError(message, task_id, is_transient(exc))


def _describe(error: BaseException) -> str:
    original = getattr(error, "orig", None)
    text = str(original if original is not None else error).strip()
    first_line = text.splitlines()[0] if text else type(error).__name__
    return f"{type(original or error).__name__}: {first_line}"[:500]


# -- faults of the store URL, in the user's terms ------------------------------------------

# What a connection fault is, by the words of PostgreSQL (libpq, psycopg) and MySQL
# (pymysql, mysqlclient). psycopg reports failures to connect without a SQLSTATE.
_UNKNOWN_HOST = (
    "could not translate host name",
    "name or service not known",
    "failed to resolve host",
    "nodename nor servname provided",
    "no address associated with hostname",
    "unknown mysql server host",
    "unknown host",
)
_BAD_LOGIN = (
    "password authentication failed",
    "no pg_hba.conf entry",
)
_MISSING_ROLE = re.compile(r'role "[^"]*" does not exist')
_MISSING_DATABASE = re.compile(r'database "[^"]*" does not exist|unknown database')
_PG_BAD_LOGIN = frozenset({"28000", "28P01"})
_MYSQL_BAD_LOGIN = frozenset({1045, 1698})

_PERMANENT_CONNECTION_FAULTS = frozenset({"unknown host", "no database", "bad login"})

_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}

# The URL forms of the supported drivers, and the extra that installs each.
_POSTGRES = ("postgresql+psycopg://user:password@host/db", "postgres")
_MYSQL = ("mysql+pymysql://user:password@host/db", "mysql")
_FORMS = (
    "postgresql+psycopg://user:password@host/db, mysql+pymysql://user:password@host/db "
    "or sqlite:///path"
)
_DRIVER_MODULES = {
    "psycopg": _POSTGRES,
    "psycopg2": _POSTGRES,
    "psycopg2cffi": _POSTGRES,
    "asyncpg": _POSTGRES,
    "pg8000": _POSTGRES,
    "pymysql": _MYSQL,
    "MySQLdb": _MYSQL,
    "mysql": _MYSQL,
    "mariadb": _MYSQL,
    "aiomysql": _MYSQL,
    "asyncmy": _MYSQL,
}


@dataclass(frozen=True)
class _Server:
    """Where the URL points, as far as it can be read."""

    backend: str
    address: str  # "host:port", or "the server" when the URL names none
    host: str | None
    user: str | None
    database: str | None


def _server(url: str) -> _Server | None:
    try:
        parsed = parsed_url(url)
    except Exception:  # noqa: BLE001 - an unparsable URL names no server
        return None
    backend = parsed.get_backend_name()
    port = parsed.port or _DEFAULT_PORTS.get(backend)
    address = f"{parsed.host}:{port}" if parsed.host and port else (parsed.host or "")
    return _Server(backend, address, parsed.host, parsed.username, parsed.database)


def _connection_fault(error: BaseException) -> str | None:
    """Which fault of connecting ``error`` is ("refused", "unknown host", "no database",
    "bad login", "timeout"), or None."""
    original = getattr(error, "orig", None)
    cause = original if original is not None else error
    if isinstance(cause, sqlite3.Error) or not isinstance(cause, Exception):
        return None
    text = str(cause).lower()
    sqlstate = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    code = cause.args[0] if cause.args and isinstance(cause.args[0], int) else None
    if sqlstate == "3D000" or code == 1049 or _MISSING_DATABASE.search(text):
        return "no database"
    if (
        sqlstate in _PG_BAD_LOGIN
        or code in _MYSQL_BAD_LOGIN
        or _MISSING_ROLE.search(text)
        or any(words in text for words in _BAD_LOGIN)
    ):
        return "bad login"
    if code == 2005 or any(words in text for words in _UNKNOWN_HOST):
        return "unknown host"
    if isinstance(cause, ConnectionRefusedError) or "connection refused" in text:
        return "refused"
    if "timeout expired" in text or (code == 2003 and "timed out" in text):
        return "timeout"
    return None


def diagnosis(error: BaseException, url: str) -> str | None:
    """What is wrong with the store URL ``url`` that ``error`` shows, and what to do.

    The message names the setting and the URL (its secrets masked); None when ``error``
    is not a fault of the URL (a missing table, a refused value, a lost connection).
    """
    setting = f"resumable_store_url = {safe_url(url)!r}"
    if isinstance(error, sa_exc.NoSuchModuleError):
        return f"could not open the checkpoint store ({setting}): {_unknown_scheme(error)}"
    if isinstance(error, sa_exc.ArgumentError) and "parse SQLAlchemy URL" in str(error):
        return (
            f"could not open the checkpoint store: {setting} is not a database URL; "
            f"write it as {_FORMS}"
        )
    if isinstance(error, ImportError):
        return f"could not open the checkpoint store ({setting}): {_missing_driver(error, url)}"
    fault = _connection_fault(error)
    if fault is None:
        return None
    server = _server(url)
    address = f"the server at {server.address}" if server and server.address else "the server"
    if fault == "refused":
        problem = f"{address} refused the connection: is it running?"
    elif fault == "timeout":
        problem = (
            f"{address} did not answer within {CONNECT_TIMEOUT:.0f} s: is it running, and "
            "reachable from here?"
        )
    elif fault == "unknown host":
        host = server.host if server else None
        problem = (
            f"the host {host!r} is not known (its name does not resolve); fix the host in the URL"
            if host
            else "the host of the URL is not known (its name does not resolve)"
        )
    elif fault == "no database":
        database = server.database if server else None
        problem = (
            f"the database {database!r} does not exist on {address}; create it, or fix the "
            "database name in the URL"
        )
    else:
        user = server.user if server else None
        problem = (
            f"{address} refused the user {user!r}: a wrong password, a user that does not "
            "exist, or one not allowed from this host; fix the user and password in the URL"
        )
    return f"could not connect to the checkpoint store ({setting}): {problem}"


def _unknown_scheme(error: BaseException) -> str:
    # "Can't load plugin: sqlalchemy.dialects:postgres" or "...:mysql.foo"
    name = str(error).rpartition(":")[2].strip()
    backend, _, driver = name.partition(".")
    form, extra = _suggestion(backend)
    if driver:
        unknown = f"SQLAlchemy has no driver {driver!r} for the database {backend!r}"
    else:
        unknown = f"SQLAlchemy does not know the database {backend!r}"
    if form is None:
        return f"{unknown}; write the URL as {_FORMS}"
    return f'{unknown}; write the URL as {form} (pip install "celery-resumable[{extra}]")'


def _missing_driver(error: ImportError, url: str) -> str:
    module = error.name or ""
    server = _server(url)
    known = _DRIVER_MODULES.get(module.partition(".")[0])
    form, extra = known if known else _suggestion(server.backend if server else "")
    if module == "django":
        return 'Django is not installed; pip install "celery-resumable[django]"'
    missing = f"the database driver {module!r} is not installed" if module else str(error)
    if form is None:
        return f"{missing}; install it, or write the URL as {_FORMS}"
    return (
        f'{missing}; pip install "celery-resumable[{extra}]" and write the URL as {form} '
        "(or install that driver yourself)"
    )


def _suggestion(backend: str) -> tuple[str | None, str | None]:
    """The URL form and extra for a database named ``backend`` (or a misspelling of it)."""
    name = backend.lower()
    if name.startswith(("postgres", "pg", "psycopg")):
        return _POSTGRES
    if name.startswith(("mysql", "maria")):
        return _MYSQL
    return None, None
