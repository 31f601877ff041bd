"""Shared fixtures: a throwaway PostgreSQL server per test session, and `location` — the
(consensus_url, blob_url) pair of each backend, so one test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from twinstream.testing.locations import Location
from twinstream.testing.pgserver import PgServer, start_pg_server

_db_counter = itertools.count(1)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    if shutil.which("initdb") is None and shutil.which("pg_ctl") is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed")
    # wal_level=logical costs nothing here and lets source tests replicate from it
    server = start_pg_server(wal_level_logical=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A fresh, empty database on the session's server."""
    return pg_server.create_database(f"t{next(_db_counter)}")


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    if request.param == "sqlite":
        return Location(
            "sqlite", f"sqlite://{tmp_path / 'consensus.db'}", f"file://{tmp_path / 'blob'}"
        )
    url = request.getfixturevalue("pg_url")
    return Location("postgres", url, url)


@pytest.fixture(scope="session", autouse=True)
def _no_leaked_replica_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Safety net: `clusterd` processes outlive a crashed (kill -9) environmentd by design, so
    at the end of the session any left under this session's tmp dirs are killed."""
    yield
    import os
    import signal

    from twinstream.testing.environmentd import replica_processes

    base = tmp_path_factory.getbasetemp()
    for clusterd_dir in base.rglob("clusterd"):
        for pid in replica_processes(clusterd_dir.parent).values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
