"""Reclocking: a source's progress (remap) collection binds upstream offsets to timestamps.

The progress shard holds exactly one row `(offset,)` at any time t once the source has
ingested anything: every upstream record with offset < `offset` is in the output shards at a
time <= t, and none at or after it. The ingestion moves it with the data in one atomic append
(retract the old binding, insert the new one), so data and binding can never disagree, and a
restarted or newly promoted ingestion continues exactly at the durable offset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twinstream.persist import ReadBeforeSince, Shard
from twinstream.persist.types import Diff, Row

#: The progress subsource's columns (Materialize: `<source>_progress (offset)`).
PROGRESS_COLUMNS: list[dict[str, Any]] = [{"name": "offset", "type": "int8", "nullable": False}]

#: Attempts to snapshot the newest binding while the leader keeps compacting under us.
_SNAPSHOT_RETRY_MAX = 100


@dataclass(frozen=True)
class Binding:
    """The durable upstream position: `offset` is the next upstream record to ingest;
    `written` is False while the source has never committed anything."""

    offset: int
    written: bool


async def durable_binding(shard: Shard) -> Binding:
    """The newest durable binding, read from persist itself (never from a cache)."""
    for _ in range(_SNAPSHOT_RETRY_MAX):
        upper = await shard.upper()
        if upper == 0:
            return Binding(0, False)
        try:
            rows = await shard.snapshot(upper - 1)
        except ReadBeforeSince:
            continue  # compacted past our as-of between the two reads: look again
        assert all(d == 1 for _r, d in rows), f"progress {shard.shard_id}: bad diffs {rows}"
        assert len(rows) <= 1, f"progress {shard.shard_id}: {len(rows)} bindings"
        if not rows:
            return Binding(0, False)
        offset = rows[0][0][0]
        assert isinstance(offset, int) and offset >= 0, f"bad offset {offset!r}"
        return Binding(offset, True)
    raise AssertionError(f"progress {shard.shard_id}: could not snapshot the newest binding")


def advance(old: Binding, new_offset: int) -> list[tuple[Row, Diff]]:
    """The progress updates that move the binding from `old` to `new_offset`."""
    assert new_offset > old.offset, f"offsets only move forward: {old.offset} -> {new_offset}"
    out: list[tuple[Row, Diff]] = [((new_offset,), 1)]
    if old.written:
        out.append(((old.offset,), -1))
    return out
