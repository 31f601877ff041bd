"""Misuse and broken storage: every error names the shard and the values, and a failed write
leaves nothing behind (no state version, no blob)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from twinstream.clock import ManualClock
from twinstream.persist import (
    BlobMissing,
    InvalidUpdateTime,
    InvalidUsage,
    LocationUnavailable,
    PersistClient,
    ReadBeforeSince,
    ReadNotYetAvailable,
    Shard,
    UpperMismatch,
    codec,
)
from twinstream.persist.fileblob import FileBlob
from twinstream.persist.location import Blob
from twinstream.persist.mem import MemBlob, MemConsensus
from twinstream.persist.sqlite import SqliteConsensus

BIG_PAD = "p" * 1_500


def big_rows(t: int, tag: str = "big") -> list[tuple[tuple[Any, ...], int, int]]:
    """Three rows whose encoding exceeds INLINE_BATCH_MAX_BYTES: the batch goes to blob."""
    return [((tag, i, BIG_PAD), t, 1) for i in range(3)]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=["mem", "file"])
def blob(request: pytest.FixtureRequest, tmp_path: Path) -> Blob:
    return MemBlob() if request.param == "mem" else FileBlob(tmp_path / "blob")


@pytest.fixture
async def client(clock: ManualClock, blob: Blob) -> AsyncIterator[PersistClient]:
    c = PersistClient(MemConsensus(), blob, clock)
    yield c
    await c.close()


async def keys(client: PersistClient) -> set[str]:
    return set(await client.blob.list_keys(""))


async def shard_at(client: PersistClient, shard_id: str, upper: int) -> Shard:
    """A shard with one small row at each time in [0, upper)."""
    shard = client.open(shard_id)
    ups = [((shard_id, t), t, 1) for t in range(upper)]
    assert await shard.compare_and_append(ups, 0, upper) is None
    return shard


# -- bad times and frontiers -------------------------------------------------------------------


@pytest.mark.parametrize("t", [0, 4, 8, 9])
async def test_update_outside_the_append_interval(client: PersistClient, t: int) -> None:
    shard = await shard_at(client, "orders", 5)
    seqno = (await shard.fetch_state()).seqno
    before = await keys(client)
    # a large batch: nothing may be staged to blob before the times are checked
    updates = [*big_rows(6), (("bad", "row"), t, 1)]
    with pytest.raises(InvalidUpdateTime) as info:
        await shard.compare_and_append(updates, 5, 8)
    msg = str(info.value)
    for part in ("orders", "('bad', 'row')", f"time {t}", "5", "8"):
        assert part in msg, (part, msg)
    assert (await shard.fetch_state()).seqno == seqno
    assert await keys(client) == before


async def test_new_upper_below_expected(client: PersistClient) -> None:
    shard = await shard_at(client, "orders", 5)
    with pytest.raises(InvalidUsage) as info:
        await shard.compare_and_append([], 5, 4)
    assert type(info.value) is InvalidUsage
    assert "orders" in str(info.value) and "4" in str(info.value) and "5" in str(info.value)
    # even when the expected upper is wrong anyway: misuse is reported, not a mismatch
    with pytest.raises(InvalidUsage):
        await shard.compare_and_append([], 3, 2)
    assert (await shard.fetch_state()).upper == 5


async def test_empty_append_is_fine(client: PersistClient) -> None:
    shard = await shard_at(client, "orders", 5)
    assert await shard.compare_and_append([], 5, 5) is None
    assert await shard.compare_and_append([(("x",), 5, 0)], 5, 9) is None  # cancels to nothing
    state = await shard.fetch_state()
    assert state.upper == 9
    assert len(state.batches) == 1


@pytest.mark.parametrize("shard_id", ["", "a/b"])
def test_invalid_shard_id(client: PersistClient, shard_id: str) -> None:
    with pytest.raises(InvalidUsage, match="invalid shard id"):
        client.open(shard_id)


async def test_reads_outside_since_and_upper(client: PersistClient) -> None:
    shard = await shard_at(client, "orders", 10)
    await shard.leased_reader("r", 4)
    with pytest.raises(ReadBeforeSince) as before:
        await shard.snapshot(3)
    assert "orders" in str(before.value) and "3" in str(before.value) and "4" in str(before.value)
    with pytest.raises(ReadNotYetAvailable) as after:
        await shard.snapshot(10)
    assert "orders" in str(after.value) and "10" in str(after.value)
    with pytest.raises(ReadNotYetAvailable):
        await shard.snapshot(11)
    # the edges are fine
    assert len(await shard.snapshot(4)) == 5
    assert len(await shard.snapshot(9)) == 10


async def test_listen_below_since(client: PersistClient) -> None:
    shard = await shard_at(client, "orders", 10)
    await shard.leased_reader("r", 4)
    with pytest.raises(ReadBeforeSince, match="orders"):
        async with contextlib.aclosing(shard.listen(2)) as events:
            async for _ev in events:
                pass
    state = await shard.fetch_state()
    assert list(state.leased) == ["r"]  # the listen's own hold was released again
    assert state.since == 4


async def test_snapshot_of_a_never_written_shard(client: PersistClient) -> None:
    shard = client.open("fresh")
    with pytest.raises(ReadNotYetAvailable, match="fresh"):
        await shard.snapshot(0)


# -- broken blobs ------------------------------------------------------------------------------


async def _read_all_ways(shard: Shard, as_of: int, upper: int) -> None:
    """snapshot, listen and compaction all have to read the batch."""
    with pytest.raises(BlobMissing, match=shard.shard_id):
        await shard.snapshot(as_of)
    with pytest.raises(BlobMissing, match=shard.shard_id):
        async with contextlib.aclosing(shard.listen(0)) as events:
            async for _ev in events:
                pass
    with pytest.raises(BlobMissing, match=shard.shard_id):
        await shard.compact()


async def _blob_shard(client: PersistClient) -> tuple[Shard, str]:
    shard = client.open("orders")
    assert await shard.compare_and_append([(("first",), 0, 1)], 0, 1) is None
    assert await shard.compare_and_append(big_rows(1), 1, 2) is None
    (key,) = {p.blob_key("orders") for p in (await shard.fetch_state()).batches if not p.inline}
    return shard, key


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda data: b"\xc1garbage", id="garbage"),
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: codec.pack([1, 2, 3]), id="wrong-shape"),
        pytest.param(lambda data: b"", id="empty"),
    ],
)
async def test_corrupt_blob(client: PersistClient, corrupt: Any) -> None:
    shard, key = await _blob_shard(client)
    data = await client.blob.get(key)
    assert data is not None
    await client.blob.set(key, corrupt(data))
    with pytest.raises(BlobMissing) as info:
        await shard.snapshot(1)
    assert key in str(info.value)
    await _read_all_ways(shard, 1, 2)
    # the inline batch before it is still readable
    assert await shard.snapshot(0) == [(("first",), 1)]


async def test_deleted_referenced_blob(client: PersistClient) -> None:
    shard, key = await _blob_shard(client)
    await client.blob.delete(key)
    with pytest.raises(BlobMissing) as info:
        await shard.snapshot(1)
    assert key in str(info.value) and "orders" in str(info.value)
    await _read_all_ways(shard, 1, 2)
    assert await shard.snapshot(0) == [(("first",), 1)]


# -- unreachable locations ---------------------------------------------------------------------


async def test_sqlite_consensus_on_a_directory(tmp_path: Path) -> None:
    """The database path is a directory: sqlite cannot open it."""
    (tmp_path / "consensus.db").mkdir()
    client = PersistClient.from_urls(f"sqlite://{tmp_path / 'consensus.db'}", "mem://")
    shard = client.open("orders")
    with pytest.raises(LocationUnavailable, match=r"consensus\.db"):
        await shard.fetch_state()
    with pytest.raises(LocationUnavailable):
        await shard.compare_and_append([(("x",), 0, 1)], 0, 1)
    await client.close()


async def test_sqlite_consensus_under_a_file(tmp_path: Path) -> None:
    """The consensus directory cannot be created because a regular file is in the way."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    consensus = SqliteConsensus(blocker / "sub" / "consensus.db")
    client = PersistClient(consensus, MemBlob())
    try:
        with pytest.raises(LocationUnavailable, match=r"consensus\.db"):
            await client.open("orders").fetch_state()
    finally:
        await client.close()


