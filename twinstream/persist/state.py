"""Shard state and its pure transitions.

Every function here takes a `ShardState` and returns a new one (or an outcome saying why not);
none does I/O. `machine.py` runs them in a compare-and-set retry loop against consensus, so the
only way a shard changes is: read head seqno N, apply a transition, write N + 1 if still N.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from twinstream.persist import codec
from twinstream.persist.errors import (
    InvalidUsage,
    LeaseExpired,
    OpaqueMismatch,
    UpperMismatch,
)


@dataclass(frozen=True)
class BatchPart:
    """Updates with times in [lower, upper); inline bytes or a blob at `<shard>/<id>`."""

    id: str
    lower: int
    upper: int
    count: int
    inline: bytes | None = None

    def blob_key(self, shard_id: str) -> str:
        return f"{shard_id}/{self.id}"


@dataclass(frozen=True)
class LeasedReader:
    """A read hold that disappears at `expires_ms` unless heartbeated."""

    since: int
    expires_ms: int


@dataclass(frozen=True)
class CriticalReader:
    """A read hold that never expires; moved only by whoever knows the current opaque token."""

    since: int
    opaque: Any


@dataclass(frozen=True)
class ShardState:
    """One version of a shard; `seqno` -1 means "never written" (no consensus entry yet)."""

    shard_id: str
    seqno: int = -1
    upper: int = 0
    since: int = 0
    batches: tuple[BatchPart, ...] = ()
    writers: dict[str, int] = field(default_factory=dict)
    leased: dict[str, LeasedReader] = field(default_factory=dict)
    critical: dict[str, CriticalReader] = field(default_factory=dict)

    def inline_bytes(self) -> int:
        return sum(len(b.inline) for b in self.batches if b.inline is not None)

    def holds(self) -> list[int]:
        return [r.since for r in self.leased.values()] + [r.since for r in self.critical.values()]


def _with_since(state: ShardState) -> ShardState:
    """since = min of the read holds; it never goes backwards. A hold beyond the upper moves
    since past the upper too: reads there are not possible yet anyway."""
    holds = state.holds()
    if not holds:
        return state
    since = max(state.since, min(holds))
    assert since >= state.since, "since regressed"
    return dataclasses.replace(state, since=since)


def expire(state: ShardState, now_ms: int) -> ShardState:
    """Drop leases (readers and writers) whose time ran out, releasing their holds."""
    leased = {k: r for k, r in state.leased.items() if r.expires_ms > now_ms}
    writers = {k: e for k, e in state.writers.items() if e > now_ms}
    if len(leased) == len(state.leased) and len(writers) == len(state.writers):
        return state
    return _with_since(dataclasses.replace(state, leased=leased, writers=writers))


def append(
    state: ShardState,
    part: BatchPart | None,
    expected_upper: int,
    new_upper: int,
    writer_id: str,
    writer_expires_ms: int,
) -> ShardState | UpperMismatch:
    """Add a batch and move the upper, if the upper is still `expected_upper`."""
    if new_upper < expected_upper:
        raise InvalidUsage(
            f"shard {state.shard_id}: new upper {new_upper} < expected upper {expected_upper}"
        )
    if state.upper != expected_upper:
        return UpperMismatch(state.shard_id, expected_upper, state.upper)
    batches = state.batches
    if part is not None and part.count > 0:
        assert expected_upper <= part.lower and part.upper <= new_upper, "part outside append"
        batches = (*batches, part)
    writers = dict(state.writers)
    writers[writer_id] = writer_expires_ms
    return dataclasses.replace(state, upper=new_upper, batches=batches, writers=writers)


def register_leased(state: ShardState, reader_id: str, since: int, expires_ms: int) -> ShardState:
    """Add a leased read hold at max(since, shard since)."""
    hold = max(since, state.since)
    leased = dict(state.leased)
    leased[reader_id] = LeasedReader(hold, expires_ms)
    return _with_since(dataclasses.replace(state, leased=leased))


def heartbeat_leased(state: ShardState, reader_id: str, expires_ms: int) -> ShardState:
    reader = state.leased.get(reader_id)
    if reader is None:
        raise LeaseExpired(f"shard {state.shard_id}: leased reader {reader_id} has expired")
    leased = dict(state.leased)
    leased[reader_id] = LeasedReader(reader.since, max(expires_ms, reader.expires_ms))
    return dataclasses.replace(state, leased=leased)


def downgrade_leased(
    state: ShardState, reader_id: str, new_since: int, expires_ms: int
) -> ShardState:
    """Move a leased hold forward (never back); also renews the lease."""
    reader = state.leased.get(reader_id)
    if reader is None:
        raise LeaseExpired(f"shard {state.shard_id}: leased reader {reader_id} has expired")
    leased = dict(state.leased)
    leased[reader_id] = LeasedReader(max(reader.since, new_since), expires_ms)
    return _with_since(dataclasses.replace(state, leased=leased))


def release_leased(state: ShardState, reader_id: str) -> ShardState:
    if reader_id not in state.leased:
        return state
    leased = {k: r for k, r in state.leased.items() if k != reader_id}
    return _with_since(dataclasses.replace(state, leased=leased))


def register_critical(state: ShardState, reader_id: str, opaque: Any) -> ShardState:
    """Create a critical hold at the shard's since; an existing one is left as it is."""
    if reader_id in state.critical:
        return state
    critical = dict(state.critical)
    critical[reader_id] = CriticalReader(state.since, opaque)
    return dataclasses.replace(state, critical=critical)


