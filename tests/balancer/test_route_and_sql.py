"""Route sources (the rollout record in a consensus store; a static route) and the balancer's
small SQL classifier."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest

from twinstream.balancer import Balancer, RolloutRoute, Route, StaticRoute
from twinstream.balancer.frames import FrameSplitter
from twinstream.balancer.sqlclass import classify, classify_query, is_ddl_text
from twinstream.orchestrator.record import (
    GenerationEndpoint,
    RolloutRecord,
    RolloutStatus,
    RolloutStore,
)
from twinstream.persist.mem import MemConsensus
from twinstream.persist.urls import default_consensus_url, open_consensus
from twinstream.pgwire.errors import ProtocolViolation
from twinstream.testing.environmentd import EnvironmentdProcess


def record(active: int, *ports: tuple[int, int], desired: int | None = None) -> RolloutRecord:
    return RolloutRecord(
        desired_generation=desired or active,
        active_generation=active,
        status=RolloutStatus.APPLIED,
        endpoints={
            str(gen): GenerationEndpoint(gen, "127.0.0.1", port, port + 1, 1000 + gen)
            for gen, port in ports
        },
    )


async def write(store: RolloutStore, rec: RolloutRecord) -> None:
    seqno, _ = await store.read()
    assert await store.write(seqno, rec)


async def test_rollout_route_follows_the_record() -> None:
    consensus = MemConsensus()
    store = RolloutStore(consensus, "prod")
    async with RolloutRoute(consensus, "prod", poll_interval_s=0.02) as route:
        assert await route.current() is None
        changed = route.changed()
        await write(store, record(1, (1, 5001)))
        await asyncio.wait_for(changed.wait(), 2)
        assert await route.current() == Route(1, "127.0.0.1", 5001)
        # Generation 2 deploys: known for cancels, not routed to until it is active.
        await write(store, record(1, (1, 5001), (2, 6001), desired=2))
        await asyncio.sleep(0.1)
        assert await route.current() == Route(1, "127.0.0.1", 5001)
        assert route.endpoint(2) == ("127.0.0.1", 6001)
        changed = route.changed()
        await write(store, record(2, (1, 5001), (2, 6001)))
        await asyncio.wait_for(changed.wait(), 2)
        assert await route.current() == Route(2, "127.0.0.1", 6001)
        # A record whose active generation has no endpoint keeps the last good route; the old
        # generation's endpoint stays known (its sessions may still send cancels).
        await write(store, record(3, (2, 6001)))
        await asyncio.sleep(0.1)
        assert await route.current() == Route(2, "127.0.0.1", 6001)
        assert route.endpoint(1) == ("127.0.0.1", 5001)
        # Other environments' records are not ours.
        await write(RolloutStore(consensus, "other"), record(9, (9, 9001)))
        await asyncio.sleep(0.1)
        assert (await route.current() or Route(0, "", 0)).generation == 2


class FlakyConsensus(MemConsensus):
    fail = False

    async def head(self, key: str):  # type: ignore[no-untyped-def]
        if self.fail:
            raise OSError("consensus unreachable")
        return await super().head(key)


async def test_rollout_route_keeps_the_last_good_route_on_errors() -> None:
    consensus = FlakyConsensus()
    await write(RolloutStore(consensus), record(1, (1, 5001)))
    async with RolloutRoute(consensus, poll_interval_s=0.01) as route:
        assert await route.current() == Route(1, "127.0.0.1", 5001)
        consensus.fail = True
        await asyncio.sleep(0.1)
        assert route.read_errors > 0
        assert await route.current() == Route(1, "127.0.0.1", 5001)


async def test_balancer_over_the_rollout_record_of_a_data_dir(tmp_path: Path) -> None:
    """The default consensus of a data dir, as the orchestrator would write it."""
    env = EnvironmentdProcess(tmp_path / "env", generation=1)
    await asyncio.to_thread(env.start)
    consensus = open_consensus(default_consensus_url(env.data_dir))
    try:
        async with RolloutRoute(consensus) as route:
            bal = Balancer("127.0.0.1", 0, route, hold_timeout_s=10)
            async with bal:
                dsn = f"host=127.0.0.1 port={bal.port} user=twinstream dbname=twinstream"
                connecting = asyncio.create_task(psycopg.AsyncConnection.connect(dsn))
                await asyncio.sleep(0.3)
                assert not connecting.done()  # no record yet: held
                await write(RolloutStore(consensus), record(1, (1, env.sql_port)))
                conn = await asyncio.wait_for(connecting, 5)
                async with conn:
                    assert await (await conn.execute("SELECT 1")).fetchone() == (1,)
                assert bal.stats().held == 1
    finally:
        await consensus.close()
        await asyncio.to_thread(env.stop)


async def test_static_route_notifies() -> None:
    route = StaticRoute()
    assert await route.current() is None
    ev = route.changed()
    route.set(3, "h", 1)
    assert ev.is_set() and await route.current() == Route(3, "h", 1)
    ev = route.changed()
    route.set(3, "h", 1)  # no change, no wakeup
    assert not ev.is_set()
    route.clear()
    assert ev.is_set() and await route.current() is None
    assert route.endpoint(3) == ("h", 1)


@pytest.mark.parametrize(
    ("sql", "kind", "name"),
    [
        ("SET application_name = 'x'", "set", "application_name"),
        ("set Application_Name to x", "set", "application_name"),
        ("SET SESSION search_path = a, b", "set", "search_path"),
        ('SET "MixedCase" = 1', "set", "MixedCase"),
        ("SET my.var = 1", "set", "my.var"),
        ("/* hi */ -- there\n  SET TIME ZONE 'UTC'", "set", "timezone"),
        ("SET NAMES 'UTF8'", "set", "client_encoding"),
        ("SET SCHEMA 'public'", "set", "search_path"),
        ("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE", "set", None),
        ("SET LOCAL search_path = a", "other", None),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", "other", None),
        ("RESET ALL", "reset", None),
        ("RESET application_name", "reset", "application_name"),
        ("RESET TIME ZONE", "reset", "timezone"),
        ("DISCARD ALL", "discard_all", None),
        ("PREPARE p AS SELECT 1", "prepare", "p"),
        ("DEALLOCATE PREPARE p", "deallocate", "p"),
        ("DEALLOCATE ALL", "deallocate", None),
        ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", "declare", "c"),
        ("CLOSE ALL", "close_cursor", None),
        ("BEGIN", "begin", None),
        ("START TRANSACTION", "begin", None),
        ("COMMIT", "commit", None),
        ("END", "commit", None),
        ("ROLLBACK", "rollback", None),
        ("CREATE TABLE t (a int)", "ddl", None),
        ("drop view v", "ddl", None),
        ("INSERT INTO t VALUES (1)", "other", None),
        ("SELECT 'SET x = 1'", "other", None),
        ("", "other", None),
    ],
)
def test_classify(sql: str, kind: str, name: str | None) -> None:
    stmt = classify(sql)
    assert stmt.kind == kind
    if name is not None:
        assert stmt.name == name


def test_classify_query_and_ddl() -> None:
    stmts = classify_query("SET a = 1; SELECT ';'; RESET b; -- c\n")
    assert [s.kind for s in stmts] == ["set", "other", "reset"]
    assert stmts[0].sql == "SET a = 1"
    assert classify("DECLARE c CURSOR WITH HOLD FOR SELECT 1").hold
    assert not classify("DECLARE c CURSOR FOR SELECT 1").hold
    assert is_ddl_text("  ALTER TABLE t ADD COLUMN b int")
    assert not is_ddl_text("SELECT 1")


def test_frame_splitter() -> None:
    sp = FrameSplitter(frontend=True)
    q = b"Q\x00\x00\x00\x0dSELECT 1\x00"
    sp.feed(q[:3])
    assert sp.next_frame() is None
    sp.feed(q[3:] + b"S\x00\x00\x00\x04")
    assert sp.next_frame() == q
    assert sp.next_frame() == b"S\x00\x00\x00\x04"
    assert sp.next_frame() is None
    sp.feed(b"S\x00\x01\x00\x00")  # a Sync of 64 KiB: too big for a small message
    with pytest.raises(ProtocolViolation):
        sp.next_frame()
    bad = FrameSplitter(frontend=True)
    bad.feed(b"\x07\x00\x00\x00\x04")
    with pytest.raises(ProtocolViolation):
        bad.next_frame()
