"""The issue's scale check for read-only mode: a leader writes 300k rows into an output shard
while a read-only follower, computing the same output (a few times behind), follows it. The
follower's correction buffer (measured in entries, not RSS) must stay bounded by the in-flight
times — a small multiple of one time's batch — and not grow with what the leader wrote; at the
end it is empty, and promoting the follower writes nothing.

The follower's sink is driven directly (no SQL, no dataflow: it is fed the output a dataflow
would produce) and the leader appends that output itself, on one in-memory persist location
with a client per simulated process (~10 s of CPU). Pacing: the follower is fed
`FOLLOWER_LAG` times behind the leader, and the driver waits (on a condition, no timing) until
the follower's listen is at most `LISTEN_LAG` times behind the shard, so the bound is exact
rather than a scheduling accident.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

from twinstream.clock import ManualClock
from twinstream.compute.runtime import PersistSink
from twinstream.persist import PersistClient
from twinstream.persist.mem import MemBlob, MemConsensus
from twinstream.persist.types import Row, Update

SHARD = "mv-out"
TOTAL_ROWS = 300_000
BATCH = 1_000  #: rows inserted per time
#: Of each time's inserts, this fraction is deleted again a few times later (retractions).
DELETE_FRACTION = 0.2
DELETE_AFTER = 3
FOLLOWER_LAG = 2  #: the follower's dataflow is this many times behind the leader's
LISTEN_LAG = 2  #: the driver lets the follower's listen fall at most this far behind
WAIT_S = 60.0


def desired_stream(seed: int = 5) -> list[list[Update]]:
    """The view's output per time: BATCH inserts, and retractions of some earlier ones."""
    rng = random.Random(seed)
    times: list[list[Update]] = []
    for t in range(TOTAL_ROWS // BATCH):
        rows: list[Row] = [(i, i * 7919 % 1000) for i in range(t * BATCH, (t + 1) * BATCH)]
        batch: list[Update] = [(row, t, 1) for row in rows]
        if t >= DELETE_AFTER:
            earlier = times[t - DELETE_AFTER]
            gone = rng.sample(range(BATCH), int(BATCH * DELETE_FRACTION))
            batch += [(earlier[i][0], t, -1) for i in gone]
        times.append(batch)
    return times


async def test_read_only_follower_correction_stays_bounded_under_300k_leader_rows() -> None:
    consensus, blob = MemConsensus(), MemBlob()
    clock = ManualClock()
    leader_client = PersistClient(consensus, blob, clock)
    follower_client = PersistClient(consensus, blob, clock)
    check_client = PersistClient(consensus, blob, clock)
    # The leader's dataflow output goes straight into the shard (what its sink appends when
    # nobody else writes); the follower is a real read-only sink.
    leader = leader_client.open(SHARD)
    follower = PersistSink(follower_client, SHARD, read_only=True, name="follower")
    stream = desired_stream()
    tasks = [asyncio.create_task(follower.run())]
    sizes: list[int] = []
    written = 0

    async def until(cond: object, what: str) -> None:
        async with asyncio.timeout(WAIT_S):
            while not cond():  # type: ignore[operator]
                await asyncio.sleep(0.001)  # poll interval, not synchronization by time
        assert cond(), what  # type: ignore[operator]

    try:
        for t, batch in enumerate(stream):
            assert await leader.compare_and_append(batch, t, t + 1) is None
            written += len(batch)
            if t >= FOLLOWER_LAG:
                ft = t - FOLLOWER_LAG
                follower.feed(stream[ft], ft, ft + 1)
            await until(lambda t=t: follower.persisted_upper >= t + 1 - LISTEN_LAG, "listen")
            sizes.append(len(follower.correction))
        for ft in range(len(stream) - FOLLOWER_LAG, len(stream)):
            follower.feed(stream[ft], ft, ft + 1)
        await until(lambda: follower.persisted_upper >= len(stream), "follower caught up")
        await until(lambda: len(follower.correction) == 0, "follower's correction drained")

        assert written >= TOTAL_ROWS  # inserts and retractions
        assert follower.stats.appends == 0 and follower.stats.updates_written == 0
        assert follower.stats.persisted_seen >= written  # it consolidated all of it
        # Bounded by the in-flight times (its own lag + its listen's lag), each one batch
        # (+ its retractions): independent of the 300k rows the leader wrote.
        bound = (FOLLOWER_LAG + LISTEN_LAG + 1) * int(BATCH * (1 + DELETE_FRACTION) * 1.2)
        assert follower.stats.max_correction <= bound, (follower.stats, bound)
        assert max(sizes[-50:]) <= bound  # no creep towards the end either
        assert follower.stats.max_correction < written // 50

        # Promoted, it has nothing to add: the shard already holds its whole output.
        follower.allow_writes()
        follower.feed([], len(stream), len(stream) + 1)
        await asyncio.wait_for(follower.wait_persisted(len(stream) + 1), WAIT_S)
        assert follower.stats.updates_written == 0

        expected: Counter[Row] = Counter()
        for batch in stream:
            for row, _t, d in batch:
                expected[row] += d
        got = await check_client.open(SHARD).snapshot(len(stream))
        assert Counter({row: d for row, d in got}) == +expected
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(
        f"leader wrote {written}; follower correction max {follower.stats.max_correction} "
        f"(bound {bound}), last sizes {sizes[-5:]}"
    )
