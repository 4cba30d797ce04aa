"""SQLAlchemy engines of the checkpoint stores: one per URL in each process."""

from __future__ import annotations

import importlib
import os
import re
import threading
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Engine

from celery_resumable.store import held

__all__ = [
    "STATEMENT_TIMEOUT",
    "dispose_engine",
    "engine_for",
    "is_django_url",
    "parsed_url",
    "pool_size",
    "safe_url",
    "secrets_of",
]

# Store statements are small: one that waits longer than this is stuck (a lock held by
# another transaction, a half-open connection) and fails instead of starving the others.
STATEMENT_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0

# Query-string parameters of a URL whose value is a secret.
_SECRET_PARAMETERS = frozenset({"password", "passwd", "pwd", "sslpassword", "secret", "token"})

# Engines are per process: a forked prefork child must not reuse its parent's sockets.
_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def _forget_engines_after_fork() -> None:
    for engine in _engines.values():
        engine.dispose(close=False)


_fork_hook = False


def engine_for(url: str) -> Engine:
    """Return this process's engine for ``url``, creating it on first use."""
    global _fork_hook
    engine = _engines.get(url)
    if engine is not None:
        return engine
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            if not _fork_hook:
                _fork_hook = True
                os.register_at_fork(after_in_child=_forget_engines_after_fork)
            engine = _create_engine(url)
            _engines[url] = engine
        return engine


def dispose_engine(url: str) -> None:
    """Close this process's engine for ``url`` and forget it (a test's database is gone)."""
    with _engines_lock:
        engine = _engines.pop(url, None)
    held.drop_all(url)
    if engine is not None:
        engine.dispose()


def _create_engine(url: str) -> Engine:
    # Every statement of the store commits on its own (autocommit), so a connection
    # needs no BEGIN, COMMIT or reset when it goes back to the pool, and no ping before
    # use: the store runs a statement again once when its connection was dropped. The
    # connection used last is taken first: SQLite keeps its page cache (a connection
    # finding that another one wrote since its last use reloads it), and a server may
    # time out the connections a quiet process no longer needs.
    parsed = _parsed(url)
    options: dict[str, Any] = {
        "isolation_level": "AUTOCOMMIT",
        "pool_reset_on_return": None,
        "skip_autocommit_rollback": True,
        "pool_use_lifo": True,
    }
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(parsed, connect_args={"timeout": STATEMENT_TIMEOUT}, **options)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    size = pool_size()
    return sa.create_engine(
        parsed, connect_args=_timeouts(parsed), pool_size=size, max_overflow=size, **options
    )


# A ``django`` store URL is resolved from Django's settings by this module, imported by
# name for such a URL only: importing the store never imports Django.
_DJANGO_DATABASE = "celery_resumable.contrib.django.database"


def is_django_url(url: str) -> bool:
    """Whether ``url`` names a database of Django's settings (``django``, ``django://ALIAS``)."""
    return url == "django" or url.startswith("django://")


def _parsed(url: str) -> URL:
    """``url`` parsed; a ``django`` URL becomes the URL of that Django database."""
    if is_django_url(url):
        database = importlib.import_module(_DJANGO_DATABASE)
        found: URL = database.store_url(url)
        return found
    return parsed_url(url)


def parsed_url(url: str) -> URL:
    """``url`` parsed; raises ArgumentError (never a bare ValueError, such as a port
    that is not a number) when it is not a SQLAlchemy URL."""
    try:
        return sa.engine.make_url(url)
    except sa_exc.ArgumentError:
        raise
    except (ValueError, TypeError, AttributeError):
        # The driver's own message may quote the URL, password included.
        raise sa_exc.ArgumentError("Could not parse SQLAlchemy URL from given URL string") from None


def pool_size() -> int:
    """Connections kept per process: one per concurrent run, plus the lease keeper's."""
    return max(concurrency, 1) + 1


# The concurrency of the worker running in this process (set when the worker starts).
concurrency = os.cpu_count() or 2


def set_concurrency(value: object) -> None:
    """Size the pools of engines made from now on for ``value`` concurrent runs."""
    global concurrency
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        concurrency = value


def _timeouts(url: URL) -> dict[str, Any]:
    """Connect and statement timeouts for ``url``'s driver, unless the URL sets its own."""
    backend = url.get_backend_name()
    timeouts: dict[str, Any] = {}
    if backend == "postgresql":
        timeouts["connect_timeout"] = int(CONNECT_TIMEOUT)
        if url.get_driver_name() in ("psycopg", "psycopg2"):
            timeouts["options"] = f"-c statement_timeout={int(STATEMENT_TIMEOUT * 1000)}"
    elif backend in ("mysql", "mariadb"):
        timeouts["connect_timeout"] = int(CONNECT_TIMEOUT)
        timeouts["read_timeout"] = int(STATEMENT_TIMEOUT)
        timeouts["write_timeout"] = int(STATEMENT_TIMEOUT)
    return {name: value for name, value in timeouts.items() if name not in url.query}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def safe_url(url: str) -> str:
    """``url`` with its password and secret query parameters replaced by ``***``."""
    if is_django_url(url):
        return url  # an alias of settings.DATABASES: no secret in it
    try:
        parsed = sa.engine.make_url(url)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown masked by pattern
        return _masked(url)
    hidden = {name: "HIDDEN" for name in parsed.query if name.lower() in _SECRET_PARAMETERS}
    rendered = parsed.update_query_dict(hidden).render_as_string(hide_password=True)
    return rendered.replace("=HIDDEN", "=***")


def secrets_of(url: str) -> tuple[str, ...]:
    """The secrets of ``url`` (its password, secret query parameters); for a ``django``
    URL, those of the Django database's settings, or none while they cannot be read."""
    try:
        parsed = _parsed(url)
    except Exception:  # noqa: BLE001 - an unusable URL fails later with a clear error
        return ()
    found = [str(parsed.password)] if parsed.password else []
    for name, value in parsed.query.items():
        if name.lower() in _SECRET_PARAMETERS:
            found.extend([value] if isinstance(value, str) else list(value))
    return tuple(secret for secret in found if secret)


# In a string that is no URL: what follows "user:" up to the last "@", and the value of a
# secret query parameter.
_USER_PASSWORD = re.compile(r"^(?P<head>(?:[^:/@]*://)?[^:/@]*:).*@$", re.DOTALL)
_SECRET_VALUE = re.compile(
    rf"(?P<head>[?&;](?:{'|'.join(sorted(_SECRET_PARAMETERS))})=)[^&;]*", re.IGNORECASE
)


def _masked(text: str) -> str:
    """``text``, which SQLAlchemy cannot parse, with what may be a secret replaced by ``***``."""
    if not isinstance(text, str):
        return "<not a string>"
    if "@" in text:
        head, _, host = text.rpartition("@")
        text = _USER_PASSWORD.sub(r"\g<head>***@", head + "@") + host
    return _SECRET_VALUE.sub(r"\g<head>***", text)
