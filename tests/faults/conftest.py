"""Fixtures of the fault tests: a store reached through a proxy that can fail one packet."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from celery_resumable import CheckpointStore
from tests.conftest import drop_table
from tests.integration.harness import TcpProxy
from tests.services import MYSQL_URL, POSTGRES_URL, address, require

SERVERS = {"postgres": POSTGRES_URL, "mysql": MYSQL_URL}


@dataclass
class Faulty:
    """A store on a real database, reached through ``proxy``; ``direct`` bypasses it."""

    server: str
    url: str
    direct_url: str
    table: str
    proxy: TcpProxy
    store: CheckpointStore
    direct: CheckpointStore
    partitioned: bool = False


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("postgres-partitions", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def faulty(request: pytest.FixtureRequest) -> Iterator[Faulty]:
    """A checkpoint store on PostgreSQL and on MariaDB behind a proxy that fails on demand;
    ``postgres-partitions`` keeps completed runs in time partitions (resumable_partitions)."""
    server, _, variant = request.param.partition("-")
    partitioned = variant == "partitions"
    require(server)
    direct_url = SERVERS[server]
    host, port = address(server)
    proxy = TcpProxy(port, host)
    url = (
        sa.engine.make_url(direct_url)
        .set(host="127.0.0.1", port=proxy.port)
        .render_as_string(hide_password=False)
    )
    table = f"ckpt_{uuid.uuid4().hex[:12]}"
    store = CheckpointStore(url, table, partitions=partitioned)
    direct = CheckpointStore(direct_url, table, partitions=partitioned)
    try:
        yield Faulty(server, url, direct_url, table, proxy, store, direct, partitioned)
    finally:
        proxy.close()
        drop_table(direct_url, table)
        if partitioned:
            drop_table(direct_url, f"{table}_done")
