"""The read barrier (adapter/linearize.py): lease reads, batched oracle reads, waiting for our
own commit, and the fence surfacing when someone else wrote."""

from __future__ import annotations

import asyncio

import pytest

from twinstream.adapter.linearize import NEW_LEADER_WAIT_S, READ_LEASE_S, ReadBarrier
from twinstream.catalog.fence import FenceError


class Fake:
    def __init__(self) -> None:
        self.oracle = 10
        self.last = 10
        self.now = 100.0
        self.confirmed: float | None = None
        self.oracle_calls = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.waited: list[int] = []
        self.fenced = False

    async def read_oracle(self) -> int:
        self.oracle_calls += 1
        await self.gate.wait()
        return self.oracle

    async def wait_committed(self, ts: int) -> int:
        self.waited.append(ts)
        if self.fenced:
            raise FenceError("fenced")
        self.last = ts
        return ts

    def barrier(self) -> ReadBarrier:
        return ReadBarrier(
            self.read_oracle,
            lambda: self.last,
            self.wait_committed,
            confirmed_at=lambda: self.confirmed,
            monotonic=lambda: self.now,
        )


def test_the_successor_waits_longer_than_any_lease() -> None:
    assert NEW_LEADER_WAIT_S > READ_LEASE_S * 1.2


async def test_within_the_lease_no_oracle_read() -> None:
    f = Fake()
    b = f.barrier()
    f.confirmed = f.now - READ_LEASE_S / 2
    assert await b.wait() == 10
    assert f.oracle_calls == 0 and b.lease_reads == 1
    f.now += READ_LEASE_S  # expired (a paused process resumes here)
    assert await b.wait() == 10
    assert f.oracle_calls == 1


async def test_newer_oracle_waits_for_our_commit_or_surfaces_the_fence() -> None:
    f = Fake()
    b = f.barrier()
    f.oracle = 15  # someone (maybe us) committed at 15; our stats still say 10
    assert await b.wait() == 15
    assert f.waited == [15]
    f.oracle, f.fenced = 20, True  # a successor wrote at 20: our next commit fails
    with pytest.raises(FenceError):
        await b.wait()


async def test_concurrent_reads_share_oracle_reads_that_started_after_them() -> None:
    f = Fake()
    b = f.barrier()
    f.gate.clear()
    first = asyncio.create_task(b.wait())
    await asyncio.sleep(0)  # the first oracle read is in flight
    later = [asyncio.create_task(b.wait()) for _ in range(5)]
    await asyncio.sleep(0)
    f.gate.set()
    await asyncio.gather(first, *later)
    # one read for `first`, one (started after them) shared by the five later ones
    assert f.oracle_calls == 2
