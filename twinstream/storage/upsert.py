"""ENVELOPE UPSERT: the latest value per key wins; a delete removes the key.

An upsert collection's output shard holds at most ONE row per key (the key is column 0). Its
per-key state is nothing but the shard's contents, so it is never stored separately:
- the leader rebuilds it from a snapshot of the output shard whenever ingestion (re)starts or
  a commit's outcome is unknown (`rebuild`), and otherwise updates it after each successful
  commit;
- a read-only generation hydrates it by following the leader's output shard (`StateFollower`)
  and hands it to its own ingestion at promotion, after catching up to the shard's upper.

`UpsertState.diff` turns upstream records (key, row | None) into shard updates: within one
batch the last record per key wins, the old row is retracted at the same timestamp as the
new one is inserted, and a record equal to the current row is no change at all — so applying
an upsert twice never yields two rows for a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence

from twinstream.persist import Progress, ReadBeforeSince, Shard, Updates
from twinstream.persist.types import Diff, Row

log = logging.getLogger(__name__)

#: An upstream record: the key and the full output row, or None to delete the key.
Record = tuple[object, Row | None]
#: Attempts to snapshot the newest state while the leader keeps compacting under us.
_SNAPSHOT_RETRY_MAX = 100
#: Wait between looks at an output shard that has no data yet.
EMPTY_SHARD_POLL_S = 0.05


def _net(updates: Iterable[tuple[Row, Diff]]) -> list[tuple[Row, Diff]]:
    acc: dict[Row, Diff] = {}
    for row, d in updates:
        acc[row] = acc.get(row, 0) + d
    return [(row, d) for row, d in acc.items() if d != 0]


class UpsertState:
    """key -> the one row that holds it (the key is the row's first column)."""

    def __init__(self) -> None:
        self.rows: dict[object, Row] = {}

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[Row, Diff]]) -> UpsertState:
        state = cls()
        state.apply(rows)
        return state

    def apply(self, updates: Iterable[tuple[Row, Diff]]) -> None:
        """Apply committed updates (net over one or more whole timestamps): retractions
        first, then insertions. Asserts the invariant: one row per key, diffs of 1."""
        net = _net(updates)
        for row, d in net:
            if d < 0:
                assert d == -1 and self.rows.get(row[0]) == row, f"retracting absent row {row}"
                del self.rows[row[0]]
        for row, d in net:
            if d > 0:
                assert d == 1, f"upsert row {row} with diff {d}"
                assert row[0] not in self.rows, f"second row for key {row[0]!r}: {row}"
                self.rows[row[0]] = row

    def diff(self, records: Sequence[Record]) -> list[tuple[Row, Diff]]:
        """The updates that bring the state to the records (last one per key wins). Pure:
        the state changes only once the updates are committed (`apply`)."""
        latest: dict[object, Row | None] = {}
        for key, row in records:
            assert row is None or row[0] == key, f"row {row} does not carry key {key!r}"
            latest[key] = row
        out: list[tuple[Row, Diff]] = []
        for key, new in latest.items():
            old = self.rows.get(key)
            if old == new:
                continue
            if old is not None:
                out.append((old, -1))
            if new is not None:
                out.append((new, 1))
        return out


async def rebuild(shard: Shard) -> UpsertState:
    """The state as of the shard's newest time, read from persist (never a cache)."""
    for _ in range(_SNAPSHOT_RETRY_MAX):
        upper = await shard.upper()
        if upper == 0:
            return UpsertState()
        try:
            return UpsertState.from_rows(await shard.snapshot(upper - 1))
        except ReadBeforeSince:
            continue  # compacted past our as-of between the two reads: look again
    raise AssertionError(f"upsert {shard.shard_id}: could not snapshot the newest state")


class StateFollower:
    """A read-only generation's copy of an upsert state: snapshot, then the leader's appends
    (listen with a leased read hold). `frontier`: the state holds every update below it."""

    def __init__(self, shard: Shard) -> None:
        self.shard = shard
        self.state = UpsertState()
        self.frontier = 0
        self._progress = asyncio.Event()

    def _advance(self, frontier: int) -> None:
        assert frontier >= self.frontier, f"upsert follower frontier regressed: {frontier}"
        self.frontier = frontier
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    async def wait_frontier(self, at_least: int) -> None:
        while self.frontier < at_least:
            event = self._progress
            await event.wait()

    async def run(self) -> None:
        while await self.shard.upper() == 0:
            await asyncio.sleep(EMPTY_SHARD_POLL_S)
        while True:
            try:
                await self._follow(await self.shard.upper())
                return
            except ReadBeforeSince:
                log.info("upsert follower of %s restarting from a snapshot", self.shard.shard_id)

    async def _follow(self, upper: int) -> None:
        as_of = upper - 1
        reader_id = f"upsert-follower-{uuid.uuid4().hex[:12]}"
        hold = await self.shard.leased_reader(reader_id, as_of)
        try:
            if hold.since != as_of:
                raise ReadBeforeSince(f"upsert follower as_of {as_of} < since {hold.since}")
            rows = await self.shard.snapshot(as_of)
        except BaseException:
            with contextlib.suppress(Exception):
                await hold.expire()
            raise
        self.state = UpsertState.from_rows(rows)
        self._advance(upper)
        listen = self.shard.listen(as_of, reader_id=reader_id)
        try:
            async for event in listen:
                if isinstance(event, Updates):
                    self.state.apply((row, d) for row, _t, d in event.updates)
                elif isinstance(event, Progress):
                    self._advance(event.upper)
        finally:
            with contextlib.suppress(Exception):
                await listen.aclose()  # type: ignore[attr-defined]


async def take_over(follower: StateFollower, task: asyncio.Task[None]) -> UpsertState:
    """At promotion (nobody else writes any more): the follower's state once it reached the
    shard's upper, then the follower stops. A follower that died is replaced by a rebuild."""
    upper = await follower.shard.upper()
    waiter = asyncio.ensure_future(follower.wait_frontier(upper))
    try:
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
    if follower.frontier >= upper:
        log.info(
            "upsert state of %s handed over: %d keys at %d",
            follower.shard.shard_id,
            len(follower.state),
            follower.frontier,
        )
        return follower.state
    log.warning("upsert follower of %s ended early: rebuilding", follower.shard.shard_id)
    return await rebuild(follower.shard)


class UpsertWriter:
    """The leader's writer of an upsert collection fed by requests (webhooks). Requests are
    serialized (each diff is computed against the state the previous commit left). The state
    is rebuilt from the shard when missing: at first use, and after any failed commit, whose
    outcome may be unknown."""

    def __init__(self, shard: Shard, state: UpsertState | None = None) -> None:
        self.shard = shard
        self.state = state
        self._lock = asyncio.Lock()

    async def upsert(
        self, records: Sequence[Record], write: Callable[[list[tuple[Row, Diff]]], Awaitable[int]]
    ) -> list[tuple[Row, Diff]]:
        """Commit `records`; returns the updates written (none if nothing changed)."""
        async with self._lock:
            if self.state is None:
                self.state = await rebuild(self.shard)
            diffs = self.state.diff(records)
            if diffs:
                try:
                    await write(diffs)
                except BaseException:
                    self.state = None
                    raise
                self.state.apply(diffs)
            return diffs
