"""Fixtures that start real worker processes against real services."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.integration.harness import Deployment, TcpProxy
from tests.services import AMQP_URL, POSTGRES_URL, REDIS_URL, address, require, service_of

BROKERS = {"redis": REDIS_URL, "rabbitmq": AMQP_URL}

DeploymentFactory = Callable[..., Deployment]


@pytest.fixture
def deploy(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DeploymentFactory]:
    """Make deployments: a queue on a real broker, a store and worker processes.

    Every service the deployment's URLs reach is required (and must be marked on the
    test). Worker logs are printed when the test fails.
    """
    made: list[Deployment] = []

    def make(
        broker: str = "redis",
        store: str | None = None,
        settings: dict[str, Any] | None = None,
        events: str | None = None,
        backend: str | None = None,
    ) -> Deployment:
        url = store or f"sqlite:///{tmp_path / 'store.sqlite3'}"
        urls = [BROKERS[broker], url, *filter(None, (events, backend))]
        for service in dict.fromkeys(filter(None, map(service_of, urls))):
            require(service)
        deployment = Deployment(tmp_path, BROKERS[broker], url, settings, events, backend)
        made.append(deployment)
        return deployment

    yield make
    for deployment in made:
        deployment.close()
        if getattr(request.node, "failed", False):
            print(deployment.logs())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        item.failed = True


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    """A cuttable TCP path to PostgreSQL."""
    require("postgres")
    host, port = address("postgres")
    tcp = TcpProxy(port, host)
    yield tcp
    tcp.close()


def proxied(port: int) -> str:
    """The PostgreSQL URL of the tests, through the proxy listening on ``port``."""
    address = sa.engine.make_url(POSTGRES_URL).set(host="127.0.0.1", port=port)
    return address.render_as_string(hide_password=False)


def fresh_table() -> str:
    """A checkpoint table of this test alone (the PostgreSQL database is shared)."""
    return f"ckpt_{uuid.uuid4().hex[:12]}"
