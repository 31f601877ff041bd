"""Fixtures for the PostgreSQL CDC library: an upstream database with logical decoding (on the
session's server), PgConnInfo for it, unique slot names, and slot cleanup after each test."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest

from twinstream.testing.pgserver import PgServer, start_pg_server
from twinstream.testing.pgupstream import Upstream, conn_info

_slot_counter = itertools.count(1)


@pytest.fixture
def slot() -> str:
    return f"ts_slot_{os.getpid()}_{next(_slot_counter)}"


@pytest.fixture
async def upstream(pg_server: PgServer, pg_url: str) -> AsyncIterator[Upstream]:
    sql = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
    try:
        yield Upstream(pg_server, pg_url, conn_info(pg_url), sql)
    finally:
        # slots are cluster-wide and pin WAL: never leave one behind
        await sql.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE database = current_database() AND NOT active"
        )
        await sql.close()


@pytest.fixture(scope="module")
def auth_server() -> Iterator[PgServer]:
    """A logical-decoding server whose pg_hba demands SCRAM / md5 passwords for test roles."""
    server = start_pg_server(wal_level_logical=True)
    try:
        with psycopg.connect(server.conninfo(), autocommit=True) as conn:
            conn.execute("SET password_encryption = 'scram-sha-256'")
            conn.execute("CREATE ROLE scram_user LOGIN REPLICATION PASSWORD 'scram-pw'")
            conn.execute("CREATE ROLE plain_user LOGIN PASSWORD 'plain-pw'")
            conn.execute("SET password_encryption = 'md5'")
            conn.execute("CREATE ROLE md5_user LOGIN REPLICATION PASSWORD 'md5-pw'")
            conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
            conn.execute("ALTER TABLE t REPLICA IDENTITY FULL")
            conn.execute("GRANT SELECT ON t TO scram_user, md5_user, plain_user")
            conn.execute("CREATE PUBLICATION p FOR TABLE t")
            hba = server.data_dir / "pg_hba.conf"
            hba.write_text(
                "local all all trust\n"
                "host all postgres 127.0.0.1/32 trust\n"
                "host all scram_user 127.0.0.1/32 scram-sha-256\n"
                "host all plain_user 127.0.0.1/32 scram-sha-256\n"
                "host all md5_user 127.0.0.1/32 md5\n"
            )
            conn.execute("SELECT pg_reload_conf()")
        yield server
    finally:
        server.stop()
