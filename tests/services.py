"""The services the tests use, and the rule for when one is missing.

A test that needs a service skips with a reason when it is down, except under
``CI=true``, where it fails. The same rule holds for the package's entry points, which
exist only once it is installed (the README's test command installs it first).

The tests use only what these variables name (the README lists them): the Redis
database of ``RESUMABLE_TEST_REDIS`` is the broker's and, unless
``RESUMABLE_TEST_REDIS_BACKEND`` names another, the result backend's; tests keep apart on
it by queues and task ids of their own, and never flush it.
"""

from __future__ import annotations

import os
import socket
from importlib import metadata
from urllib.parse import urlsplit

import pytest

REDIS_URL = os.environ.get("RESUMABLE_TEST_REDIS", "redis://127.0.0.1:6379/15")
REDIS_BACKEND_URL = os.environ.get("RESUMABLE_TEST_REDIS_BACKEND") or REDIS_URL
AMQP_URL = os.environ.get("RESUMABLE_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
POSTGRES_URL = os.environ.get(
    "RESUMABLE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("RESUMABLE_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test")

# Each service's usual port, for a URL that names none.
DEFAULT_PORTS = {"redis": 6379, "rabbitmq": 5672, "postgres": 5432, "mysql": 3306}
URLS = {"redis": REDIS_URL, "rabbitmq": AMQP_URL, "postgres": POSTGRES_URL, "mysql": MYSQL_URL}


def address(service: str) -> tuple[str, int]:
    """The host and port the tests reach ``service`` on, from its URL."""
    parts = urlsplit(URLS[service])
    return parts.hostname or "127.0.0.1", parts.port or DEFAULT_PORTS[service]


def reachable(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require(service: str) -> None:
    """Skip the test when ``service`` is down, or fail it under CI=true."""
    host, port = address(service)
    if not reachable(port, host):
        _missing(f"{service} is not reachable on {host}:{port}")


def require_entry_point(group: str, name: str, value: str) -> None:
    """Skip the test unless entry point ``name = value`` is registered in ``group``
    (by an installed celery-resumable), or fail it under CI=true."""
    registered = [point.value for point in metadata.entry_points(group=group, name=name)]
    if value not in registered:
        found = f" (found {', '.join(registered)})" if registered else ""
        _missing(
            f"entry point {group}:{name} = {value} is not registered{found}; "
            "it exists once the package is installed: pip install -e ."
        )


def _missing(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
