"""A read-only generation's table follower holds its snapshot time from before the snapshot
until its listen holds it: a snapshot slower than the leader's since downgrades (every
second; a large table takes longer) must not make the follower restart forever."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from twinstream.adapter.engine import QueryEngine
from twinstream.adapter.follower import TableFollower
from twinstream.persist import PersistClient
from twinstream.persist.mem import MemBlob, MemConsensus
from twinstream.persist.types import Diff, Row


class MirrorStub:
    """The follower's engine calls, recorded (the mirror itself is not under test)."""

    def __init__(self) -> None:
        self.rows: dict[Row, Diff] = {}

    def replace_contents(self, _table: str, _ncols: int, rows: list[tuple[Row, Diff]]) -> None:
        self.rows = dict(rows)

    def apply(self, _table: str, _ncols: int, updates: list[tuple[Row, Diff]]) -> None:
        for row, diff in updates:
            self.rows[row] = self.rows.get(row, 0) + diff


async def test_slow_snapshot_while_the_leader_compacts() -> None:
    client = PersistClient(MemConsensus(), MemBlob())
    leader = client.open("table")
    assert await leader.compare_and_append([((i,), 0, 1) for i in range(100)], 0, 1) is None
    hold = await leader.critical_reader("leader", "token")
    stop = asyncio.Event()

    async def leader_ticks() -> None:
        """Group commit (an empty append per tick) and since downgrades to upper - 1."""
        while not stop.is_set():
            upper = await leader.upper()
            assert await leader.compare_and_append([], upper, upper + 1) is None
            await hold.compare_and_downgrade_since("token", "token", upper)
            await asyncio.sleep(0.005)  # the leader's tick

    follower_shard = client.open("table")
    real_snapshot = follower_shard.snapshot
    snapshots = 0

    async def slow_snapshot(as_of: int) -> Any:
        nonlocal snapshots
        snapshots += 1
        rows = await real_snapshot(as_of)
        since = await follower_shard.since()
        for _ in range(100):  # let the leader's since pass as_of, as a slow snapshot would
            await asyncio.sleep(0.005)
            if await follower_shard.since() > since + 3:
                break
        return rows

    follower_shard.snapshot = slow_snapshot  # type: ignore[method-assign]
    mirror = MirrorStub()
    follower = TableFollower(cast(QueryEngine, mirror), follower_shard, "t", 1)
    ticks = asyncio.create_task(leader_ticks())
    follow = asyncio.create_task(follower.run())
    try:
        await asyncio.wait_for(follower.hydrated.wait(), 10)
        target = await leader.upper()
        await asyncio.wait_for(follower.wait_frontier(target + 5), 10)  # the listen follows
        assert snapshots == 1, "the follower restarted from a snapshot"
        assert mirror.rows == {(i,): 1 for i in range(100)}
    finally:
        stop.set()
        follow.cancel()
        await asyncio.gather(ticks, follow, return_exceptions=True)
        await client.close()
