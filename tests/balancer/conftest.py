"""A real environmentd (generation 1) per test module, and a balancer in the test's event loop
routing to it (clients are psycopg AsyncConnection / asyncpg, so the loop is never blocked)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from twinstream.balancer import Balancer, StaticRoute
from twinstream.testing.environmentd import EnvironmentdProcess, environmentd_process


@pytest.fixture(scope="module")
def envd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvironmentdProcess]:
    data_dir: Path = tmp_path_factory.mktemp("envd")
    with environmentd_process(data_dir) as env:
        yield env


@pytest.fixture
def route(envd: EnvironmentdProcess) -> StaticRoute:
    return StaticRoute((1, "127.0.0.1", envd.sql_port))


@pytest.fixture
async def balancer(route: StaticRoute) -> AsyncIterator[Balancer]:
    bal = Balancer("127.0.0.1", 0, route, hold_timeout_s=10.0)
    await bal.start()
    try:
        yield bal
    finally:
        await bal.close()


@pytest.fixture
def dsn(balancer: Balancer) -> str:
    return f"host=127.0.0.1 port={balancer.port} user=twinstream dbname=twinstream"
