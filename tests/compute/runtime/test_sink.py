"""PersistSink on its own: several sinks race on one shard, fed the same desired stream at
their own pace, some read-only, some promoted, some killed mid-stream. Whatever happens, the
shard ends up with exactly the desired accumulation at every time (no duplicates, no gaps)
and the last sink standing finishes the job."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twinstream.clock import ManualClock
from twinstream.compute.runtime import PersistSink
from twinstream.persist import PersistClient
from twinstream.persist.location import CasOp, ChangeFeed, VersionedData
from twinstream.persist.mem import MemBlob, MemConsensus
from twinstream.persist.types import Row

SHARD = "out"


class YieldingConsensus:
    """MemConsensus that yields to the event loop a random number of times around each call,
    so that concurrent sinks interleave at every await (MemConsensus alone never yields)."""

    def __init__(self, inner: MemConsensus, rng: random.Random) -> None:
        self.inner = inner
        self.rng = rng
        self.feed: ChangeFeed = inner.feed

    async def _jitter(self) -> None:
        for _ in range(self.rng.randrange(3)):
            await asyncio.sleep(0)

    async def head(self, key: str) -> VersionedData | None:
        await self._jitter()
        return await self.inner.head(key)

    async def compare_and_set(self, key: str, expected: int | None, new: VersionedData) -> bool:
        await self._jitter()
        ok = await self.inner.compare_and_set(key, expected, new)
        await self._jitter()
        return ok

    async def compare_and_set_many(self, ops: Sequence[CasOp]) -> bool:
        await self._jitter()
        return await self.inner.compare_and_set_many(ops)

    async def scan(self, key: str, from_seqno: int, limit: int) -> list[VersionedData]:
        return await self.inner.scan(key, from_seqno, limit)

    async def truncate(self, key: str, seqno: int) -> int:
        return await self.inner.truncate(key, seqno)

    async def start_watching(self) -> None:
        return None

    async def close(self) -> None:
        return None


@dataclass
class Plan:
    read_only: bool
    promote_at: int | None  # read-only sinks: allow_writes() after feeding this many times
    kill_at: int | None  # cancel after feeding this many times


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[list[tuple[Row, int]]], list[Plan], list[int], int]:
    n_times = draw(st.integers(1, 12))
    batches: list[list[tuple[Row, int]]] = [
        draw(
            st.lists(
                st.tuples(st.tuples(st.sampled_from("abcde")), st.sampled_from([-1, 1, 2])),
                max_size=5,
            )
        )
        for _ in range(n_times)
    ]
    n_sinks = draw(st.integers(1, 3))
    plans = []
    for i in range(n_sinks):
        last = i == n_sinks - 1
        ro = draw(st.booleans())
        promote = draw(st.integers(0, n_times)) if ro else None
        if ro and last:
            promote = draw(st.integers(0, n_times))
        kill = None if last else draw(st.one_of(st.none(), st.integers(0, n_times)))
        plans.append(Plan(ro, promote, kill))
    order = draw(st.permutations([i for i in range(n_sinks) for _ in range(n_times)]))
    seed = draw(st.integers(0, 2**16))
    return batches, plans, list(order), seed


async def run_scenario(
    batches: list[list[tuple[Row, int]]], plans: list[Plan], order: list[int], seed: int
) -> None:
    rng = random.Random(seed)
    consensus = YieldingConsensus(MemConsensus(), rng)
    client = PersistClient(consensus, MemBlob(), ManualClock())
    await client.open(SHARD).critical_reader("test", 0)
    sinks = [
        PersistSink(client, SHARD, read_only=p.read_only, name=f"s{i}") for i, p in enumerate(plans)
    ]
    tasks = [asyncio.create_task(s.run()) for s in sinks]
    fed = [0] * len(sinks)
    killed = [False] * len(sinks)
    n_times = len(batches)

    def maybe(i: int) -> None:
        p = plans[i]
        if p.promote_at is not None and fed[i] >= p.promote_at:
            sinks[i].allow_writes()
        if p.kill_at is not None and fed[i] >= p.kill_at and not killed[i]:
            tasks[i].cancel()
            killed[i] = True

    try:
        for i in range(len(sinks)):
            maybe(i)
        for i in order:
            if killed[i]:
                continue
            t = fed[i]
            sinks[i].feed([(row, t, d) for row, d in batches[t]], t, t + 1)
            fed[i] += 1
            maybe(i)
            for _ in range(rng.randrange(4)):
                await asyncio.sleep(0)
        last = sinks[-1]
        async with asyncio.timeout(10):
            await last.wait_persisted(n_times)
        shard = client.open(SHARD)
        assert await shard.upper() == n_times
        acc: Counter[Row] = Counter()
        for t in range(n_times):
            for row, d in batches[t]:
                acc[row] += d
            got = dict(await shard.snapshot(t))
            assert got == {r: d for r, d in acc.items() if d}, f"time {t}"
        # Read-only sinks that were never promoted kept only what is in flight: nothing now.
        for i, s in enumerate(sinks):
            if not killed[i] and s.read_only:
                await s.wait_persisted(n_times)
                assert len(s.correction) == 0
                assert s.stats.appends == 0
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_racing_sinks_write_exactly_the_desired_collection(
    scenario: tuple[list[list[tuple[Row, int]]], list[Plan], list[int], int],
) -> None:
    asyncio.run(run_scenario(*scenario))


async def test_sink_on_empty_shard_writes_from_zero_and_releases_its_hold() -> None:
    client = PersistClient(MemConsensus(), MemBlob(), ManualClock())
    sink = PersistSink(client, SHARD)
    task = asyncio.create_task(sink.run())
    sink.feed([(("x",), 3, 1)], 3, 4)  # as_of 3: nothing before it
    async with asyncio.timeout(5):
        await sink.wait_persisted(4)
    shard = client.open(SHARD)
    state = await shard.fetch_state()
    assert state.upper == 4 and len(state.leased) >= 1
    assert await shard.snapshot(3) == [(("x",), 1)]
    assert await shard.snapshot(2) == []
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert (await shard.fetch_state()).leased == {}


async def test_read_only_sink_against_a_prewritten_shard_is_empty() -> None:
    """A shard already holding the desired data: a read-only sink's correction cancels out,
    and once promoted it has nothing to add but progress."""
    client = PersistClient(MemConsensus(), MemBlob(), ManualClock())
    shard = client.open(SHARD)
    assert await shard.compare_and_append([(("a",), 0, 1), (("b",), 1, 1)], 0, 2) is None
    sink = PersistSink(client, SHARD, read_only=True)
    task = asyncio.create_task(sink.run())
    try:
        sink.feed([(("a",), 0, 1)], 0, 1)
        sink.feed([(("b",), 1, 1)], 1, 2)
        await asyncio.wait_for(sink.ready.wait(), 5)
        assert len(sink.correction) == 0
        sink.feed([(("c",), 2, 1)], 2, 3)
        assert len(sink.correction) == 1
        sink.allow_writes()
        await asyncio.wait_for(sink.wait_persisted(3), 5)
        assert sink.stats.updates_written == 1
        assert sorted(await shard.snapshot(2)) == [(("a",), 1), (("b",), 1), (("c",), 1)]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
