"""Balancer bad input, restarts and the DDL `hold` policy, against real processes.

- an oversized startup packet and unknown protocol versions close only that connection with
  FATAL (others keep working);
- a restarted balancer: sessions on the old one end with FATAL 57P01, clients reconnect to the
  same address and find their data;
- DDL policy `hold`: DDL sent while the route points at a generation that is still read-only
  waits (25006 is retried) and runs there once it is promoted.
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from pathlib import Path

import asyncpg
import psycopg
import pytest

from twinstream.balancer import Balancer, StaticRoute
from twinstream.pgwire import messages as m
from twinstream.pgwire.codec import BackendParser
from twinstream.testing.environmentd import EnvironmentdProcess

DEADLINE_S = 60.0
FAST_CHECKS = [
    "--system-param",
    "with_0dt_caught_up_check_stability_period=0ms",
    "--system-param",
    "with_0dt_deployment_caught_up_check_interval=50ms",
]


async def fatal_of(reader: asyncio.StreamReader) -> m.ErrorResponse:
    """The one message the balancer answers garbage with, then EOF."""
    parser = BackendParser()
    msgs: list[object] = []
    while True:
        data = await asyncio.wait_for(reader.read(65536), 10)
        if not data:
            break
        parser.feed(data)
        msgs.extend(parser)
    assert len(msgs) == 1 and isinstance(msgs[0], m.ErrorResponse), msgs
    assert msgs[0].severity == "FATAL"
    return msgs[0]


@pytest.mark.parametrize(
    ("packet", "code"),
    [
        # A real StartupMessage whose parameters exceed the 10,000-byte startup limit.
        (m.StartupMessage({"user": "twinstream", "options": "x" * 20_000}).encode(), "08P01"),
        (m.StartupMessage({"user": "twinstream"}, protocol_version=2 << 16).encode(), "0A000"),
        (m.StartupMessage({"user": "twinstream"}, protocol_version=4 << 16).encode(), "0A000"),
    ],
)
async def test_bad_startup_closes_only_that_connection(
    dsn: str, balancer: Balancer, packet: bytes, code: str
) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as good:
        reader, writer = await asyncio.open_connection("127.0.0.1", balancer.port)
        writer.write(packet)
        err = await fatal_of(reader)
        writer.close()
        assert err.code == code, err
        assert await (await good.execute("SELECT 1")).fetchone() == (1,)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_balancer_restart_clients_reconnect(route: StaticRoute) -> None:
    port = free_port()
    dsn = f"host=127.0.0.1 port={port} user=twinstream dbname=twinstream"
    bal = Balancer("127.0.0.1", port, route, hold_timeout_s=10.0)
    await bal.start()
    pg = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    apg = await asyncpg.connect(host="127.0.0.1", port=port, user="twinstream")
    try:
        await pg.execute("CREATE TABLE IF NOT EXISTS restart_rows (a int)")
        await pg.execute("INSERT INTO restart_rows VALUES (1)")
        await bal.close()
        with pytest.raises(psycopg.OperationalError):
            await pg.execute("SELECT 1")
        with pytest.raises((asyncpg.PostgresError, ConnectionError, asyncpg.InterfaceError)):
            await apg.fetchval("SELECT 1")
        bal = Balancer("127.0.0.1", port, route, hold_timeout_s=10.0)
        await bal.start()  # same address
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as again:
            await again.execute("INSERT INTO restart_rows VALUES (2)")
            cur = await again.execute("SELECT a FROM restart_rows ORDER BY a")
            assert await cur.fetchall() == [(1,), (2,)]
        apg2 = await asyncpg.connect(host="127.0.0.1", port=port, user="twinstream")
        assert await apg2.fetchval("SELECT count(*) FROM restart_rows") == 2
        await apg2.close()
    finally:
        await pg.close()
        apg.terminate()
        await bal.close()


def internal(env: EnvironmentdProcess, method: str, path: str) -> str:
    url = f"http://127.0.0.1:{env.internal_http_port}{path}"
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as r:
        return str(r.read().decode())


async def wait_status(env: EnvironmentdProcess, want: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while loop.time() < deadline:
        body = await asyncio.to_thread(internal, env, "GET", "/api/leader/status")
        if json.loads(body)["status"] == want:
            return
        await asyncio.sleep(0.05)  # poll interval of the status API
    raise AssertionError(f"generation {env.generation} never reached {want}")


async def test_ddl_hold_policy_runs_ddl_after_promotion(tmp_path: Path) -> None:
    old = EnvironmentdProcess(tmp_path / "env", generation=1)
    new = EnvironmentdProcess(tmp_path / "env", generation=2, extra_args=FAST_CHECKS)
    await asyncio.to_thread(old.start)
    try:
        await asyncio.to_thread(new.start)
        await wait_status(new, "ReadyToPromote")
        route = StaticRoute((2, "127.0.0.1", new.sql_port))  # switched before the promotion
        async with Balancer("127.0.0.1", 0, route, hold_timeout_s=DEADLINE_S) as bal:
            assert bal.ddl_policy == "hold"
            dsn = f"host=127.0.0.1 port={bal.port} user=twinstream dbname=twinstream"
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                ddl = asyncio.create_task(conn.execute("CREATE TABLE during_cutover (a int)"))
                # Generation 2 is read-only: the DDL cannot have run; it is being retried.
                loop = asyncio.get_running_loop()
                deadline = loop.time() + DEADLINE_S
                while bal.stats().retried == 0 and loop.time() < deadline:
                    await asyncio.sleep(0.02)  # poll the balancer's counters
                assert bal.stats().retried >= 1 and not ddl.done()
                await asyncio.to_thread(internal, new, "POST", "/api/leader/promote")
                await asyncio.wait_for(ddl, DEADLINE_S)
                await conn.execute("INSERT INTO during_cutover VALUES (1)")
                cur = await conn.execute("SELECT a FROM during_cutover")
                assert await cur.fetchall() == [(1,)]
            assert bal.stats().ddl_rejected == 0
    finally:
        await asyncio.to_thread(new.stop)
        await asyncio.to_thread(old.stop)
