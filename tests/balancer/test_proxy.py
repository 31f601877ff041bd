"""The balancer as a plain proxy in front of one real environmentd: startup, queries, the
startup-phase requests (SSL, GSSENC, cancel), garbage, holding for a route, and moves between
two "generations" that are the same server (which isolates the move mechanics from upgrades)."""

from __future__ import annotations

import asyncio
import struct

import asyncpg
import psycopg
import pytest

from twinstream.balancer import Balancer, StaticRoute
from twinstream.pgwire import messages as m
from twinstream.pgwire.codec import BackendParser
from twinstream.testing.environmentd import EnvironmentdProcess

#: ~40 s of DuckDB work (generate_series(1, 1e9) alone takes only ~0.5 s).
LONG_QUERY = "SELECT count(*) FROM generate_series(1, 1000000000) a, generate_series(1, 100) b"


async def raw(balancer: Balancer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", balancer.port)


async def read_messages(reader: asyncio.StreamReader, timeout: float = 5.0) -> list[object]:
    """Everything the balancer sends until it closes the connection."""
    parser = BackendParser()
    out: list[object] = []
    while True:
        data = await asyncio.wait_for(reader.read(65536), timeout)
        if not data:
            return out
        parser.feed(data)
        out.extend(parser)


async def read_until_ready(reader: asyncio.StreamReader) -> list[object]:
    parser = BackendParser()
    msgs: list[object] = []
    while not any(isinstance(x, m.ReadyForQuery) for x in msgs):
        data = await asyncio.wait_for(reader.read(65536), 5)
        assert data, f"closed early after {msgs}"
        parser.feed(data)
        msgs.extend(parser)
    return msgs


def startup(**params: str) -> bytes:
    return m.StartupMessage({"user": "twinstream", "database": "twinstream", **params}).encode()


async def test_queries_psycopg_and_asyncpg(dsn: str, balancer: Balancer) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute("SELECT 1 + 1")
        assert await cur.fetchall() == [(2,)]
        await conn.execute("CREATE TABLE IF NOT EXISTS proxy_t (a int, b text)")
        await conn.execute("INSERT INTO proxy_t VALUES (%s, %s)", (1, "one"))
        cur = await conn.execute("SELECT b FROM proxy_t WHERE a = %s", (1,))
        assert await cur.fetchall() == [("one",)]
        with pytest.raises(psycopg.errors.UndefinedTable):
            await conn.execute("SELECT * FROM no_such_table")
        cur = await conn.execute("SELECT 'still fine'")  # an error does not end the session
        assert await cur.fetchone() == ("still fine",)
    conn2 = await asyncpg.connect(
        host="127.0.0.1", port=balancer.port, user="twinstream", database="twinstream"
    )
    try:
        assert await conn2.fetchval("SELECT b FROM proxy_t WHERE a = $1", 1) == "one"
        async with conn2.transaction():
            await conn2.execute("INSERT INTO proxy_t VALUES ($1, $2)", 2, "two")
        assert await conn2.fetchval("SELECT count(*) FROM proxy_t") == 2
    finally:
        await conn2.close()
    stats = balancer.stats()
    assert stats.sessions == 2 and stats.protocol_errors == 0 and stats.held == 0


async def test_ssl_and_gssenc_refused(dsn: str, balancer: Balancer) -> None:
    reader, writer = await raw(balancer)
    writer.write(m.GSSENCRequest().encode())
    assert await reader.readexactly(1) == b"N"
    writer.write(m.SSLRequest().encode())
    assert await reader.readexactly(1) == b"N"
    writer.write(startup())
    msgs = await read_until_ready(reader)
    assert isinstance(msgs[0], m.AuthenticationOk)
    assert any(isinstance(x, m.BackendKeyData) for x in msgs)
    writer.write(m.Terminate().encode())
    writer.close()
    with pytest.raises(psycopg.OperationalError):
        await psycopg.AsyncConnection.connect(dsn + " sslmode=require")
    async with await psycopg.AsyncConnection.connect(dsn + " sslmode=prefer") as conn:
        assert await (await conn.execute("SELECT 1")).fetchone() == (1,)


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # a length word of ~1.2 GB
        struct.pack("!i", 4) + b"\0\0\0\0",  # a length word below the minimum
        struct.pack("!ii", 8, 1234),  # an unknown request code, protocol 0.1234
    ],
)
async def test_garbage_closes_only_that_connection(
    dsn: str, balancer: Balancer, garbage: bytes
) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as good:
        reader, writer = await raw(balancer)
        writer.write(garbage)
        msgs = await read_messages(reader)
        writer.close()
        assert len(msgs) == 1
        err = msgs[0]
        assert isinstance(err, m.ErrorResponse) and err.severity == "FATAL"
        assert err.code in ("08P01", "0A000")
        assert await (await good.execute("SELECT 42")).fetchone() == (42,)


