"""Upstream faults on a dedicated server: a frozen upstream is detected by the stall
timeout; a crashed and restarted upstream is resumed from the acknowledged position with no
duplicate and no gap."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import psycopg
import pytest

from twinstream.storage.postgres import PgReplicator, SourceError, Txn, validate
from twinstream.testing.pgserver import PgServer, start_pg_server
from twinstream.testing.pgupstream import conn_info

DEADLINE_S = 60.0


@pytest.fixture
async def server() -> AsyncIterator[PgServer]:
    srv = start_pg_server(wal_level_logical=True)
    try:
        with psycopg.connect(srv.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
            conn.execute("ALTER TABLE t REPLICA IDENTITY FULL")
            conn.execute("CREATE PUBLICATION p FOR TABLE t")
        yield srv
    finally:
        if srv.is_running:
            srv.sigcont()
        srv.stop()


def _insert(srv: PgServer, ids: range) -> None:
    with psycopg.connect(srv.conninfo(), autocommit=True) as conn:
        for i in ids:
            conn.execute("INSERT INTO t VALUES (%s)", (i,))


async def test_frozen_upstream_is_declared_unreachable(server: PgServer) -> None:
    info = conn_info(server.url)
    tables = await validate(info, "p")
    async with PgReplicator(info, "p", tables, status_interval_s=0.2, stall_timeout_s=3.0) as rep:
        lsn = await rep.create_slot("s")
        _insert(server, range(1, 2))
        stream = rep.stream("s", start_lsn=lsn)
        async with contextlib.aclosing(stream):
            async with asyncio.timeout(DEADLINE_S):
                while not isinstance(await anext(stream), Txn):
                    pass
            server.sigstop()
            try:
                with pytest.raises(SourceError) as err:
                    async with asyncio.timeout(DEADLINE_S):
                        while True:
                            await anext(stream)
            finally:
                server.sigcont()
        assert err.value.kind == "unreachable"
        assert "sent nothing for 3s" in err.value.message


async def test_crashed_upstream_resumes_from_acked_position(server: PgServer) -> None:
    info = conn_info(server.url)
    tables = await validate(info, "p")
    seen: list[object] = []
    durable = 0
    async with PgReplicator(info, "p", tables) as rep:
        durable = await rep.create_slot("s")
        _insert(server, range(1, 11))
        stream = rep.stream("s", start_lsn=durable)
        with pytest.raises(SourceError) as err:
            async with asyncio.timeout(DEADLINE_S), contextlib.aclosing(stream):
                async for item in stream:
                    if isinstance(item, Txn):
                        seen.append(item.changes[0].row[0])
                        durable = item.end_lsn
                        await rep.ack(durable)
                        if len(seen) == 5:
                            server.kill9()
        assert err.value.kind == "unreachable"
    assert seen == list(range(1, len(seen) + 1))  # what was buffered may still arrive
    server.start()  # crash recovery; the slot's confirmed position may be older than ours
    _insert(server, range(11, 13))
    async with PgReplicator(info, "p", tables) as rep:
        stream = rep.stream("s", start_lsn=durable)
        async with asyncio.timeout(DEADLINE_S), contextlib.aclosing(stream):
            async for item in stream:
                if isinstance(item, Txn):
                    seen.append(item.changes[0].row[0])
                    if len(seen) == 12:
                        break
    assert seen == list(range(1, 13))