async def test_file_blob_under_a_file(tmp_path: Path) -> None:
    """The blob directory cannot be created: a regular file is in the way."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(LocationUnavailable):
        client = PersistClient.from_urls("mem://", f"file://{blocker / 'blob'}")
        await client.open("orders").compare_and_append(big_rows(0), 0, 1)


# -- failed writes leave nothing behind ------------------------------------------------------


async def test_upper_mismatch_leaves_nothing(client: PersistClient) -> None:
    shard = await shard_at(client, "orders", 5)
    other = client.open("orders")  # a second writer moves the upper first
    assert await other.compare_and_append(big_rows(5, "winner"), 5, 6) is None

    state = await shard.fetch_state()
    snap = sorted(await shard.snapshot(5), key=repr)
    before = await keys(client)
    for expected in (5, 3, 7):
        out = await shard.compare_and_append(big_rows(expected, "loser"), expected, expected + 1)
        assert out == UpperMismatch("orders", expected, 6)
        assert "orders" in str(out)
    assert await keys(client) == before
    assert (await shard.fetch_state()).seqno == state.seqno
    assert sorted(await shard.snapshot(5), key=repr) == snap


async def test_upper_mismatch_from_a_stale_cache(client: PersistClient) -> None:
    shard = await shard_at(client, "orders", 5)
    await shard.fetch_state()  # cache says upper 5
    other = client.open("orders")
    assert await other.compare_and_append([(("w",), 5, 1)], 5, 6) is None
    before = await keys(client)
    out = await shard.compare_and_append(big_rows(5, "loser"), 5, 6)
    assert out == UpperMismatch("orders", 5, 6)
    assert await keys(client) == before
    assert dict(await shard.snapshot(5)).get(("w",)) == 1
    assert not any(r[0] == "loser" for r, _ in await shard.snapshot(5))


# -- compare_and_append_many -------------------------------------------------------------------


@pytest.fixture(params=["mem", "sqlite"])
async def multi_client(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[PersistClient]:
    if request.param == "mem":
        c = PersistClient(MemConsensus(), MemBlob(), clock)
    else:
        c = PersistClient(
            SqliteConsensus(tmp_path / "consensus.db"), FileBlob(tmp_path / "blob"), clock
        )
    yield c
    await c.close()


async def test_append_many_is_all_or_none(multi_client: PersistClient) -> None:
    client = multi_client
    shards = [await shard_at(client, sid, up) for sid, up in (("a", 3), ("b", 5), ("c", 7))]
    # someone else moves b; the many-writer's cached upper of b (5) is now stale
    assert await client.open("b").compare_and_append([(("b-other",), 5, 1)], 5, 6) is None

    async def everything() -> tuple[list[int], list[Any], set[str]]:
        uppers = [(await s.fetch_state()).upper for s in shards]
        snaps = [
            sorted(await s.snapshot(u - 1), key=repr) for s, u in zip(shards, uppers, strict=True)
        ]
        return uppers, snaps, await keys(client)

    before = await everything()
    assert before[0] == [3, 6, 7]
    writes = [
        (shards[0], big_rows(3, "a"), 3, 4),
        (shards[1], big_rows(5, "b"), 5, 6),  # wrong: b is at 6 now
        (shards[2], big_rows(7, "c"), 7, 8),
    ]
    out = await client.compare_and_append_many(writes)
    assert out == {"b": UpperMismatch("b", 5, 6)}
    assert await everything() == before  # no upper moved, no row appeared, no blob left

    writes[1] = (shards[1], big_rows(6, "b"), 6, 7)
    assert await client.compare_and_append_many(writes) is None
    assert [(await s.fetch_state()).upper for s in shards] == [4, 7, 8]
    for shard, (_s, ups, _e, new_upper) in zip(shards, writes, strict=True):
        rows = dict(await shard.snapshot(new_upper - 1))
        assert all(rows.get(r) == 1 for r, _t, _d in ups)


async def test_append_many_bad_input(multi_client: PersistClient) -> None:
    client = multi_client
    a, b = await shard_at(client, "a", 3), await shard_at(client, "b", 3)
    before = await keys(client)
    with pytest.raises(InvalidUsage, match="twice"):
        await client.compare_and_append_many([(a, [], 3, 4), (client.open("a"), [], 3, 4)])
    with pytest.raises(InvalidUpdateTime, match="shard b"):
        await client.compare_and_append_many(
            [(a, big_rows(3), 3, 4), (b, [*big_rows(3), (("late",), 4, 1)], 3, 4)]
        )
    elsewhere = PersistClient(MemConsensus(), MemBlob()).open("c")
    with pytest.raises(InvalidUsage, match="different consensus"):
        await client.compare_and_append_many([(a, [], 3, 4), (elsewhere, [], 0, 1)])
    assert await keys(client) == before
    assert [(await s.fetch_state()).upper for s in (a, b)] == [3, 3]
    assert await client.compare_and_append_many([]) is None