async def test_garbage_after_startup(dsn: str, balancer: Balancer) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as good:
        reader, writer = await raw(balancer)
        writer.write(startup())
        await read_until_ready(reader)
        writer.write(b"\x01\x00\x00\x00\x10garbage garbage")  # unknown message type
        msgs2 = await read_messages(reader)
        writer.close()
        assert [type(x) for x in msgs2] == [m.ErrorResponse]
        err = msgs2[0]
        assert isinstance(err, m.ErrorResponse)
        assert (err.severity, err.code) == ("FATAL", "08P01")
        assert await (await good.execute("SELECT 7")).fetchone() == (7,)
    assert balancer.stats().protocol_errors >= 1


async def test_old_protocol_refused(balancer: Balancer) -> None:
    reader, writer = await raw(balancer)
    writer.write(m.StartupMessage({"user": "twinstream"}, protocol_version=2 << 16).encode())
    msgs = await read_messages(reader)
    writer.close()
    assert len(msgs) == 1 and isinstance(msgs[0], m.ErrorResponse)
    assert (msgs[0].severity, msgs[0].code) == ("FATAL", "0A000")


async def test_cancel_reaches_the_backend(dsn: str, balancer: Balancer) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        query = asyncio.create_task(conn.execute(LONG_QUERY))
        await asyncio.sleep(0.5)
        assert not query.done()
        await conn.cancel_safe()
        with pytest.raises(psycopg.errors.QueryCanceled):
            await asyncio.wait_for(query, 10)
        assert await (await conn.execute("SELECT 1")).fetchone() == (1,)
    assert balancer.stats().cancels_forwarded == 1


async def test_cancel_with_asyncpg_timeout(balancer: Balancer) -> None:
    conn = await asyncpg.connect(
        host="127.0.0.1", port=balancer.port, user="twinstream", database="twinstream"
    )
    try:
        with pytest.raises(asyncio.TimeoutError):
            await conn.fetchval(LONG_QUERY, timeout=0.5)  # asyncpg cancels on timeout
        assert await conn.fetchval("SELECT 5") == 5
    finally:
        await conn.close()
    assert balancer.stats().cancels_forwarded >= 1


async def test_cancel_of_unknown_key_is_routed_by_generation(
    balancer: Balancer, route: StaticRoute
) -> None:
    # Generation 5 is unknown: dropped. Generation 1 is known: forwarded (to gen 1's port).
    for pid in (5 << 24 | 1, 1 << 24 | 99_999):
        reader, writer = await raw(balancer)
        writer.write(m.CancelRequest(pid, 12345).encode())
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    await asyncio.sleep(0.1)
    stats = balancer.stats()
    assert (stats.cancels_dropped, stats.cancels_forwarded) == (1, 1)


async def test_hold_until_a_route_appears(envd: EnvironmentdProcess) -> None:
    route = StaticRoute()
    async with Balancer("127.0.0.1", 0, route, hold_timeout_s=10) as bal:
        dsn = f"host=127.0.0.1 port={bal.port} user=twinstream dbname=twinstream"
        connecting = asyncio.create_task(psycopg.AsyncConnection.connect(dsn, autocommit=True))
        await asyncio.sleep(0.5)
        assert not connecting.done()
        route.set(1, "127.0.0.1", envd.sql_port)
        conn = await asyncio.wait_for(connecting, 5)
        async with conn:
            assert await (await conn.execute("SELECT 3")).fetchone() == (3,)
        assert bal.stats().held == 1


async def test_hold_times_out(envd: EnvironmentdProcess) -> None:
    async with Balancer("127.0.0.1", 0, StaticRoute(), hold_timeout_s=0.3) as bal:
        dsn = f"host=127.0.0.1 port={bal.port} user=twinstream dbname=twinstream"
        with pytest.raises(psycopg.OperationalError, match="no backend available"):
            await psycopg.AsyncConnection.connect(dsn)
        assert (bal.stats().held, bal.stats().hold_timeouts) == (1, 1)


