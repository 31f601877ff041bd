"""Group commit: batching, durability before acknowledgement, uppers advancing on ticks, and
an old leader noticing a fence within one tick."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from twinstream.adapter import group_commit
from twinstream.adapter.group_commit import CommitOutcomeUnknown, CommitterShutDown, GroupCommitter
from twinstream.adapter.oracle import TimestampOracle
from twinstream.adapter.session import to_pg_error
from twinstream.catalog import DeployGenerationFenced, DurableCatalog, OpenMode
from twinstream.clock import SYSTEM_CLOCK
from twinstream.persist import PersistClient
from twinstream.testing.locations import Location


@dataclass
class Env:
    client: PersistClient
    catalog: DurableCatalog
    committer: GroupCommitter
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def leader(location: Location, generation: int = 1) -> AsyncIterator[Env]:
    client = PersistClient.from_urls(location.consensus_url, location.blob_url)
    catalog = await DurableCatalog.open(
        client, OpenMode.WRITABLE, deploy_generation=generation, clock=SYSTEM_CLOCK
    )
    oracle = TimestampOracle(client.consensus, SYSTEM_CLOCK)
    committer = GroupCommitter(oracle, catalog.confirm_leadership, interval_s=0.05)
    task = asyncio.create_task(committer.run())
    try:
        yield Env(client, catalog, committer, task)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await client.close()


async def wait_for(cond: object, timeout_s: float = 10.0) -> None:
    async def loop() -> None:
        while not await cond():  # type: ignore[operator]
            await asyncio.sleep(0.01)

    await asyncio.wait_for(loop(), timeout_s)


async def test_concurrent_writes_are_batched_and_durable(location: Location) -> None:
    async with leader(location) as env:
        t1 = env.client.open("t1")
        t2 = env.client.open("t2")
        await env.committer.register(t1)
        await env.committer.register(t2)
        n = 60
        results = await asyncio.gather(
            *(env.committer.write({"t1" if i % 2 else "t2": [((i,), 1)]}) for i in range(n))
        )
        assert env.committer.stats.writes >= n
        assert len(set(results)) < n, "concurrent writes should share commits"
        last = max(results)
        # Every acknowledged write is durable and readable at its commit timestamp.
        rows1 = await t1.snapshot(last)
        rows2 = await t2.snapshot(last)
        assert sorted(r[0][0] for r in rows1 + rows2) == list(range(n))
        assert await t1.upper() == await t2.upper(), "all table uppers advance together"


async def test_uppers_advance_without_writes(location: Location) -> None:
    async with leader(location) as env:
        t = env.client.open("t")
        first = await env.committer.register(t)

        async def advanced() -> bool:
            return await t.upper() > first + 1

        await wait_for(advanced)
        assert env.committer.stats.empty_ticks >= 1


async def test_old_leader_learns_of_fence_within_a_tick(location: Location) -> None:
    async with leader(location, generation=1) as old:
        t = old.client.open("t")
        await old.committer.register(t)
        await old.committer.write({"t": [(("before",), 1)]})
        other = PersistClient.from_urls(location.consensus_url, location.blob_url)
        try:
            await DurableCatalog.open(
                other, OpenMode.WRITABLE, deploy_generation=2, clock=SYSTEM_CLOCK
            )
            with pytest.raises(DeployGenerationFenced):
                await asyncio.wait_for(asyncio.shield(old.task), 5.0)
            with pytest.raises(Exception):  # noqa: B017 - any failure: the write is refused
                await old.committer.write({"t": [(("after",), 1)]})
            upper = await t.upper()
            rows = await other.open("t").snapshot(upper - 1)
            assert rows == [(("before",), 1)], "nothing written after the fence"
        finally:
            await other.close()


async def test_bug_shutdown_fails_pending_writes_as_retryable(location: Location) -> None:
    """Found by `twinstream demo`: when a fenced generation shut down (another task saw the
    fence first and cancelled the commit loop), writes still queued got XX000 "group commit
    stopped", which the balancer cannot retry; they were not applied, so they now fail with
    CommitterShutDown, answered FATAL 57P01 (re-sent by the balancer)."""
    async with leader(location) as env:
        t = env.client.open("t")
        await env.committer.register(t)
        queued = asyncio.create_task(env.committer.write({"t": [((1,), 1)]}))
        env.task.cancel()  # the write task runs first: it is queued when the loop stops
        with pytest.raises(CommitterShutDown):
            await queued
        with pytest.raises(CommitterShutDown):  # and so is any write after the stop
            await env.committer.write({"t": [((2,), 1)]})
        err = to_pg_error(CommitterShutDown("group commit stopped"))
        assert (err.sqlstate, err.severity) == ("57P01", "FATAL")
        assert await t.snapshot(await t.upper() - 1) == []


async def test_bug_write_to_unregistered_table_after_stop_is_retryable(location: Location) -> None:
    """Found by `twinstream demo`: a CREATE TABLE whose catalog commit landed just before the
    fence reports success (it is durable; the successor installs it) but is never registered
    here; the client's next INSERT must fail retryably (re-sent to the successor by the
    balancer), not with XX000 "not registered"."""
    async with leader(location) as env:

        async def running() -> bool:
            return env.committer.stats.commits > 0

        await wait_for(running)  # the loop has started (and committed a tick)
        env.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await env.task
        with pytest.raises(CommitterShutDown):
            await env.committer.write({"never-registered": [((1,), 1)]})


async def test_bug_cancel_lets_the_commit_in_flight_finish(location: Location) -> None:
    """A cancelled loop (another task saw the fence and the task group cancelled it) used to
    leave the writers of the commit in flight unanswered — their sessions were then cut off
    with a retryable 57P01 although the commit could land: a duplicate after the balancer's
    re-send. Now the commit finishes and its writers get its real outcome."""
    async with leader(location) as env:
        t = env.client.open("t")
        await env.committer.register(t)
        confirm = env.committer.confirm_leadership
        entered, gate = asyncio.Event(), asyncio.Event()

        async def slow_confirm() -> None:
            entered.set()
            await gate.wait()
            await confirm()

        env.committer.confirm_leadership = slow_confirm
        write = asyncio.create_task(env.committer.write({"t": [((1,), 1)]}))
        await asyncio.wait_for(entered.wait(), 10.0)  # the commit of (1,) is in flight
        env.task.cancel()
        await asyncio.sleep(0)  # the cancellation is delivered while the commit waits
        gate.set()
        ts = await asyncio.wait_for(write, 10.0)
        with pytest.raises(asyncio.CancelledError):
            await env.task
        assert await t.snapshot(ts) == [((1,), 1)], "acknowledged and durable"


async def test_stop_commits_what_is_queued_and_refuses_new_writes(location: Location) -> None:
    async with leader(location) as env:
        t = env.client.open("t")
        await env.committer.register(t)
        queued = [asyncio.create_task(env.committer.write({"t": [((i,), 1)]})) for i in range(5)]
        await asyncio.sleep(0)  # the writes are queued
        env.committer.stop()
        with pytest.raises(CommitterShutDown):  # new work is refused at once, unrun
            await env.committer.write({"t": [(("late",), 1)]})
        done = await asyncio.wait_for(asyncio.gather(*queued), 10.0)
        await asyncio.wait_for(env.task, 10.0)  # the loop ends normally
        assert env.committer.stopped
        rows = await t.snapshot(max(done))
        assert sorted(r[0][0] for r in rows) == list(range(5))
        with pytest.raises(CommitterShutDown):
            await env.committer.wait_committed(max(done) + 1)


async def test_a_commit_that_does_not_finish_at_shutdown_is_not_retryable(
    location: Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit still in flight after `COMMIT_DRAIN_TIMEOUT_S` (a hung store) may or may not
    land: its writer gets 40003, which the balancer never re-sends (57P01 would be)."""
    monkeypatch.setattr(group_commit, "COMMIT_DRAIN_TIMEOUT_S", 0.05)
    async with leader(location) as env:
        t = env.client.open("t")
        await env.committer.register(t)
        entered, never = asyncio.Event(), asyncio.Event()

        async def hung_confirm() -> None:
            entered.set()
            await never.wait()

        env.committer.confirm_leadership = hung_confirm
        write = asyncio.create_task(env.committer.write({"t": [((1,), 1)]}))
        await asyncio.wait_for(entered.wait(), 10.0)
        env.task.cancel()
        with pytest.raises(CommitOutcomeUnknown) as info:
            await asyncio.wait_for(write, 10.0)
        err = to_pg_error(info.value)
        assert (err.sqlstate, err.severity) == ("40003", "ERROR")
