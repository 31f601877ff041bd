"""Shutdown and fencing never cut a statement in half (doc/design/cutover.md, "Draining").

An in-process coordinator and pgwire server, wired as `twinstream environmentd` wires them and
stopped with its `drain`, with a real psycopg client. The shutdown is aimed exactly: from group
commit's `on_commit`, i.e. after a write's commit landed and before its session could answer.
Before the fix the session was cancelled there and answered FATAL 57P01, which the balancer
re-sends — a duplicate of a write that had landed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import psycopg
import pytest

from twinstream.adapter.coordinator import Coordinator, CoordinatorConfig
from twinstream.adapter.group_commit import TableWrites
from twinstream.adapter.oracle import TimestampOracle
from twinstream.adapter.session import AdapterSession
from twinstream.catalog import DurableCatalog, FenceError, OpenMode
from twinstream.cli.environmentd import drain
from twinstream.clock import SYSTEM_CLOCK
from twinstream.persist import PersistClient
from twinstream.pgwire.backend import ConnectionContext
from twinstream.pgwire.server import PgWireServer
from twinstream.testing.locations import Location

DEADLINE_S = 30.0


@dataclass
class Leader:
    persist: PersistClient
    coord: Coordinator
    server: PgWireServer
    serving: asyncio.Task[None]

    def conninfo(self) -> str:
        return f"host=127.0.0.1 port={self.server.port} user=twinstream dbname=twinstream"


@contextlib.asynccontextmanager
async def leader(location: Location, generation: int = 1) -> AsyncIterator[Leader]:
    persist = PersistClient.from_urls(location.consensus_url, location.blob_url)
    catalog = await DurableCatalog.open(
        persist, OpenMode.WRITABLE, deploy_generation=generation, clock=SYSTEM_CLOCK
    )
    oracle = TimestampOracle(persist.consensus, SYSTEM_CLOCK)
    coord = Coordinator(
        persist,
        catalog,
        oracle,
        SYSTEM_CLOCK,
        CoordinatorConfig(timestamp_interval_s=0.05, deploy_generation=generation),
    )

    def factory(ctx: ConnectionContext) -> AdapterSession:
        return AdapterSession(coord, ctx)

    server = PgWireServer(factory)
    serving = asyncio.create_task(coord.serve())
    try:
        await asyncio.wait_for(coord.ready.wait(), DEADLINE_S)
        await server.start()
        yield Leader(persist, coord, server, serving)
    finally:
        await drain(server, coord)
        serving.cancel()
        with contextlib.suppress(BaseException):
            await serving
        coord.engine.close()
        await persist.close()


def hook_commit(coord: Coordinator, then: Callable[[TableWrites], None]) -> None:
    """Run `then` right after each commit with writes lands (before writers resume)."""
    inner = coord.committer.on_commit
    assert inner is not None

    def on_commit(ts: int, writes: TableWrites) -> None:
        inner(ts, writes)
        then(writes)

    coord.committer.on_commit = on_commit


async def durable_ids(location: Location, generation: int) -> list[int]:
    """The ids in table t, read by a fresh writable generation (which fences the old one)."""
    async with (
        leader(location, generation) as fresh,
        await psycopg.AsyncConnection.connect(fresh.conninfo(), autocommit=True) as conn,
    ):
        cur = await conn.execute("SELECT id FROM t ORDER BY id")
        return [int(r[0]) for r in await cur.fetchall()]


async def test_bug_shutdown_between_commit_and_reply_acknowledges_the_write(
    location: Location,
) -> None:
    """SIGTERM's drain begins after the INSERT's commit landed, before its session answered:
    the INSERT must still get its CommandComplete (not a retryable 57P01), and only then the
    session ends with 57P01; a statement sent after that is refused, unrun."""
    drains: list[asyncio.Task[None]] = []
    async with (
        leader(location) as env,
        await psycopg.AsyncConnection.connect(env.conninfo(), autocommit=True) as conn,
    ):
        await conn.execute("CREATE TABLE t (id int)")
        await conn.execute("INSERT INTO t VALUES (1)")

        def shut_down(writes: TableWrites) -> None:
            if not drains:
                drains.append(asyncio.create_task(drain(env.server, env.coord)))

        hook_commit(env.coord, shut_down)
        cur = await conn.execute("INSERT INTO t VALUES (2)")
        assert cur.statusmessage == "INSERT 0 1", "a landed write is acknowledged"
        await asyncio.wait_for(drains[0], DEADLINE_S)
        with pytest.raises(psycopg.OperationalError):  # 57P01 arrived; then closed
            await conn.execute("INSERT INTO t VALUES (3)")
    assert await durable_ids(location, 1) == [1, 2], "acknowledged once, nothing after shutdown"


async def test_writes_in_flight_at_a_fence_land_and_are_acknowledged_or_provably_not(
    location: Location,
) -> None:
    """Many sessions insert unique ids; a successor fences the leader right after one commit
    (the `on_commit` hook), and the leader drains as environmentd does. Every INSERT answered
    INSERT 0 1 is durable exactly once; every INSERT refused with 57P01 (which the balancer
    re-sends) is *not* durable; nothing else happens to any of them."""
    n_sessions, per_session = 8, 30
    async with leader(location) as env:
        async with await psycopg.AsyncConnection.connect(env.conninfo(), autocommit=True) as conn:
            await conn.execute("CREATE TABLE t (id int)")
        fenced = asyncio.Event()
        successor: list[PersistClient] = []

        async def fence() -> None:
            other = PersistClient.from_urls(location.consensus_url, location.blob_url)
            successor.append(other)
            await DurableCatalog.open(
                other, OpenMode.WRITABLE, deploy_generation=2, clock=SYSTEM_CLOCK
            )
            fenced.set()

        commits = 0
        fence_tasks: list[asyncio.Task[None]] = []

        def maybe_fence(writes: TableWrites) -> None:
            nonlocal commits
            commits += 1
            if commits == 5:
                fence_tasks.append(asyncio.create_task(fence()))

        hook_commit(env.coord, maybe_fence)
        acked: list[int] = []
        refused: list[int] = []

        async def client(k: int) -> None:
            async with await psycopg.AsyncConnection.connect(env.conninfo(), autocommit=True) as c:
                for i in range(per_session):
                    ident = k * 1000 + i
                    try:
                        cur = await c.execute(f"INSERT INTO t VALUES ({ident})")
                    except psycopg.OperationalError as e:
                        sqlstate = e.sqlstate or ""
                        assert sqlstate == "57P01" or c.closed, f"unexpected {e!r}"
                        refused.append(ident)
                        return
                    assert cur.statusmessage == "INSERT 0 1"
                    acked.append(ident)

        async def shut_down_when_fenced() -> None:
            with contextlib.suppress(BaseException):
                await env.serving  # ends with the fence, as environmentd's serving task
            await drain(env.server, env.coord)

        stopper = asyncio.create_task(shut_down_when_fenced())
        async with asyncio.TaskGroup() as tg:
            for k in range(n_sessions):
                tg.create_task(client(k))
        assert fence_tasks, "the fence was started"
        await asyncio.wait_for(fence_tasks[0], DEADLINE_S)  # raises what failed it
        await asyncio.wait_for(stopper, DEADLINE_S)
        assert fenced.is_set(), "the successor fenced the leader"
        stopped_by = env.serving.exception()
        assert isinstance(stopped_by, BaseExceptionGroup | FenceError), repr(stopped_by)
        for other in successor:
            await other.close()
    assert acked, "some writes landed before the fence"
    ids = await durable_ids(location, 3)
    assert len(ids) == len(set(ids)), "no id twice"
    assert set(acked) <= set(ids), "every acknowledged write is durable"
    assert not set(refused) & set(ids), "a refused (retryable) write never landed"