async def test_unreachable_backend_is_held_too(envd: EnvironmentdProcess) -> None:
    route = StaticRoute((1, "127.0.0.1", 1))  # nothing listens on port 1
    async with Balancer("127.0.0.1", 0, route, hold_timeout_s=10) as bal:
        dsn = f"host=127.0.0.1 port={bal.port} user=twinstream dbname=twinstream"
        connecting = asyncio.create_task(psycopg.AsyncConnection.connect(dsn))
        await asyncio.sleep(0.3)
        route.set(1, "127.0.0.1", envd.sql_port)
        conn = await asyncio.wait_for(connecting, 5)
        await conn.close()


async def test_move_keeps_session_state(
    dsn: str, balancer: Balancer, route: StaticRoute, envd: EnvironmentdProcess
) -> None:
    """A route change to "generation 2" (the same server) moves idle sessions: SET values,
    psycopg and asyncpg prepared statements and the cancel key all survive."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS move_t (a int)")
        await conn.execute("INSERT INTO move_t VALUES (1), (2), (3)")
        await conn.execute("SET application_name = 'mover'")
        await conn.execute("SET application_name TO 'mover2'")
        await conn.execute("SET search_path = public")
        q = "SELECT count(*) FROM move_t WHERE a >= %s"
        assert await (await conn.execute(q, (2,), prepare=True)).fetchone() == (2,)
        apg = await asyncpg.connect(
            host="127.0.0.1", port=balancer.port, user="twinstream", database="twinstream"
        )
        try:
            stmt = await apg.prepare("SELECT a FROM move_t WHERE a = $1")
            assert await stmt.fetchval(3) == 3
            before = {s.client_key: s for s in balancer.sessions()}
            route.set(2, "127.0.0.1", envd.sql_port)
            for _ in range(100):
                if balancer.stats().moved == 2:
                    break
                await asyncio.sleep(0.05)
            assert balancer.stats().moved == 2
            after = {s.client_key: s for s in balancer.sessions()}
            assert before.keys() == after.keys()
            for key, info in after.items():
                assert info.generation == 2 and info.backend_key != key
            cur = await conn.execute("SHOW application_name")
            assert await cur.fetchone() == ("mover2",)
            assert await (await conn.execute(q, (2,), prepare=True)).fetchone() == (2,)
            assert await (await conn.execute(q, (1,), prepare=True)).fetchone() == (3,)
            assert await stmt.fetchval(1) == 1
            assert await apg.fetchval("SELECT a FROM move_t WHERE a = $1", 2) == 2
            # The client cancels with its original key; the balancer translates it.
            query = asyncio.create_task(conn.execute(LONG_QUERY))
            await asyncio.sleep(0.5)
            await conn.cancel_safe()
            with pytest.raises(psycopg.errors.QueryCanceled):
                await asyncio.wait_for(query, 10)
        finally:
            await apg.close()
    assert balancer.stats().retried == 0


async def test_move_waits_for_transaction_end(
    dsn: str, balancer: Balancer, route: StaticRoute, envd: EnvironmentdProcess
) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS txmove_t (a int)")
        await conn.execute("BEGIN")
        await conn.execute("INSERT INTO txmove_t VALUES (1)")
        route.set(2, "127.0.0.1", envd.sql_port)
        await asyncio.sleep(0.3)
        assert balancer.stats().moved == 0
        assert [s.generation for s in balancer.sessions()] == [1]
        await conn.execute("COMMIT")
        for _ in range(100):
            if balancer.stats().moved == 1:
                break
            await asyncio.sleep(0.02)
        assert [s.generation for s in balancer.sessions()] == [2]
        cur = await conn.execute("SELECT count(*) FROM txmove_t")
        assert await cur.fetchone() == (1,)


async def test_moves_are_rate_limited(envd: EnvironmentdProcess, route: StaticRoute) -> None:
    async with Balancer("127.0.0.1", 0, route, move_rate_per_s=10) as bal:
        dsn = f"host=127.0.0.1 port={bal.port} user=twinstream dbname=twinstream"
        conns = [await psycopg.AsyncConnection.connect(dsn) for _ in range(5)]
        try:
            loop = asyncio.get_running_loop()
            start = loop.time()
            route.set(2, "127.0.0.1", envd.sql_port)
            while bal.stats().moved < 5:
                await asyncio.sleep(0.01)
                assert loop.time() - start < 5
            assert loop.time() - start >= 0.35  # 5 moves at 10/s: at least 4 intervals
        finally:
            for c in conns:
                await c.close()


async def test_ddl_policy_error(envd: EnvironmentdProcess, route: StaticRoute) -> None:
    async with Balancer("127.0.0.1", 0, route, ddl_policy="error") as bal:
        dsn = f"host=127.0.0.1 port={bal.port} user=twinstream dbname=twinstream"
        async with (
            await psycopg.AsyncConnection.connect(dsn, autocommit=True) as a,
            await psycopg.AsyncConnection.connect(dsn, autocommit=True) as b,
        ):
            await a.execute("CREATE TABLE IF NOT EXISTS ddl_ok (x int)")
            await b.execute("BEGIN")  # b stays on generation 1: a cutover is pending
            route.set(2, "127.0.0.1", envd.sql_port)
            await asyncio.sleep(0.3)
            assert bal.cutover_in_progress()
            with pytest.raises(psycopg.errors.FeatureNotSupported, match="cutover"):
                await a.execute("CREATE TABLE ddl_blocked (x int)")
            with pytest.raises(psycopg.errors.FeatureNotSupported, match="cutover"):
                await a.execute("DROP TABLE ddl_ok", prepare=False, binary=True)
            await a.execute("INSERT INTO ddl_ok VALUES (1)")  # DML is fine
            await b.execute("COMMIT")
            for _ in range(100):
                if not bal.cutover_in_progress():
                    break
                await asyncio.sleep(0.02)
            await a.execute("CREATE TABLE ddl_after (x int)")
        assert bal.stats().ddl_rejected == 2


async def test_idle_sessions_survive_a_restart(tmp_path: object) -> None:
    """SIGTERM sends FATAL 57P01 to idle sessions: they reconnect to the restarted process."""
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    env = EnvironmentdProcess(tmp_path / "env", generation=1)
    await asyncio.to_thread(env.start)
    try:
        route = StaticRoute((1, "127.0.0.1", env.sql_port))
        async with Balancer("127.0.0.1", 0, route, hold_timeout_s=20) as bal:
            dsn = f"host=127.0.0.1 port={bal.port} user=twinstream dbname=twinstream"
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                await conn.execute("CREATE TABLE r (a int)")
                await conn.execute("INSERT INTO r VALUES (1)")
                await conn.execute("SET application_name = 'survivor'")
                await asyncio.to_thread(env.restart)
                route.set(1, "127.0.0.1", env.sql_port)  # the restarted process's new port
                cur = await conn.execute("SELECT count(*) FROM r")
                assert await cur.fetchone() == (1,)
                cur = await conn.execute("SHOW application_name")
                assert await cur.fetchone() == ("survivor",)
            assert bal.stats().reconnected == 1
    finally:
        await asyncio.to_thread(env.stop)


async def test_copy_and_large_results(dsn: str, balancer: Balancer) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS copy_t (a int, b text)")
        cur = conn.cursor()
        async with cur.copy("COPY copy_t FROM STDIN") as copy:
            for i in range(5000):
                await copy.write_row((i, f"row {i} " + "x" * 50))
        cur = await conn.execute("SELECT count(*) FROM copy_t")
        assert await cur.fetchone() == (5000,)
        out = []
        async with conn.cursor().copy(
            "COPY (SELECT a FROM copy_t WHERE a < 3 ORDER BY a) TO STDOUT"
        ) as c:
            async for row in c.rows():
                out.append(row)
        assert out == [("0",), ("1",), ("2",)]
        # An answer bigger than what the balancer holds back streams through in one piece.
        cur = await conn.execute("SELECT a, b FROM copy_t ORDER BY a")
        rows = await cur.fetchall()
        assert len(rows) == 5000 and rows[-1][0] == 4999
        cur = await conn.execute("SELECT count(*) FROM generate_series(1, 200000) g")
        assert await cur.fetchone() == (200000,)
        cur = await conn.execute("SELECT g FROM generate_series(1, 200000) g")
        assert len(await cur.fetchall()) == 200000


async def test_pipeline_mode_and_a_move(
    dsn: str, balancer: Balancer, route: StaticRoute, envd: EnvironmentdProcess
) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS pipe_t (a int)")
        async with conn.pipeline():
            for i in range(20):
                await conn.execute("INSERT INTO pipe_t VALUES (%s)", (i,))
            cur = await conn.execute("SELECT count(*) FROM pipe_t")
        assert await cur.fetchone() == (20,)
        route.set(2, "127.0.0.1", envd.sql_port)
        for _ in range(100):
            if balancer.stats().moved == 1:
                break
            await asyncio.sleep(0.02)
        async with conn.pipeline():
            for i in range(20, 40):
                await conn.execute("INSERT INTO pipe_t VALUES (%s)", (i,), prepare=True)
            cur = await conn.execute("SELECT count(*), sum(a) FROM pipe_t")
        assert await cur.fetchone() == (40, sum(range(40)))
        assert [s.generation for s in balancer.sessions()] == [2]
