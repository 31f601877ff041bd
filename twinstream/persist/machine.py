"""`Shard`: the retry loop around the pure transitions in `state.py`, and the read paths.

Write path: encode the batch (inline in state when small, else a blob written first), then
compare-and-set the new state version; a lost race re-reads the head and re-applies. Nothing
half-written is ever visible: a blob only becomes part of the shard when the CAS that names it
wins, and a losing writer deletes its blob.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from twinstream.aio import wait_event
from twinstream.clock import Clock
from twinstream.persist import codec, limits
from twinstream.persist import state as st
from twinstream.persist.errors import (
    BlobMissing,
    InvalidUpdateTime,
    InvalidUsage,
    LeaseExpired,
    OpaqueMismatch,
    ReadBeforeSince,
    ReadNotYetAvailable,
    UpperMismatch,
)
from twinstream.persist.location import Blob, CasOp, Consensus, VersionedData
from twinstream.persist.state import BatchPart, ShardState
from twinstream.persist.types import Diff, Row, Update, consolidate, consolidate_rows

log = logging.getLogger(__name__)

#: `_apply` logs a warning after this many lost compare-and-sets in a row (and every as many).
CAS_LOSSES_LOGGED_EVERY = 100

R = TypeVar("R")


@dataclass(frozen=True)
class Updates:
    """Listen event: updates with times in [previous progress, next progress)."""

    updates: list[Update]


@dataclass(frozen=True)
class Progress:
    """Listen event: every update at a time < `upper` has been delivered."""

    upper: int


ListenEvent = Updates | Progress


class Shard:
    """One shard as seen by one process: cached state plus the operations on it."""

    def __init__(
        self,
        shard_id: str,
        consensus: Consensus,
        blob: Blob,
        clock: Clock,
        *,
        writer_id: str | None = None,
        lease_ms: int = limits.LEASE_DEFAULT_MS,
    ) -> None:
        if not shard_id or "/" in shard_id:
            raise InvalidUsage(f"invalid shard id {shard_id!r}")
        self.shard_id = shard_id
        self.consensus = consensus
        self.blob = blob
        self.clock = clock
        self.writer_id = writer_id or f"w-{uuid.uuid4().hex[:12]}"
        self.lease_ms = lease_ms
        self._state: ShardState | None = None

    # -- state --------------------------------------------------------------------------------

    async def fetch_state(self) -> ShardState:
        """Read the head version from consensus (never older than what we saw before)."""
        head = await self.consensus.head(self.shard_id)
        if head is None:
            fresh = ShardState(self.shard_id)
        else:
            fresh = st.decode(head.data)
            assert fresh.seqno == head.seqno, f"shard {self.shard_id}: seqno mismatch in state"
            assert fresh.shard_id == self.shard_id, "state of another shard"
        known = self._state
        if known is not None and fresh.seqno < known.seqno:
            # Not a regression: this read started before a newer version we learned of
            # meanwhile (our own compare-and-set, or a concurrent fetch, completed while it was
            # in flight — seen on PostgreSQL consensus with pooled connections). Keep the newer.
            return known
        if known is not None:
            assert fresh.upper >= known.upper, "upper regressed"
        self._state = fresh
        return fresh

    async def upper(self) -> int:
        return (await self.fetch_state()).upper

    async def since(self) -> int:
        return (await self.fetch_state()).since

    def cached_upper(self) -> int | None:
        return None if self._state is None else self._state.upper

    async def _apply(self, transition: Callable[[ShardState], ShardState | R]) -> ShardState | R:
        """Apply a pure transition with compare-and-set; retry on lost races.

        A non-state outcome (e.g. UpperMismatch) from a cached state is re-checked against a
        freshly read head before it is returned; exceptions likewise.
        """
        cur = self._state
        fresh = cur is None
        if cur is None:
            cur = await self.fetch_state()
        lost = 0
        for _ in range(limits.CAS_RETRY_MAX):
            base = st.expire(cur, self.clock.now_ms())
            try:
                out = transition(base)
            except (OpaqueMismatch, LeaseExpired, InvalidUsage):
                if fresh:
                    raise
                cur, fresh = await self.fetch_state(), True
                continue
            if not isinstance(out, ShardState):
                if fresh:
                    return out
                cur, fresh = await self.fetch_state(), True
                continue
            if out is cur:
                if fresh:
                    return cur
                cur, fresh = await self.fetch_state(), True  # a stale cache hides work to do
                continue
            new = dataclasses.replace(out, seqno=cur.seqno + 1)
            expected = None if cur.seqno < 0 else cur.seqno
            ok = await self.consensus.compare_and_set(
                self.shard_id, expected, VersionedData(new.seqno, st.encode(new))
            )
            if ok:
                self._state = new
                await self._truncate_old_versions(new)
                return new
            cur, fresh = await self.fetch_state(), True
            lost += 1
            if lost % CAS_LOSSES_LOGGED_EVERY == 0:
                # Contention does not last this long: say what we expect and what we read.
                log.warning(
                    "shard %s: %d compare-and-sets lost in a row (expected seqno %s, now %d)",
                    self.shard_id,
                    lost,
                    expected,
                    cur.seqno,
                )
        raise AssertionError(f"shard {self.shard_id}: CAS retry limit exceeded")

    async def _truncate_old_versions(self, new: ShardState) -> None:
        if new.seqno > 0 and new.seqno % limits.CONSENSUS_VERSIONS_KEPT == 0:
            await self.consensus.truncate(self.shard_id, new.seqno - limits.CONSENSUS_VERSIONS_KEPT)

    async def _after_write(self, new: ShardState) -> None:
        """Housekeeping after a write that bypassed `_apply` (multi-shard appends)."""
        await self._truncate_old_versions(new)
        if len(new.batches) > limits.COMPACTION_BATCH_COUNT:
            await self.compact()

    # -- writes --------------------------------------------------------------------------------

    def _check_times(self, updates: Sequence[Update], expected_upper: int, new_upper: int) -> None:
        if new_upper < expected_upper:
            raise InvalidUsage(
                f"shard {self.shard_id}: new upper {new_upper} < expected upper {expected_upper}"
            )
        for row, t, _d in updates:
            if not (expected_upper <= t < new_upper):
                raise InvalidUpdateTime(
                    f"shard {self.shard_id}: update {row!r} at time {t} is outside "
                    f"[expected_upper {expected_upper}, new_upper {new_upper})"
                )

    async def _stage(self, updates: Sequence[Update]) -> BatchPart | None:
        """Encode a batch: inline when small and the state has room, else write a blob."""
        cons = consolidate(list(updates))
        if not cons:
            return None
        data = codec.encode_updates(cons)
        lower = min(t for _r, t, _d in cons)
        upper = max(t for _r, t, _d in cons) + 1
        part_id = f"{self.clock.now_ms():013d}-{uuid.uuid4().hex}"
        inline_used = 0 if self._state is None else self._state.inline_bytes()
        if (
            len(data) <= limits.INLINE_BATCH_MAX_BYTES
            and inline_used + len(data) <= limits.INLINE_TOTAL_MAX_BYTES
        ):
            return BatchPart(part_id, lower, upper, len(cons), data)
        part = BatchPart(part_id, lower, upper, len(cons), None)
        await self.blob.set(part.blob_key(self.shard_id), data)
        return part

    async def _unstage(self, part: BatchPart | None) -> None:
        if part is not None and part.inline is None:
            await self.blob.delete(part.blob_key(self.shard_id))

    def _append_transition(
        self, part: BatchPart | None, expected_upper: int, new_upper: int
    ) -> Callable[[ShardState], ShardState | UpperMismatch]:
        expires = self.clock.now_ms() + self.lease_ms
        return lambda s: st.append(s, part, expected_upper, new_upper, self.writer_id, expires)

    async def compare_and_append(
        self, updates: Sequence[Update], expected_upper: int, new_upper: int
    ) -> UpperMismatch | None:
        """Append `updates` and move the upper to `new_upper` iff the upper is `expected_upper`.

        Returns None on success, `UpperMismatch(actual)` when another writer got there first.
        """
        self._check_times(updates, expected_upper, new_upper)
        part = await self._stage(updates)
        # If _apply raises (indeterminate: the CAS may have landed) the blob must stay.
        out = await self._apply(self._append_transition(part, expected_upper, new_upper))
        if isinstance(out, UpperMismatch):
            await self._unstage(part)
            return out
        if len(out.batches) > limits.COMPACTION_BATCH_COUNT:
            await self.compact()
        return None

    async def append_at_upper(self, updates: Sequence[Update], new_upper: int) -> int:
        """Convenience for a single writer: append at the current upper; returns the new upper."""
        cur = self._state.upper if self._state is not None else await self.upper()
        while True:
            out = await self.compare_and_append(updates, cur, new_upper)
            if out is None:
                return new_upper
            raise InvalidUsage(str(out))

    # -- reads ---------------------------------------------------------------------------------

    async def _read_part(self, part: BatchPart) -> list[Update]:
        if part.inline is not None:
            return codec.decode_updates(part.inline)
        key = part.blob_key(self.shard_id)
        data = await self.blob.get(key)
        if data is None:
            raise _PartGone(key)
        try:
            return codec.decode_updates(data)
        except Exception as e:
            raise BlobMissing(f"shard {self.shard_id}: blob {key} does not decode: {e}") from e

    async def _read_parts(
        self, pick: Callable[[ShardState], list[BatchPart]], state: ShardState
    ) -> tuple[ShardState, list[Update]]:
        """Read the parts `pick` chooses; if compaction removed one under us, re-read state."""
        for _ in range(limits.BLOB_RACE_RETRY_MAX):
            try:
                out: list[Update] = []
                for part in pick(state):
                    out.extend(await self._read_part(part))
                return state, out
            except _PartGone as gone:
                newer = await self.fetch_state()
                if any(p.blob_key(self.shard_id) == gone.key for p in newer.batches):
                    raise BlobMissing(
                        f"shard {self.shard_id}: referenced blob {gone.key} is missing"
                    ) from None
                state = newer
        raise BlobMissing(f"shard {self.shard_id}: batches kept vanishing during a read")

    async def snapshot(self, as_of: int) -> list[tuple[Row, Diff]]:
        """Consolidated contents at `as_of`: times <= as_of, diffs summed, zeros dropped."""
        _state, ups = await self._read_as_of(as_of)
        return consolidate_rows([u for u in ups if u[1] <= as_of])

    async def _read_as_of(self, as_of: int) -> tuple[ShardState, list[Update]]:
        """The updates of every batch starting at or before `as_of` (a snapshot's reads),
        with the state they were read from; checks that `as_of` is readable."""
        state = await self.fetch_state()
        if as_of < state.since:
            raise ReadBeforeSince(
                f"shard {self.shard_id}: snapshot as_of {as_of} < since {state.since}"
            )
        if as_of >= state.upper:
            raise ReadNotYetAvailable(
                f"shard {self.shard_id}: snapshot as_of {as_of} >= upper {state.upper}"
            )
        read_state, ups = await self._read_parts(
            lambda s: [p for p in s.batches if p.lower <= as_of], state
        )
        if read_state.since > as_of:
            # Compaction deleted a batch under us and the newer state's since passed as_of:
            # the times we needed were merged away.
            raise ReadBeforeSince(
                f"shard {self.shard_id}: snapshot as_of {as_of} < since {read_state.since} "
                "(compacted during the read)"
            )
        return read_state, ups

    async def snapshot_and_updates(
        self, as_of: int
    ) -> tuple[list[tuple[Row, Diff]], list[Update], int]:
        """`snapshot(as_of)`, plus the updates at times in `(as_of, upper)` that the batches
        it reads hold anyway, and that `upper` (`as_of + 1` if none): continue with
        `listen(upper - 1)`. A compacted batch spanning the as-of is then decoded once, not
        by the snapshot and again by the listen's first read. Batches entirely after the
        as-of are left to the listen. (Batches never overlap in time, so every update in
        `(as_of, upper)` is in a batch starting at or before the as-of.)"""
        read_state, ups = await self._read_as_of(as_of)
        upper = max([as_of + 1] + [p.upper for p in read_state.batches if p.lower <= as_of])
        before = [u for u in ups if u[1] <= as_of]
        later = _in_times(ups, as_of + 1, upper)
        return consolidate_rows(before), later, upper

    async def snapshot_updates(self, as_of: int) -> list[Update]:
        """Like `snapshot` but every row at time `as_of` (the start of a subscribe)."""
        return [(row, as_of, d) for row, d in await self.snapshot(as_of)]

    async def listen(
        self,
        as_of: int,
        *,
        reader_id: str | None = None,
        skip_below: Callable[[], int] | None = None,
    ) -> AsyncIterator[ListenEvent]:
        """Updates at times > as_of, in time order, then progress; holds a leased read hold.

        `skip_below()`, if given, is a time below which the caller ignores updates anyway
        (a sink's own appends): batches entirely below it are not read; progress is the
        same. It must only grow."""
        reader = LeasedReadHandle(self, reader_id or f"listen-{uuid.uuid4().hex[:12]}")
        await reader.register(as_of)
        if reader.since != as_of:
            await reader.expire()
            raise ReadBeforeSince(
                f"shard {self.shard_id}: listen as_of {as_of} < since {reader.since}"
            )
        pos = as_of + 1
        heartbeat_s = self.lease_ms / 3000.0
        last_beat = self.clock.monotonic()
        try:
            while pos < limits.FRONTIER_EMPTY:
                event = self.consensus.feed.event(self.shard_id)
                state = await self.fetch_state()
                if state.since >= pos and reader.reader_id not in state.leased:
                    raise LeaseExpired(
                        f"shard {self.shard_id}: listen lost its read hold at {pos - 1}"
                    )
                if state.upper > pos:
                    lo, hi = pos, state.upper
                    # Batches ending at or below `skip` hold only times the caller ignores.
                    skip = lo if skip_below is None else max(lo, skip_below())
                    _, ups = await self._read_parts(
                        lambda s, skip=skip, hi=hi: [  # type: ignore[misc]
                            p for p in s.batches if p.upper > skip and p.lower < hi
                        ],
                        state,
                    )
                    batch = _in_times(ups, lo, hi)
                    if batch:
                        yield Updates(batch)
                    pos = hi
                    yield Progress(pos)
                    continue
                now = self.clock.monotonic()
                if now - last_beat >= heartbeat_s:
                    await reader.downgrade_since(pos - 1)
                    last_beat = now
                await wait_event(event, limits.LISTEN_POLL_FALLBACK_S)
        finally:
            with contextlib.suppress(Exception):
                await reader.expire()

    # -- compaction ----------------------------------------------------------------------------

    async def compact(self, *, full: bool = False) -> bool:
        """Merge a run of batches into one, advancing times below since to since.

        Tiered (like an LSM): the run is the newest batches, extended to the left while the
        next older batch is no more than twice the run's size, so old large batches are not
        rewritten on every compaction and the total cost stays O(n log n). `full` merges all.
        Any read at a time >= since sees the same contents afterwards. Returns True if this
        call replaced batches (False if another process changed them first).
        """
        state = await self.fetch_state()
        run = _compaction_run(state.batches, full=full)
        if len(run) <= 1:
            return False
        state, ups = await self._read_parts(lambda s: list(_compaction_run(s.batches, full)), state)
        run = _compaction_run(state.batches, full=full)
        since = state.since
        merged_updates = consolidate([(r, max(t, since), d) for r, t, d in ups])
        merged: BatchPart | None = None
        if merged_updates:
            data = codec.encode_updates(merged_updates)
            part_id = f"{self.clock.now_ms():013d}-{uuid.uuid4().hex}"
            merged = BatchPart(
                part_id,
                min(p.lower for p in run),
                max(max(p.upper for p in run), max(t for _r, t, _d in merged_updates) + 1),
                len(merged_updates),
                data if len(data) <= limits.INLINE_BATCH_MAX_BYTES else None,
            )
            if merged.inline is None:
                await self.blob.set(merged.blob_key(self.shard_id), data)
        out = await self._apply(lambda s: st.replace_run(s, run, merged))
        if not isinstance(out, ShardState) or (merged is not None and merged not in out.batches):
            await self._unstage(merged)
            return False
        for part in run:
            await self._unstage(part)
        return True

    async def gc_orphan_blobs(self, min_age_ms: int = 600_000) -> int:
        """Delete blobs of this shard that no state references (e.g. a writer crashed between
        writing its blob and its CAS). Young blobs are spared: they may be in flight."""
        state = await self.fetch_state()
        live = {p.blob_key(self.shard_id) for p in state.batches if p.inline is None}
        now = self.clock.now_ms()
        removed = 0
        for key in await self.blob.list_keys(f"{self.shard_id}/"):
            if key in live:
                continue
            stamp = key.split("/", 1)[1].split("-", 1)[0]
            if stamp.isdigit() and now - int(stamp) < min_age_ms:
                continue
            await self.blob.delete(key)
            removed += 1
        return removed

    # -- holds ---------------------------------------------------------------------------------

    async def transform(self, transition: Callable[[ShardState], ShardState]) -> ShardState:
        """Apply a pure state transition by compare-and-set (from the cached state; a lost
        race, or an OpaqueMismatch / LeaseExpired / InvalidUsage from a cached state, is
        retried from a fresh one)."""
        out = await self._apply(transition)
        assert isinstance(out, ShardState)
        return out

    async def leased_reader(self, reader_id: str, since: int) -> LeasedReadHandle:
        handle = LeasedReadHandle(self, reader_id)
        await handle.register(since)
        return handle

    async def critical_reader(self, reader_id: str, opaque: Any) -> CriticalReadHandle:
        """Register (or look up) a critical reader; `opaque` is only the initial token."""
        out = await self._apply(lambda s: st.register_critical(s, reader_id, opaque))
        assert isinstance(out, ShardState)
        return CriticalReadHandle(self, reader_id)

    async def maintenance(self) -> ShardState:
        """Write a version if leases expired (so since moves even when nobody writes)."""
        await self.fetch_state()  # a no-op on a stale cached state would skip the expiry
        out = await self._apply(lambda s: s)
        assert isinstance(out, ShardState)
        return out


def _in_times(ups: list[Update], lo: int, hi: int) -> list[Update]:
    """The updates at times in `[lo, hi)` of batches read in state order: consolidated and in
    time order without another pass, because every batch is consolidated and sorted by time
    when written (`_stage`, `compact`) and batches never overlap in time."""
    return [u for u in ups if lo <= u[1] < hi]


def _compaction_run(batches: tuple[BatchPart, ...], full: bool) -> tuple[BatchPart, ...]:
    """The contiguous newest run of batches to merge next (see `Shard.compact`)."""
    if full or len(batches) <= 2:
        return batches
    start = len(batches) - 2
    size = batches[-1].count + batches[-2].count
    while start > 0 and batches[start - 1].count <= 2 * size:
        start -= 1
        size += batches[start].count
    return batches[start:]


class _PartGone(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class LeasedReadHandle:
    """A read hold that lapses unless heartbeated (what a read-only generation uses)."""

    def __init__(self, shard: Shard, reader_id: str) -> None:
        self.shard = shard
        self.reader_id = reader_id
        self.since = -1

    def _expires(self) -> int:
        return self.shard.clock.now_ms() + self.shard.lease_ms

    async def register(self, since: int) -> None:
        out = await self.shard._apply(
            lambda s: st.register_leased(s, self.reader_id, since, self._expires())
        )
        assert isinstance(out, ShardState)
        self.since = out.leased[self.reader_id].since

    async def heartbeat(self) -> None:
        out = await self.shard._apply(
            lambda s: st.heartbeat_leased(s, self.reader_id, self._expires())
        )
        assert isinstance(out, ShardState)

    async def downgrade_since(self, since: int) -> None:
        out = await self.shard._apply(
            lambda s: st.downgrade_leased(s, self.reader_id, since, self._expires())
        )
        assert isinstance(out, ShardState)
        self.since = out.leased[self.reader_id].since

    async def expire(self) -> None:
        await self.shard._apply(lambda s: st.release_leased(s, self.reader_id))


class CriticalReadHandle:
    """A read hold that never lapses; moving it requires the current opaque token, so a newer
    controller (higher epoch) fences an older one out of moving it."""

    def __init__(self, shard: Shard, reader_id: str) -> None:
        self.shard = shard
        self.reader_id = reader_id

    async def opaque(self) -> Any:
        state = await self.shard.fetch_state()
        return state.critical[self.reader_id].opaque

    async def since(self) -> int:
        state = await self.shard.fetch_state()
        return state.critical[self.reader_id].since

    async def compare_and_downgrade_since(
        self, expected_opaque: Any, new_opaque: Any, new_since: int
    ) -> int:
        """Raises OpaqueMismatch if someone else owns the hold now; returns the hold."""
        out = await self.shard._apply(
            lambda s: st.compare_and_downgrade_critical(
                s, self.reader_id, expected_opaque, new_opaque, new_since
            )
        )
        assert isinstance(out, ShardState)
        return out.critical[self.reader_id].since


@dataclass(frozen=True)
class ExtraMismatch:
    """compare_and_append_many lost because one of the caller's extra consensus legs was
    stale (its key moved); the shards were not touched."""

    keys: tuple[str, ...]


async def compare_and_append_many(
    writes: Sequence[tuple[Shard, Sequence[Update], int, int]],
    *,
    extra: Sequence[CasOp] = (),
) -> dict[str, UpperMismatch] | ExtraMismatch | None:
    """Atomic append to several shards (one consensus transaction): all or none.

    `extra` are further compare-and-set legs on other consensus keys (the timestamp oracle)
    that commit in the same transaction. Returns None on success, else the mismatches (keyed
    by shard id) that stopped it, or `ExtraMismatch` if an extra leg was stale.
    """
    ids = [w[0].shard_id for w in writes]
    if len(set(ids)) != len(ids):
        raise InvalidUsage(f"compare_and_append_many: shard listed twice in {ids}")
    if not writes:
        return None
    consensus = writes[0][0].consensus
    for shard, updates, expected, new_upper in writes:
        if shard.consensus is not consensus:
            raise InvalidUsage("compare_and_append_many: shards on different consensus stores")
        shard._check_times(updates, expected, new_upper)
    parts = [await shard._stage(updates) for shard, updates, _e, _n in writes]
    fresh = False
    for _ in range(limits.CAS_RETRY_MAX):
        states = []
        for shard, *_ in writes:
            states.append(
                await shard.fetch_state() if fresh or shard._state is None else shard._state
            )
        ops: list[CasOp] = []
        news: list[ShardState] = []
        mismatches: dict[str, UpperMismatch] = {}
        for (shard, _u, expected, new_upper), part, cur in zip(writes, parts, states, strict=True):
            base = st.expire(cur, shard.clock.now_ms())
            out = shard._append_transition(part, expected, new_upper)(base)
            if isinstance(out, UpperMismatch):
                mismatches[shard.shard_id] = out
                continue
            new = dataclasses.replace(out, seqno=cur.seqno + 1)
            news.append(new)
            ops.append(
                (
                    shard.shard_id,
                    None if cur.seqno < 0 else cur.seqno,
                    VersionedData(new.seqno, st.encode(new)),
                )
            )
        if mismatches:
            if fresh:
                for (shard, *_), part in zip(writes, parts, strict=True):
                    await shard._unstage(part)
                return mismatches
            fresh = True
            continue
        if await consensus.compare_and_set_many([*ops, *extra]):
            for (shard, *_), new in zip(writes, news, strict=True):
                shard._state = new
            for (shard, *_), new in zip(writes, news, strict=True):
                await shard._after_write(new)
            return None
        stale = []
        for key, leg_expected, _new in extra:
            head = await consensus.head(key)
            if (None if head is None else head.seqno) != leg_expected:
                stale.append(key)
        if stale:
            for (shard, *_), part in zip(writes, parts, strict=True):
                await shard._unstage(part)
            return ExtraMismatch(tuple(stale))
        fresh = True
    raise AssertionError("compare_and_append_many: CAS retry limit exceeded")


async def compare_and_transform_many(
    changes: Sequence[tuple[Shard, Callable[[ShardState], ShardState]]],
    *,
    extra: Sequence[CasOp] = (),
) -> dict[str, ShardState] | ExtraMismatch:
    """Apply a pure state transition to each shard in ONE consensus transaction (all or
    none), together with the caller's `extra` compare-and-set legs.

    Transitions start from the cached states (one transaction in the common case); a lost race
    re-reads the shards and retries; a transition that raises from a cached state is retried
    from a fresh one, from a fresh one the error propagates. Returns the new state of every
    shard (keyed by id: their uppers as of this transaction), or `ExtraMismatch` if an extra
    leg was stale (no shard was touched). Used by promotion: every table's critical hold is
    taken over in the transaction that claims the timestamp oracle, so after it no older
    leader can append and the returned uppers are final.
    """
    ids = [shard.shard_id for shard, _t in changes]
    if len(set(ids)) != len(ids):
        raise InvalidUsage(f"compare_and_transform_many: shard listed twice in {ids}")
    if not changes:
        if extra:
            raise InvalidUsage("compare_and_transform_many: extra legs need at least one shard")
        return {}
    consensus = changes[0][0].consensus
    for shard, _t in changes:
        if shard.consensus is not consensus:
            raise InvalidUsage("compare_and_transform_many: shards on different consensus stores")
    fresh = False
    for _ in range(limits.CAS_RETRY_MAX):
        ops: list[CasOp] = []
        news: list[tuple[Shard, ShardState]] = []
        if fresh or any(shard._state is None for shard, _t in changes):
            await asyncio.gather(*(shard.fetch_state() for shard, _t in changes))
        try:
            for shard, transition in changes:
                cur = shard._state
                assert cur is not None, f"shard {shard.shard_id}: no state after a fetch"
                out = transition(st.expire(cur, shard.clock.now_ms()))
                new = dataclasses.replace(out, seqno=cur.seqno + 1)
                news.append((shard, new))
                expected = None if cur.seqno < 0 else cur.seqno
                ops.append((shard.shard_id, expected, VersionedData(new.seqno, st.encode(new))))
        except (OpaqueMismatch, LeaseExpired, InvalidUsage):
            if fresh:
                raise
            fresh = True
            continue
        if await consensus.compare_and_set_many([*ops, *extra]):
            for shard, new in news:
                shard._state = new
            for shard, new in news:
                await shard._truncate_old_versions(new)
            return {shard.shard_id: new for shard, new in news}
        stale = []
        for key, leg_expected, _new in extra:
            head = await consensus.head(key)
            if (None if head is None else head.seqno) != leg_expected:
                stale.append(key)
        if stale:
            return ExtraMismatch(tuple(stale))
        fresh = True
    raise AssertionError("compare_and_transform_many: CAS retry limit exceeded")
