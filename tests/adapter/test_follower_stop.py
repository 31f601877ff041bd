"""A stopped table follower applies nothing more to the mirror and ends, without relying on
its task being cancelled (promotion stalled for good waiting for a cancelled follower that
kept running: postgres/repeat-20 seed 601, generation 16)."""

from __future__ import annotations

import asyncio

from twinstream.adapter.engine import QueryEngine, fqn
from twinstream.adapter.follower import TableFollower
from twinstream.persist import PersistClient
from twinstream.persist.mem import MemBlob, MemConsensus


async def test_a_stopped_follower_applies_nothing_and_ends() -> None:
    persist = PersistClient(MemConsensus(), MemBlob())
    engine = QueryEngine()
    engine.create_database("d")
    engine.create_schema("d", "s")
    engine.create_table("d", "s", "t", [("a", "int8")])
    table = fqn("d", "s", "t")
    shard = persist.open("table-t")
    assert await shard.compare_and_append([((1,), 0, 1)], 0, 1) is None
    follower = TableFollower(engine, persist.open("table-t"), table, 1)
    task = asyncio.create_task(follower.run())
    try:
        async with asyncio.timeout(30):
            await follower.wait_frontier(1)
        assert await shard.compare_and_append([((2,), 1, 1)], 1, 2) is None
        async with asyncio.timeout(30):
            await follower.wait_frontier(2)
        follower.stop()  # no cancel: the task must end on its own at its next event
        assert await shard.compare_and_append([((3,), 2, 1)], 2, 3) is None
        async with asyncio.timeout(30):
            await asyncio.shield(task)
        rows = engine.query_sync(engine.cursor(), f"SELECT a FROM {table} ORDER BY a").rows
        assert [tuple(r) for r in rows] == [(1,), (2,)], "a stopped follower applied a write"
        assert follower.frontier == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        engine.close()
        await persist.close()
