"""A read-only generation's view of a table: snapshot it into the engine's mirror, then follow
the leader's appends with a listen (which holds a *leased* read hold, heartbeated; it lapses
if this process dies, so an abandoned upgrade never blocks compaction).

`frontier` is this follower's write frontier W: the mirror holds every update below it. The
caught-up check compares it with the shard's upper L, the frontier the leader publishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from typing import Protocol

from twinstream.persist import Progress, ReadBeforeSince, Shard, Updates
from twinstream.persist.types import Diff, Row

log = logging.getLogger(__name__)

#: Wait between looks at a table that has no data yet (upper 0: nothing to snapshot).
EMPTY_TABLE_POLL_S = 0.05


class MirrorTarget(Protocol):
    """Where a follower puts what it reads: the query engine (`QueryEngine`), or a small
    in-memory collection (a view's errors, `adapter/view_errors.py`)."""

    def replace_contents(self, table: str, ncols: int, rows: Sequence[tuple[Row, Diff]]) -> None:
        """Make the mirror exactly `rows` (a snapshot)."""

    def apply(self, table: str, ncols: int, updates: Sequence[tuple[Row, Diff]]) -> None:
        """Apply consolidated changes."""


class TableFollower:
    def __init__(self, engine: MirrorTarget, shard: Shard, table_fqn: str, ncols: int) -> None:
        self.engine = engine
        self.shard = shard
        self.table_fqn = table_fqn
        self.ncols = ncols
        self.frontier = 0
        self.hydrated = asyncio.Event()
        self._progress = asyncio.Event()
        #: Set by `stop()` (promotion): from then on nothing is applied to the mirror, even if
        #: the task goes on running (its cancellation is not relied upon; see `stop`).
        self.stopped = False

    def stop(self) -> None:
        """Never touch the mirror again. Promotion calls it before cancelling the task: a
        cancelled follower was seen to keep running its listen (the promotion, waiting for
        it, stalled for good: postgres/repeat-20 seed 601, generation 16), and once this
        generation commits, anything a follower still applied would count a write twice."""
        self.stopped = True

    def _halted(self) -> bool:
        """`stopped`, read afresh (it changes while this task awaits)."""
        return self.stopped

    async def wait_frontier(self, at_least: int) -> None:
        while self.frontier < at_least:
            event = self._progress
            await event.wait()

    def _advance(self, frontier: int) -> None:
        assert frontier >= self.frontier, f"follower frontier regressed: {frontier}"
        self.frontier = frontier
        self.hydrated.set()
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    async def run(self) -> None:
        try:
            await self._run()
        except Exception as e:
            if not self.stopped:
                raise
            # A stopped follower's errors must not take the (now leading) coordinator down.
            log.info("follower of %s ended after stop: %s: %s", self.table_fqn, type(e).__name__, e)

    async def _run(self) -> None:
        while True:
            upper = await self.shard.upper()
            if upper > 0:
                break
            await asyncio.sleep(EMPTY_TABLE_POLL_S)
        while True:
            try:
                await self._follow(upper)
                return
            except ReadBeforeSince:
                # The leader compacted past our position before the listen took its hold:
                # start over from a fresh snapshot (the mirror is rebuilt, not patched).
                upper = await self.shard.upper()
                log.info("follower of %s restarting from a snapshot", self.table_fqn)

    async def _follow(self, upper: int) -> None:
        as_of = upper - 1
        # Hold as_of from before the snapshot, and hand the same hold to the listen: the leader
        # moves the since every second, and snapshotting a large table takes longer, so a hold
        # taken only by the listen would come too late and the follower would restart forever.
        reader_id = f"follower-{uuid.uuid4().hex[:12]}"
        hold = await self.shard.leased_reader(reader_id, as_of)
        try:
            if hold.since != as_of:
                raise ReadBeforeSince(f"follower as_of {as_of} < since {hold.since}")
            rows = await self.shard.snapshot(as_of)
        except BaseException:
            with contextlib.suppress(Exception):
                await hold.expire()
            raise
        if self._halted():
            with contextlib.suppress(Exception):
                await hold.expire()
            return
        self.engine.replace_contents(self.table_fqn, self.ncols, rows)
        self._advance(upper)
        listen = self.shard.listen(as_of, reader_id=reader_id)
        try:
            async for event in listen:
                if self._halted():
                    return
                if isinstance(event, Updates):
                    net: dict[Row, Diff] = {}
                    for row, _t, d in event.updates:
                        net[row] = net.get(row, 0) + d
                    self.engine.apply(
                        self.table_fqn, self.ncols, [(r, d) for r, d in net.items() if d]
                    )
                elif isinstance(event, Progress):
                    self._advance(event.upper)
        finally:
            with contextlib.suppress(Exception):
                await listen.aclose()  # type: ignore[attr-defined]
