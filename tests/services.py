"""The services the tests use, and the rule for when one is missing.

A test that needs a service skips with a reason when it is down, except under
``CI=true``, where it fails. The same rule holds for the package's entry points, which
exist only once it is installed (the README's test command installs it first).

A test that needs a service carries the service's marker (``postgres``, ``mysql``,
``redis``, ``rabbitmq``), which puts it in the ``integration`` tier (tests/conftest.py);
``require`` fails a test that reaches a service without it, so ``pytest -m unit`` never
needs a server.

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

# The services, by the name of their marker; each one's usual port, for a URL that names none.
DEFAULT_PORTS = {"redis": 6379, "rabbitmq": 5672, "postgres": 5432, "mysql": 3306}
URLS = {"redis": REDIS_URL, "rabbitmq": AMQP_URL, "postgres": POSTGRES_URL, "mysql": MYSQL_URL}
SERVICES = tuple(URLS)
# The service a URL reaches, by its scheme (before any "+driver").
SCHEMES = {
    "redis": "redis",
    "rediss": "redis",
    "amqp": "rabbitmq",
    "amqps": "rabbitmq",
    "pyamqp": "rabbitmq",
    "postgresql": "postgres",
    "mysql": "mysql",
    "mariadb": "mysql",
}

# The test running now (set by tests/conftest.py), whose markers ``require`` checks.
running_test: pytest.Item | None = None


def address(service: str, url: str | None = None) -> tuple[str, int]:
    """The host and port the tests reach ``service`` on, from its URL (or from ``url``)."""
    parts = urlsplit(url or URLS[service])
    return parts.hostname or "127.0.0.1", parts.port or DEFAULT_PORTS[service]


def service_of(url: str) -> str | None:
    """The service ``url`` reaches (a marker name), or None (SQLite, in-memory brokers)."""
    return SCHEMES.get(urlsplit(url).scheme.partition("+")[0])


def reachable(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require(service: str) -> None:
    """Skip the test when ``service`` is down, or fail it under CI=true.

    Fails the test when it does not carry the service's marker: it would be in the tier
    that runs without servers. For Redis, the result backend of the tests must be up too.
    """
    test = running_test
    if test is not None and test.get_closest_marker(service) is None:
        pytest.fail(
            f"{test.nodeid} needs {service} but is not marked {service}: add "
            f"pytest.mark.{service} to the test (or to its parameter), which puts it in "
            "the integration tier",
            pytrace=False,
        )
    urls = [URLS[service], REDIS_BACKEND_URL] if service == "redis" else [URLS[service]]
    for host, port in dict.fromkeys(address(service, url) for url in urls):
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
