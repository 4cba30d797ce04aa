"""What the store benchmarks share: the databases to measure, the header, the tables.

Run the benchmarks as modules from the repository root (``python -m benchmarks.NAME``):
the checkout's ``celery_resumable`` is then the one measured, and the header says which
copy it was.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import uuid
from collections.abc import Sequence
from pathlib import Path

import celery
import sqlalchemy as sa

import celery_resumable

ROOT = Path(__file__).resolve().parents[1]

POSTGRES_URL = os.environ.get(
    "RESUMABLE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("RESUMABLE_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/12")

BACKENDS = {
    "sqlite": "SQLite",
    "postgresql": "PostgreSQL",
    "mysql": "MariaDB",
    "mariadb": "MariaDB",
}
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306, "redis": 6379}


def label(url: str) -> str:
    """The database of ``url``, as a reader knows it."""
    backend = sa.engine.make_url(url).get_backend_name()
    return BACKENDS.get(backend, backend)


def database(engine: sa.Engine) -> str:
    """The database of ``engine`` once it has connected (MariaDB told apart from MySQL)."""
    if getattr(engine.dialect, "is_mariadb", False):
        return "MariaDB"
    return BACKENDS.get(engine.dialect.name, engine.dialect.name)


def reachable(url: str) -> bool:
    """Whether the server of ``url`` accepts TCP connections (always True for SQLite)."""
    parsed = sa.engine.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return True
    host = parsed.host or "127.0.0.1"
    port = parsed.port or DEFAULT_PORTS.get(backend, 0)
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def store_urls(stores: Sequence[str] | None, directory: str) -> list[str]:
    """The stores to measure: ``stores``, or SQLite in ``directory``, PostgreSQL and MariaDB.

    A server that does not answer is left out with a line saying so.
    """
    urls = (
        list(stores)
        if stores
        else [f"sqlite:///{directory}/bench.sqlite3", POSTGRES_URL, MYSQL_URL]
    )
    kept = []
    for url in urls:
        if reachable(url):
            kept.append(url)
        else:
            print(f"skipped {label(url)}: {safe(url)} does not answer")
    return kept


def safe(url: str) -> str:
    """``url`` without its password."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def table_name(prefix: str = "bench_checkpoints") -> str:
    """A checkpoint table name of this benchmark run alone."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def print_header(title: str) -> None:
    """Print what is measured with what: versions, machine, and which package copy."""
    print(title)
    package = Path(celery_resumable.__file__).parent
    print(
        f"celery-resumable {celery_resumable.__version__} ({package}) against celery "
        f"{celery.__version__}: Python {platform.python_version()}, "
        f"SQLAlchemy {sa.__version__}, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    if package.resolve().parent != ROOT:
        print(f"  note: not the package of this checkout ({ROOT}); run with python -m from it")
    print()


def print_table(
    title: str,
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    notes: Sequence[str] = (),
) -> None:
    """Print ``rows`` under ``header``, the first column left-aligned, the others right."""
    widths = [max(len(row[column]) for row in (header, *rows)) for column in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        aligned = [first.ljust(widths[0])]
        aligned += [cell.rjust(width) for cell, width in zip(rest, widths[1:], strict=True)]
        return "  ".join(aligned).rstrip()

    print(title)
    print(line(header))
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print(line(row))
    for note in notes:
        print(f"  {note}")
    print()


def median(values: Sequence[float]) -> float:
    """The median of ``values``."""
    return float(statistics.median(values))


def add_store_option(parser: argparse.ArgumentParser) -> None:
    """The repeatable ``--store URL`` option of the store benchmarks."""
    parser.add_argument(
        "--store",
        action="append",
        help="SQLAlchemy URL of a store to measure (repeatable; default SQLite, "
        "PostgreSQL and MariaDB on 127.0.0.1)",
    )