def compare_and_downgrade_critical(
    state: ShardState, reader_id: str, expected_opaque: Any, new_opaque: Any, new_since: int
) -> ShardState:
    """Move a critical hold (forward only) and swap its opaque, if the opaque is as expected."""
    reader = state.critical.get(reader_id)
    if reader is None:
        raise InvalidUsage(f"shard {state.shard_id}: no critical reader {reader_id}")
    if reader.opaque != expected_opaque:
        raise OpaqueMismatch(state.shard_id, reader_id, expected_opaque, reader.opaque)
    critical = dict(state.critical)
    critical[reader_id] = CriticalReader(max(reader.since, new_since), new_opaque)
    return _with_since(dataclasses.replace(state, critical=critical))


def replace_run(
    state: ShardState, run: tuple[BatchPart, ...], merged: BatchPart | None
) -> ShardState | None:
    """Swap a contiguous run of batches for one merged batch; None if the run is gone."""
    n = len(run)
    assert n > 0, "empty compaction run"
    for i in range(len(state.batches) - n + 1):
        if state.batches[i : i + n] == run:
            keep = (merged,) if merged is not None and merged.count > 0 else ()
            batches = state.batches[:i] + keep + state.batches[i + n :]
            return dataclasses.replace(state, batches=batches)
    return None


# --- encoding -------------------------------------------------------------------------------

_STATE_VERSION = 1


def encode(state: ShardState) -> bytes:
    return codec.pack(
        {
            "v": _STATE_VERSION,
            "shard": state.shard_id,
            "seqno": state.seqno,
            "upper": state.upper,
            "since": state.since,
            "batches": [[b.id, b.lower, b.upper, b.count, b.inline] for b in state.batches],
            "writers": state.writers,
            "leased": {k: [r.since, r.expires_ms] for k, r in state.leased.items()},
            "critical": {k: [r.since, r.opaque] for k, r in state.critical.items()},
        }
    )


def decode(data: bytes) -> ShardState:
    raw = codec.unpack(data)
    if raw.get("v") != _STATE_VERSION:
        raise InvalidUsage(f"shard state version {raw.get('v')!r} is not understood by this binary")
    return ShardState(
        shard_id=raw["shard"],
        seqno=raw["seqno"],
        upper=raw["upper"],
        since=raw["since"],
        batches=tuple(BatchPart(i, lo, up, n, inl) for i, lo, up, n, inl in raw["batches"]),
        writers=dict(raw["writers"]),
        leased={k: LeasedReader(s, e) for k, (s, e) in raw["leased"].items()},
        critical={k: CriticalReader(s, o) for k, (s, o) in raw["critical"].items()},
    )
