"""The leader's durable publication of compute frontiers (`mz_cluster_replica_frontiers`).

A builtin persist shard (`FRONTIERS_SHARD`) whose contents are the rows
`(object_id, replica_id, write_frontier)` the leader's replicas last reported; the leader
rewrites it every `PUBLISH_INTERVAL_S` with the *difference* from what the shard holds, at
timestamp `max(upper, now_ms)`. Another generation (a read-only one catching up, an operator's
tool) reads it with `read_published` — a snapshot at `upper - 1` — without talking to the
leader. Only the leader writes (a read-only generation would race it for nothing); two
writers would still be safe, each appending only against the upper it read.

Kept simple on purpose: the shard is rewritten, not a log of history, and readers take the
newest contents (history is compacted by persist as nobody holds an older since).
"""

from __future__ import annotations

import logging
from collections import Counter

from twinstream.clock import Clock
from twinstream.persist import PersistClient
from twinstream.persist.types import Row, Update

log = logging.getLogger(__name__)

FRONTIERS_SHARD = "builtin-mz_cluster_replica_frontiers"

#: How often the leader publishes (and both generations refresh their system tables).
PUBLISH_INTERVAL_S = 1.0


class FrontierPublisher:
    """Writes the desired rows into `FRONTIERS_SHARD` as differences (module docs)."""

    def __init__(self, persist: PersistClient, clock: Clock) -> None:
        self.shard = persist.open(FRONTIERS_SHARD)
        self.clock = clock
        self._contents: Counter[Row] | None = None  # what the shard holds below `_upper`
        self._upper = 0

    async def _load(self) -> None:
        self._upper = await self.shard.upper()
        rows = await self.shard.snapshot(self._upper - 1) if self._upper > 0 else []
        self._contents = Counter({r: d for r, d in rows if d})

    async def publish(self, rows: set[Row]) -> None:
        """Make the shard's newest contents exactly `rows`."""
        for _ in range(3):
            if self._contents is None:
                await self._load()
            assert self._contents is not None
            want = Counter(dict.fromkeys(rows, 1))
            diff = want.copy()
            diff.subtract(self._contents)
            t = max(self._upper, self.clock.now_ms())
            updates: list[Update] = [(r, t, d) for r, d in diff.items() if d]
            out = await self.shard.compare_and_append(updates, self._upper, t + 1)
            if out is None:
                self._contents = want
                self._upper = t + 1
                return
            self._contents = None  # someone else wrote: read what is there and retry
        log.warning("frontier publication kept losing races; will retry")


async def read_published(persist: PersistClient) -> list[tuple[str, str, int]]:
    """The newest published `(object_id, replica_id, write_frontier)` rows."""
    shard = persist.open(FRONTIERS_SHARD)
    upper = await shard.upper()
    if upper == 0:
        return []
    out: list[tuple[str, str, int]] = []
    for row, d in await shard.snapshot(upper - 1):
        for _ in range(d):
            object_id, replica_id, frontier = row
            out.append((str(object_id), str(replica_id), int(frontier)))  # type: ignore[call-overload]
    return sorted(out)
