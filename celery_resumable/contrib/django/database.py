"""The checkpoint store in a Django project's own database.

``resumable_store_url = "django"`` (or ``"django://ALIAS"``) names a database of
``settings.DATABASES``; this module turns its settings into the SQLAlchemy URL the
store's engine uses, and gives the SQLAlchemy dialect that speaks to a Django
connection's cursor (for the transactional writes and the table migration).
Django is imported only when these functions are called.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Dialect

from celery_resumable.errors import CheckpointStoreError

__all__ = [
    "alias_of",
    "connection_for",
    "create_table",
    "dialect_of",
    "drop_table",
    "sqlalchemy_url",
    "store_url",
]

logger = logging.getLogger("celery_resumable.store")

SCHEME = "django"
_PREFIX = SCHEME + "://"

# OPTIONS that Django's own backends act on; the rest go to the driver, as Django does.
_DJANGO_OPTIONS = {
    "postgresql": frozenset({"isolation_level", "server_side_binding", "pool", "assume_role"}),
    "mysql": frozenset({"isolation_level", "autocommit"}),
    "sqlite": frozenset(),
}
# The SQLAlchemy driver name of each DB-API module Django's backends load.
_DRIVERS = {
    "psycopg": "psycopg",
    "psycopg2": "psycopg2",
    "pymysql": "pymysql",
    "MySQLdb": "mysqldb",
    "sqlite3": "pysqlite",
    "sqlite3.dbapi2": "pysqlite",
}
_SUPPORTED = "PostgreSQL, MySQL/MariaDB and SQLite"


def alias_of(url: str) -> str:
    """The database alias named by a ``django`` store URL (``default`` for plain ``django``)."""
    alias = url[len(_PREFIX) :] if url.startswith(_PREFIX) else ""
    if url == SCHEME:
        return "default"
    if not alias or "/" in alias or "?" in alias:
        raise CheckpointStoreError(
            f"resumable_store_url {url!r} is not a Django database: use 'django' or "
            "'django://ALIAS' with an alias of settings.DATABASES"
        )
    return alias


def connection_for(alias: str) -> Any:
    """Django's connection for ``alias`` (not connected yet); a clear error when it is missing."""
    # Without Django this import fails, and the store explains its ImportError as it
    # explains any driver that is not installed.
    from django.core.exceptions import ImproperlyConfigured
    from django.db import connections
    from django.utils.connection import ConnectionDoesNotExist

    try:
        return connections[alias]
    except ConnectionDoesNotExist:
        raise CheckpointStoreError(
            f"resumable_store_url names the Django database {alias!r}, which "
            "settings.DATABASES does not define"
        ) from None
    except ImproperlyConfigured as exc:
        raise CheckpointStoreError(
            f"resumable_store_url names a Django database but Django's settings are not "
            f"configured (set DJANGO_SETTINGS_MODULE before the worker starts): {exc}"
        ) from None


def store_url(url: str) -> URL:
    """The SQLAlchemy URL of the Django database a ``django`` store URL names."""
    alias = alias_of(url)
    connection = connection_for(alias)
    return sqlalchemy_url(
        connection.settings_dict, connection.vendor, connection.Database.__name__, alias
    )


def sqlalchemy_url(
    settings: Mapping[str, Any], vendor: str, driver_module: str, alias: str = "default"
) -> URL:
    """The SQLAlchemy URL of a Django database, from its settings (``DATABASES[alias]``).

    ``vendor`` is the backend's ``connection.vendor`` and ``driver_module`` the name of
    the DB-API module it loaded, so the store uses the driver Django already uses.
    Raises CheckpointStoreError for a backend the store does not support.
    """
    where = f"the Django database {alias!r}"
    drivername = _drivername(vendor, driver_module, where)
    if vendor == "sqlite":
        return URL.create(drivername, database=_sqlite_path(settings.get("NAME"), where))
    options = dict(settings.get("OPTIONS") or {})
    query: dict[str, str] = {}
    host = str(settings.get("HOST") or "") or None
    if host is not None and host.startswith("/"):
        # A Unix socket directory (PostgreSQL) or socket file (MySQL), as Django reads it.
        query["host" if vendor == "postgresql" else "unix_socket"] = host
        host = None
    if vendor == "mysql":
        ssl = options.pop("ssl", None)
        if isinstance(ssl, Mapping):
            query.update({f"ssl_{name}": str(value) for name, value in ssl.items()})
    for name, value in options.items():
        if name in _DJANGO_OPTIONS[vendor]:
            continue
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            query[name] = str(value)
        else:
            logger.debug("%s: OPTIONS[%r] is not passed to the checkpoint store", where, name)
    port = settings.get("PORT")
    return URL.create(
        drivername,
        username=str(settings.get("USER") or "") or None,
        password=str(settings.get("PASSWORD") or "") or None,
        host=host,
        port=int(port) if port not in (None, "") else None,
        database=str(settings.get("NAME") or "") or None,
        query=query,
    )


def _drivername(vendor: str, driver_module: str, where: str) -> str:
    if vendor not in _DJANGO_OPTIONS:
        raise CheckpointStoreError(
            f"{where} uses the {vendor!r} backend; the checkpoint store supports {_SUPPORTED}"
        )
    driver = _DRIVERS.get(driver_module)
    if driver is None:
        raise CheckpointStoreError(
            f"{where} uses the driver {driver_module!r}, which the checkpoint store does not know"
        )
    return f"{vendor}+{driver}"


def _sqlite_path(name: Any, where: str) -> str:
    path = str(name or "")
    if not path or path == ":memory:" or "mode=memory" in path:
        raise CheckpointStoreError(
            f"{where} is an in-memory SQLite database, which the checkpoint store cannot "
            "share; use a database file"
        )
    return path


_dialects: dict[tuple[str, str], Dialect] = {}


def dialect_of(connection: Any) -> Dialect:
    """The SQLAlchemy dialect of a Django connection, compiling to its ``%s`` placeholders."""
    vendor, module = connection.vendor, connection.Database.__name__
    dialect = _dialects.get((vendor, module))
    if dialect is None:
        where = f"the Django database {connection.alias!r}"
        dialect_class: Any = URL.create(_drivername(vendor, module, where)).get_dialect()
        dialect = dialect_class(paramstyle="format", dbapi=connection.Database)
        _dialects[(vendor, module)] = dialect
    return dialect


def create_table(schema_editor: Any, table_name: str) -> None:
    """Create the checkpoint table and its index through a Django migration's schema editor.

    The table is the one ``resumable_create_tables`` would create; an existing table is
    kept as it is.
    """
    from celery_resumable.config import check_table_name
    from celery_resumable.store.schema import indexes, table

    connection = schema_editor.connection
    checkpoints = table(check_table_name(table_name))
    if table_name in connection.introspection.table_names():
        return
    dialect = dialect_of(connection)
    schema_editor.execute(str(sa.schema.CreateTable(checkpoints).compile(dialect=dialect)), None)
    for index in indexes(checkpoints, dialect.name):
        schema_editor.execute(str(sa.schema.CreateIndex(index).compile(dialect=dialect)), None)


def drop_table(schema_editor: Any, table_name: str) -> None:
    """Drop the checkpoint table (the migration reversed)."""
    from celery_resumable.config import check_table_name

    connection = schema_editor.connection
    if check_table_name(table_name) in connection.introspection.table_names():
        schema_editor.execute(f"DROP TABLE {connection.ops.quote_name(table_name)}", None)
