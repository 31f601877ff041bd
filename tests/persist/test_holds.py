"""Read holds (leased and critical), compaction and orphan-blob collection of a persist shard."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from twinstream.clock import ManualClock
from twinstream.persist import (
    LeaseExpired,
    LocationUnavailable,
    OpaqueMismatch,
    PersistClient,
    Progress,
    ReadBeforeSince,
    ReadNotYetAvailable,
    Shard,
    Updates,
    VersionedData,
    codec,
    limits,
)
from twinstream.persist.fileblob import FileBlob
from twinstream.persist.location import Blob, CasOp
from twinstream.persist.mem import MemBlob, MemConsensus

LEASE_MS = 1_000
BIG_PAD = "p" * 1_500


def big_rows(t: int, tag: str) -> list[tuple[tuple[Any, ...], int, int]]:
    """Three rows whose encoding exceeds INLINE_BATCH_MAX_BYTES: the batch goes to blob."""
    return [((tag, i, BIG_PAD), t, 1) for i in range(3)]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=["mem", "file"])
def blob(request: pytest.FixtureRequest, tmp_path: Path) -> Blob:
    return MemBlob() if request.param == "mem" else FileBlob(tmp_path / "blob")


@pytest.fixture
def client(clock: ManualClock) -> PersistClient:
    return PersistClient(MemConsensus(), MemBlob(), clock)


async def fill(shard: Shard, upper: int) -> None:
    """One row per time in [0, upper), appended as one batch."""
    ups = [((f"row{t}",), t, 1) for t in range(upper)]
    assert await shard.compare_and_append(ups, 0, upper) is None


async def listen_until(shard: Shard, as_of: int, upper: int) -> list[tuple[Any, int, int]]:
    """Every update a listen from `as_of` delivers before progress reaches `upper`."""
    out: list[tuple[Any, int, int]] = []

    async def run() -> None:
        async with contextlib.aclosing(shard.listen(as_of)) as events:
            async for ev in events:
                if isinstance(ev, Updates):
                    out.extend(ev.updates)
                elif isinstance(ev, Progress) and ev.upper >= upper:
                    return

    await asyncio.wait_for(run(), 10)
    return sorted(out, key=repr)


async def blob_keys(blob: Blob, shard_id: str) -> set[str]:
    return set(await blob.list_keys(f"{shard_id}/"))


# -- leased holds ------------------------------------------------------------------------------


async def test_lease_expiry_releases_since(client: PersistClient, clock: ManualClock) -> None:
    shard = client.open("s", lease_ms=LEASE_MS)
    await fill(shard, 30)
    leased = await shard.leased_reader("lr", 5)
    assert leased.since == 5
    critical = await shard.critical_reader("cr", opaque=1)
    assert await critical.since() == 5  # a critical reader starts at the shard's since
    assert await critical.compare_and_downgrade_since(1, 1, 20) == 20
    assert await shard.since() == 5  # the leased hold at 5 still pins since

    clock.advance(LEASE_MS + 1)
    # the lease ran out, but the stored since moves only when a version is written
    assert await shard.since() == 5
    assert len(await shard.snapshot(5)) == 6

    state = await shard.maintenance()
    assert state.since == 20
    assert "lr" not in state.leased
    assert await shard.since() == 20
    with pytest.raises(ReadBeforeSince):
        await shard.snapshot(19)
    assert len(await shard.snapshot(20)) == 21
    # the expired reader cannot come back by heartbeating or downgrading
    with pytest.raises(LeaseExpired, match="lr"):
        await leased.heartbeat()
    with pytest.raises(LeaseExpired, match="lr"):
        await leased.downgrade_since(25)
    assert await shard.since() == 20


async def test_expiry_takes_effect_at_the_expiry_instant(
    client: PersistClient, clock: ManualClock
) -> None:
    shard = client.open("s", lease_ms=LEASE_MS)
    await fill(shard, 30)
    await shard.leased_reader("lr", 5)
    clock.advance(LEASE_MS // 2)
    await shard.leased_reader("late", 10)
    clock.advance(LEASE_MS // 2 - 1)
    assert "lr" in (await shard.maintenance()).leased
    clock.advance(1)  # now == expires_ms of "lr": expired
    state = await shard.maintenance()
    assert list(state.leased) == ["late"]
    assert state.since == 10


async def test_maintenance_from_a_shard_with_a_stale_cache(
    client: PersistClient, clock: ManualClock
) -> None:
    """Regression: maintenance() applied its no-op transition to its cached state; a Shard that
    cached the state before a lease was registered elsewhere found nothing to expire."""
    janitor = client.open("s", lease_ms=LEASE_MS)
    await janitor.maintenance()  # caches the (empty) state
    worker = client.open("s", lease_ms=LEASE_MS)
    await fill(worker, 30)
    await worker.leased_reader("lr", 5)
    critical = await worker.critical_reader("cr", opaque=1)
    await critical.compare_and_downgrade_since(1, 1, 20)
    clock.advance(LEASE_MS)
    state = await janitor.maintenance()
    assert (state.upper, state.since, state.leased) == (30, 20, {})
    assert await worker.since() == 20


async def test_heartbeat_keeps_the_hold(client: PersistClient, clock: ManualClock) -> None:
    shard = client.open("s", lease_ms=LEASE_MS)
    await fill(shard, 30)
    leased = await shard.leased_reader("lr", 5)
    critical = await shard.critical_reader("cr", opaque="e1")
    await critical.compare_and_downgrade_since("e1", "e1", 20)

    for _ in range(5):  # 5 x 600 ms = 3 leases' worth of time, heartbeating every 600 ms
        clock.advance(600)
        await leased.heartbeat()
        state = await shard.maintenance()
        assert "lr" in state.leased
        assert state.since == 5
    assert len(await shard.snapshot(5)) == 6

    # downgrading also renews the lease
    clock.advance(600)
    await leased.downgrade_since(8)
    clock.advance(600)
    state = await shard.maintenance()
    assert state.leased["lr"].since == 8
    assert state.since == 8

    # stop heartbeating: the hold goes, since jumps to the critical hold
    clock.advance(LEASE_MS)
    assert (await shard.maintenance()).since == 20


async def test_downgrade_never_moves_a_hold_back(client: PersistClient) -> None:
    shard = client.open("s", lease_ms=LEASE_MS)
    await fill(shard, 30)
    leased = await shard.leased_reader("lr", 10)
    await leased.downgrade_since(3)
    assert leased.since == 10
    critical = await shard.critical_reader("cr", opaque=0)
    assert await critical.compare_and_downgrade_since(0, 1, 15) == 15
    assert await critical.compare_and_downgrade_since(1, 2, 12) == 15
    await leased.expire()
    assert await shard.since() == 15


async def test_registering_below_since_holds_at_since(client: PersistClient) -> None:
    shard = client.open("s", lease_ms=LEASE_MS)
    await fill(shard, 30)
    await shard.leased_reader("a", 12)
    late = await shard.leased_reader("b", 4)
    assert late.since == 12
    assert await shard.since() == 12


async def test_listen_loses_its_hold_when_its_lease_lapses(
    client: PersistClient, clock: ManualClock
) -> None:
    shard = client.open("s", lease_ms=LEASE_MS)
    await fill(shard, 10)
    events: list[Any] = []
    caught_up = asyncio.Event()

    async def listener() -> None:
        async with contextlib.aclosing(shard.listen(9)) as it:
            async for ev in it:
                events.append(ev)
                if ev == Progress(11):
                    caught_up.set()

    # nothing after 9 yet; the listener parks waiting for a change
    task = asyncio.create_task(listener())
    assert await shard.compare_and_append([(("x",), 10, 1)], 10, 11) is None
    await asyncio.wait_for(caught_up.wait(), 10)
    # a lease's worth of (manual) time passes without the listener getting to heartbeat
    clock.advance(LEASE_MS + 1)
    await shard.maintenance()
    with pytest.raises(LeaseExpired, match="shard s: "):
        await asyncio.wait_for(task, 10)
    assert events == [Updates([(("x",), 10, 1)]), Progress(11)]


async def test_cancelled_listen_stops_and_releases_its_hold(client: PersistClient) -> None:
    """Regression: listen used to park in asyncio.wait_for(event.wait(), ...), which on Python
    3.11 swallows a cancellation that arrives while the event is being set; the listen then kept
    running (and heartbeating its read hold) after its task was cancelled."""
    shard = client.open("s", lease_ms=LEASE_MS)
    assert await shard.compare_and_append([(("a",), 1, 1)], 0, 2) is None
    caught_up = asyncio.Event()

    async def listener() -> None:
        async with contextlib.aclosing(shard.listen(0)) as it:
            async for ev in it:
                if ev == Progress(2):
                    caught_up.set()

    task = asyncio.create_task(listener())
    await asyncio.wait_for(caught_up.wait(), 10)
    # a write wakes the parked listen and, in the same loop iteration, its task is cancelled
    assert await shard.compare_and_append([(("b",), 2, 1)], 2, 3) is None
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    try:
        assert task in done, "the listen swallowed its cancellation and is still running"
        assert task.cancelled()
        assert (await shard.fetch_state()).leased == {}
    finally:
        for _ in range(5):  # make sure nothing outlives the test, even when it failed
            if task.done():
                break
            task.cancel()
            await asyncio.wait({task}, timeout=2)


# -- a hold beyond the upper ---------------------------------------------------------------------


async def test_a_hold_beyond_the_upper_moves_since_past_the_upper(
    client: PersistClient,
) -> None:
    """Documents what the code does: since follows the holds even past the upper (the
    `_with_since` docstring claims it "never passes the upper"). Reads stay correct."""
    shard = client.open("s", lease_ms=LEASE_MS)
    await shard.compare_and_append([(("a",), 0, 1), (("b",), 3, 1)], 0, 5)
    await shard.leased_reader("ahead", 8)
    state = await shard.fetch_state()
    assert (state.upper, state.since) == (5, 8)
    with pytest.raises(ReadBeforeSince):
        await shard.snapshot(4)

    assert await shard.compare_and_append([(("c",), 6, 1), (("d",), 9, 1)], 5, 12) is None
    before = {t: sorted(await shard.snapshot(t)) for t in range(8, 12)}
    assert before[8] == [(("a",), 1), (("b",), 1), (("c",), 1)]
    while await shard.compact():
        pass
    assert len((await shard.fetch_state()).batches) == 1
    assert {t: sorted(await shard.snapshot(t)) for t in range(8, 12)} == before
    assert await listen_until(shard, 8, 12) == [(("d",), 9, 1)]


# -- critical holds --------------------------------------------------------------------------


async def test_stale_critical_reader_is_fenced(client: PersistClient) -> None:
    old_shard = client.open("s", lease_ms=LEASE_MS)
    await fill(old_shard, 30)
    old = await old_shard.critical_reader("controller", opaque=1)
    assert await old.compare_and_downgrade_since(1, 1, 5) == 5

    # a newer controller, on its own Shard object, takes the same reader over: epoch 1 -> 2
    new_shard = client.open("s", lease_ms=LEASE_MS)
    new = await new_shard.critical_reader("controller", opaque=99)
    assert await new.opaque() == 1  # registering again leaves the existing hold as it is
    assert await new.compare_and_downgrade_since(1, 2, 10) == 10
    assert await new_shard.since() == 10

    # the old one still believes it owns epoch 1; its cached state says so, consensus does not
    with pytest.raises(OpaqueMismatch) as info:
        await old.compare_and_downgrade_since(1, 1, 25)
    err = info.value
    assert (err.shard_id, err.reader_id, err.expected, err.actual) == ("s", "controller", 1, 2)
    assert "controller" in str(err) and "s" in str(err)
    assert await old_shard.since() == 10
    assert await old.since() == 10
    assert await new.opaque() == 2

    # the new owner keeps going
    assert await new.compare_and_downgrade_since(2, 3, 15) == 15
    assert await new_shard.since() == 15


async def test_critical_hold_survives_any_amount_of_time(
    client: PersistClient, clock: ManualClock
) -> None:
    shard = client.open("s", lease_ms=LEASE_MS)
    await fill(shard, 10)
    critical = await shard.critical_reader("cr", opaque=None)
    clock.advance(1000 * LEASE_MS)
    state = await shard.maintenance()
    assert state.critical["cr"].since == 0
    assert state.since == 0
    assert len(await shard.snapshot(0)) == 1
    assert await critical.compare_and_downgrade_since(None, "e1", 4) == 4


# -- compaction ------------------------------------------------------------------------------


async def test_compaction_merges_and_deletes_replaced_blobs(clock: ManualClock, blob: Blob) -> None:
    client = PersistClient(MemConsensus(), blob, clock)
    shard = client.open("s", lease_ms=LEASE_MS)
    # six blob batches at times 0..5 (the one at 2 retracts a row of time 0), one inline at 6
    for t in range(6):
        ups = big_rows(t, f"t{t}")
        if t == 2:
            ups.append((("t0", 0, BIG_PAD), 2, -1))
        assert await shard.compare_and_append(ups, t, t + 1) is None
    assert await shard.compare_and_append([(("small",), 6, 1)], 6, 7) is None
    state = await shard.fetch_state()
    assert len(state.batches) == 7
    old_keys = {p.blob_key("s") for p in state.batches if p.inline is None}
    assert len(old_keys) == 6
    assert await blob_keys(blob, "s") == old_keys

    await shard.leased_reader("lr", 3)
    assert await shard.since() == 3
    snaps = {t: sorted(await shard.snapshot(t), key=repr) for t in range(3, 7)}
    listens = {t: await listen_until(shard, t, 7) for t in range(3, 6)}

    rounds = 0
    while await shard.compact():
        rounds += 1
    assert rounds >= 1
    state = await shard.fetch_state()
    assert len(state.batches) == 1
    (merged,) = state.batches
    # advanced to since 3, the row inserted at 0 and retracted at 2 cancels out
    assert merged.count == 6 * 3 + 1 - 1
    live = {merged.blob_key("s")} if merged.inline is None else set()
    assert await blob_keys(blob, "s") == live
    assert not (old_keys & await blob_keys(blob, "s"))

    # times below since were advanced to since
    data = merged.inline if merged.inline is not None else await blob.get(merged.blob_key("s"))
    assert data is not None
    assert min(t for _r, t, _d in codec.decode_updates(data)) == 3

    # reads at times >= since are unchanged
    assert {t: sorted(await shard.snapshot(t), key=repr) for t in range(3, 7)} == snaps
    assert {t: await listen_until(shard, t, 7) for t in range(3, 6)} == listens
    with pytest.raises(ReadBeforeSince):
        await shard.snapshot(2)
    await client.close()


async def test_writer_compacts_when_batches_pile_up(clock: ManualClock, blob: Blob) -> None:
    client = PersistClient(MemConsensus(), blob, clock)
    shard = client.open("s", lease_ms=LEASE_MS)
    n = limits.COMPACTION_BATCH_COUNT + 4
    for t in range(n):
        ups = big_rows(t, f"b{t}") if t % 3 == 0 else [((t,), t, 1)]
        assert await shard.compare_and_append(ups, t, t + 1) is None
        state = await shard.fetch_state()
        assert len(state.batches) <= limits.COMPACTION_BATCH_COUNT
        live = {p.blob_key("s") for p in state.batches if p.inline is None}
        assert await blob_keys(blob, "s") == live
    got = dict(await shard.snapshot(n - 1))
    assert sum(got.values()) == len(got) == sum(3 if t % 3 == 0 else 1 for t in range(n))
    await client.close()


class HookBlob(MemBlob):
    """MemBlob that runs `hook` (once) at the start of the next get: "meanwhile, elsewhere"."""

    def __init__(self) -> None:
        super().__init__()
        self.hook: Any = None

    async def get(self, key: str) -> bytes | None:
        if self.hook is not None:
            hook, self.hook = self.hook, None
            await hook()
        return await super().get(key)


async def test_snapshot_racing_compaction_past_its_as_of(clock: ManualClock) -> None:
    """Regression: when compaction deleted a blob mid-read, snapshot retried on a newer state
    whose since had passed as_of and silently filtered the merged batch (times advanced to that
    since) away, returning [] instead of raising ReadBeforeSince."""
    blob = HookBlob()
    client = PersistClient(MemConsensus(), blob, clock)
    reader, other = client.open("s"), client.open("s")
    assert await other.compare_and_append(big_rows(1, "one"), 0, 2) is None
    assert await other.compare_and_append(big_rows(2, "two"), 2, 3) is None
    assert await other.compare_and_append([(("small",), 3, 1)], 3, 4) is None
    expected = sorted(await reader.snapshot(2), key=repr)
    assert len(expected) == 6

    async def meanwhile() -> None:
        """Another process takes a hold at 3 (since 0 -> 3) and compacts everything."""
        await other.leased_reader("r", 3)
        while await other.compact():
            pass

    blob.hook = meanwhile
    try:
        got = sorted(await reader.snapshot(2), key=repr)
    except ReadBeforeSince:
        return  # the honest answer: 2 is no longer readable
    assert got == expected, "snapshot(2) silently lost rows"


# -- orphan blobs ------------------------------------------------------------------------------


class FlakyConsensus:
    """MemConsensus whose next compare-and-set fails as if the store went away mid-write."""

    def __init__(self) -> None:
        self.inner = MemConsensus()
        self.feed = self.inner.feed
        self.fail_next = False

    async def head(self, key: str) -> VersionedData | None:
        return await self.inner.head(key)

    async def compare_and_set(self, key: str, expected: int | None, new: VersionedData) -> bool:
        return await self.compare_and_set_many([(key, expected, new)])

    async def compare_and_set_many(self, ops: Sequence[CasOp]) -> bool:
        if self.fail_next:
            self.fail_next = False
            raise LocationUnavailable("flaky consensus: connection lost")
        return await self.inner.compare_and_set_many(ops)

    async def scan(self, key: str, from_seqno: int, limit: int) -> list[VersionedData]:
        return await self.inner.scan(key, from_seqno, limit)

    async def truncate(self, key: str, seqno: int) -> int:
        return await self.inner.truncate(key, seqno)

    async def start_watching(self) -> None:
        return None

    async def close(self) -> None:
        return None


async def test_gc_orphan_blobs_spares_young_ones(clock: ManualClock, blob: Blob) -> None:
    consensus = FlakyConsensus()
    client = PersistClient(consensus, blob, clock)
    shard = client.open("s", lease_ms=LEASE_MS)
    assert await shard.compare_and_append(big_rows(0, "live"), 0, 1) is None
    live = await blob_keys(blob, "s")
    assert len(live) == 1

    async def crash_mid_append(t: int) -> set[str]:
        """A writer whose CAS fails indeterminately leaves its staged blob behind."""
        before = await blob_keys(blob, "s")
        consensus.fail_next = True
        with pytest.raises(LocationUnavailable):
            await shard.compare_and_append(big_rows(t, f"lost{t}"), t, t + 1)
        orphan = await blob_keys(blob, "s") - before
        assert len(orphan) == 1
        return orphan

    min_age = 600_000
    old = await crash_mid_append(1)
    clock.advance(min_age + 1)
    young = await crash_mid_append(1)
    assert await blob_keys(blob, "s") == live | old | young

    assert await shard.gc_orphan_blobs(min_age_ms=min_age) == 1
    assert await blob_keys(blob, "s") == live | young
    assert len(await shard.snapshot(0)) == 3  # the live batch is intact

    clock.advance(min_age)
    assert await shard.gc_orphan_blobs(min_age_ms=min_age) == 1
    assert await blob_keys(blob, "s") == live
    assert await shard.gc_orphan_blobs(min_age_ms=min_age) == 0
    # the failed appends never became visible
    assert (await shard.fetch_state()).upper == 1
    assert len(await shard.snapshot(0)) == 3
    await client.close()


async def test_gc_orphan_blobs_leaves_other_shards_alone(clock: ManualClock, blob: Blob) -> None:
    client = PersistClient(MemConsensus(), blob, clock)
    a, a1 = client.open("a"), client.open("a1")
    assert await a.compare_and_append(big_rows(0, "a"), 0, 1) is None
    assert await a1.compare_and_append(big_rows(0, "a1"), 0, 1) is None
    clock.advance(10**9)
    assert await a.gc_orphan_blobs(min_age_ms=0) == 0
    assert len(await a1.snapshot(0)) == 3
    assert len(await a.snapshot(0)) == 3
    await client.close()


async def test_snapshot_and_updates_is_a_snapshot_plus_the_later_updates(
    client: PersistClient,
) -> None:
    """One read gives what `snapshot(as_of)` and a listen from `as_of` up to the returned
    upper give: the later updates of the batches spanning the as-of (a compacted one here,
    the case it exists for), none of the batches after it."""
    shard = client.open("snap-and-updates")
    upper = 0
    for t in range(12):  # a row added at each time, the one of time t - 3 retracted
        ups = [((f"row{t}",), t, 1)] + ([((f"row{t - 3}",), t, -1)] if t >= 3 else [])
        assert await shard.compare_and_append(ups, upper, t + 1) is None
        upper = t + 1
    await shard.critical_reader("keep", 0)
    assert await shard.compact(full=True)
    assert len((await shard.fetch_state()).batches) == 1  # one batch spanning every time
    for t in range(12, 15):  # and three batches after it
        ups = [((f"row{t}",), t, 1), ((f"row{t - 3}",), t, -1)]
        assert await shard.compare_and_append(ups, upper, t + 1) is None
        upper = t + 1
    for as_of, want_upper in ((0, 12), (4, 12), (11, 12), (12, 13), (14, 15)):
        rows, later, seen_upper = await shard.snapshot_and_updates(as_of)
        assert seen_upper == want_upper, as_of
        assert sorted(rows) == sorted(await shard.snapshot(as_of))
        heard = await listen_until(shard, as_of, seen_upper) if as_of + 1 < seen_upper else []
        want = [u for u in heard if u[1] < seen_upper]
        assert sorted(later, key=repr) == want
        assert all(as_of < t < seen_upper for _r, t, _d in later)
    with pytest.raises(ReadNotYetAvailable):
        await client.open("snap-and-updates-empty").snapshot_and_updates(0)


async def test_listen_skips_batches_below_skip_below(client: PersistClient) -> None:
    """Batches entirely below `skip_below()` are not delivered; progress is unchanged, and a
    batch straddling it is delivered whole (the caller filters)."""
    shard = client.open("skip-below")
    for t in range(4):
        assert await shard.compare_and_append([((f"r{t}",), t, 1)], t, t + 1) is None
    assert await shard.compare_and_append([(("r4",), 4, 1), (("r5",), 5, 1)], 4, 6) is None
    got: list[tuple[Any, int, int]] = []
    progress = 0

    async def run() -> None:
        nonlocal progress
        gen = shard.listen(0, skip_below=lambda: 5)
        async with contextlib.aclosing(gen) as events:
            async for ev in events:
                if isinstance(ev, Updates):
                    got.extend(ev.updates)
                elif isinstance(ev, Progress):
                    progress = ev.upper
                    if ev.upper >= 6:
                        return

    await asyncio.wait_for(run(), 10)
    assert progress == 6
    assert sorted(got, key=repr) == [(("r4",), 4, 1), (("r5",), 5, 1)]
