"""`LocalReplica`: one cluster replica in this process (what a `clusterd` process runs).

It hosts one `DataflowRunner` per collection (`twinstream.controller.protocol.DataflowDesc`)
and implements the controller's `Replica` protocol:

- A materialized view's runner writes its output shard through the self-correcting sink
  (nothing while the replica is read-only; `allow_writes` flips every sink in place).
- A collection with an `index_key` is also applied to an `Arrangement` kept here, from which
  `peek` answers at an exact time and `subscribe` replays. A read hold at the collection's
  `since` (moved by `allow_compaction`) keeps the deltas needed to read older times.
- The collection's evaluation errors (`OutputBatch.errors`) are kept beside the arrangement
  (a small log, times at or below the since folded together), so a subscriber that joins
  after hydration replays them with the rows: errors are rare, but a SUBSCRIBE must not lose
  one (`adapter/subscribe_compute.py` ends the subscription with it).
- A failed runner (e.g. its lease lapsed while the process was stalled) is recorded in
  `status().failures` and rebuilt after `RESTART_BACKOFF_S`; the new runner resumes from the
  output shard's upper without duplicating (the sink corrects against what is there).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from twinstream.compute.dataflow.arrangement import Arrangement, ReadHold
from twinstream.compute.runtime import DataflowRunner, OutputBatch
from twinstream.controller.protocol import (
    CollectionFrontier,
    DataflowDesc,
    PeekError,
    ReplicaStatus,
)
from twinstream.persist import PersistClient
from twinstream.persist.types import Diff, Row, Update, consolidate

log = logging.getLogger(__name__)

#: Pause before rebuilding a dataflow whose runner failed (avoids a hot failure loop).
RESTART_BACKOFF_S = 1.0


@dataclass
class _Collection:
    """One maintained dataflow: its runner (rebuilt on failure) and optional arrangement."""

    desc: DataflowDesc
    runner: DataflowRunner
    arrangement: Arrangement | None = None
    hold: ReadHold | None = None
    subscribers: set[asyncio.Queue[OutputBatch | None]] = field(default_factory=set)
    #: The error updates of the arranged collection, consolidated (see the module docs).
    errors: list[Update] = field(default_factory=list)
    progress: asyncio.Event = field(default_factory=asyncio.Event)
    supervisor: asyncio.Task[None] | None = None
    failure: str | None = None
    dropped: bool = False

    def on_batch(self, batch: OutputBatch) -> None:
        arr = self.arrangement
        if arr is not None:
            if arr.upper == 0 and self.hold is None:
                # The first batch (hydration): hold its time so peeks/subscribes can read it;
                # nothing before it is readable (its updates are the contents at its time).
                self.hold = arr.reader(batch.lower)
                arr.since = batch.lower
            by_time: dict[int, list[Update]] = {}
            for u in batch.updates:
                by_time.setdefault(u[1], []).append(u)
            for t in sorted(by_time):
                if t >= arr.upper:
                    arr.apply(t, by_time[t])
            arr.advance_upper(max(arr.upper, batch.upper))
            if batch.errors:
                since = arr.since
                folded = [(tuple(e), max(t, since), d) for e, t, d in [*self.errors, *batch.errors]]
                self.errors = consolidate(folded)
        for q in self.subscribers:
            q.put_nowait(batch)
        event, self.progress = self.progress, asyncio.Event()
        event.set()


class LocalReplica:
    """An in-process replica over `client` (see the module docstring)."""

    def __init__(self, client: PersistClient, name: str, *, read_only: bool = False) -> None:
        self.client = client
        self.name = name
        self._read_only = read_only
        self._collections: dict[str, _Collection] = {}
        self.builds = 0

    # -- commands ------------------------------------------------------------------------------

    async def create_dataflow(self, desc: DataflowDesc) -> None:
        have = self._collections.get(desc.id)
        if have is not None:
            if have.desc == desc:
                return
            await self.drop_dataflow(desc.id)
        coll = _Collection(desc, self._runner(desc, None))
        if desc.index_key is not None:
            coll.arrangement = Arrangement(desc.index_key, name=desc.id)
        self._collections[desc.id] = coll
        coll.supervisor = asyncio.create_task(self._supervise(coll), name=f"{self.name}:{desc.id}")

    async def drop_dataflow(self, id: str) -> None:
        coll = self._collections.pop(id, None)
        if coll is None:
            return
        coll.dropped = True
        if coll.supervisor is not None:
            coll.supervisor.cancel()
            try:
                await coll.supervisor
            except asyncio.CancelledError:
                if (cur := asyncio.current_task()) is not None and cur.cancelling():
                    raise
        for q in coll.subscribers:
            q.put_nowait(None)
        coll.progress.set()

    async def allow_writes(self) -> None:
        self._read_only = False
        for coll in self._collections.values():
            coll.runner.allow_writes()

    async def allow_compaction(self, id: str, since: int) -> None:
        coll = self._collections.get(id)
        if coll is not None and coll.hold is not None:
            coll.hold.advance(since)

    async def peek(
        self, id: str, timestamp: int, key: tuple[object, ...] | None = None
    ) -> list[tuple[Row, Diff]]:
        coll = self._arranged(id)
        arr = coll.arrangement
        assert arr is not None
        while arr.upper <= timestamp:
            if coll.dropped:
                raise PeekError("unknown", f"dataflow {id} was dropped")
            await coll.progress.wait()
        if timestamp < arr.since or coll.hold is None:
            raise PeekError("compacted", f"{id}: cannot read at {timestamp} (since {arr.since})")
        if key is None:
            return arr.snapshot(timestamp)
        k = key[0] if len(key) == 1 else key
        bucket = arr.lookup(timestamp)(k)
        return list(bucket.items()) if bucket else []

    def subscribe(self, id: str) -> AsyncIterator[OutputBatch]:
        return self._subscribe(id)

    async def _subscribe(self, id: str) -> AsyncIterator[OutputBatch]:
        coll = self._arranged(id)
        arr = coll.arrangement
        assert arr is not None
        queue: asyncio.Queue[OutputBatch | None] = asyncio.Queue()
        coll.subscribers.add(queue)
        try:
            if arr.upper > 0 and coll.hold is not None:
                # Catch up from what the arrangement holds: contents at its since, then the
                # logged deltas; later batches arrive through the queue.
                t = max(arr.since, coll.hold.position)
                rows = arr.snapshot(t)
                errors = consolidate([(e, t, d) for e, et, d in coll.errors if et <= t])
                yield OutputBatch(t, t + 1, [(r, t, d) for r, d in rows], errors)
                if arr.upper > t + 1:
                    deltas = [u for _, b in arr.deltas(t + 1, arr.upper) for u in b]
                    later = [u for u in coll.errors if t < u[1] < arr.upper]
                    yield OutputBatch(t + 1, arr.upper, deltas, later)
            seen = arr.upper
            while True:
                batch = await queue.get()
                if batch is None:
                    return
                if batch.upper <= seen:
                    continue
                seen = batch.upper
                yield batch
        finally:
            coll.subscribers.discard(queue)

    async def frontiers(self) -> dict[str, CollectionFrontier]:
        return {
            id: CollectionFrontier(
                coll.runner.write_frontier, coll.runner.hydrated.is_set(), coll.runner.as_of
            )
            for id, coll in self._collections.items()
        }

    async def frontier(self, id: str) -> CollectionFrontier | None:
        coll = self._collections.get(id)
        if coll is None:
            return None
        runner = coll.runner
        return CollectionFrontier(runner.write_frontier, runner.hydrated.is_set(), runner.as_of)

    async def status(self) -> ReplicaStatus:
        return ReplicaStatus(
            name=self.name,
            read_only=self._read_only,
            dataflows=tuple(sorted(self._collections)),
            failures={i: c.failure for i, c in self._collections.items() if c.failure},
            builds=self.builds,
        )

    async def close(self) -> None:
        """Drop every dataflow (the replica process ends)."""
        for id in list(self._collections):
            await self.drop_dataflow(id)

    # -- internals -----------------------------------------------------------------------------

    def _arranged(self, id: str) -> _Collection:
        coll = self._collections.get(id)
        if coll is None:
            raise PeekError("unknown", f"no dataflow {id} on replica {self.name}")
        if coll.arrangement is None:
            raise PeekError("not_arranged", f"dataflow {id} keeps no arrangement to read")
        return coll

    def _runner(self, desc: DataflowDesc, as_of: int | None) -> DataflowRunner:
        self.builds += 1
        return DataflowRunner(
            self.client,
            desc.plan,
            desc.inputs,
            desc.output_shard,
            desc.as_of if as_of is None else as_of,
            read_only=self._read_only,
            name=f"{self.name}-{desc.id}",
            errors_shard_id=desc.errors_shard,
        )

    async def _supervise(self, coll: _Collection) -> None:
        """Run the collection's runner; rebuild it after a failure (resuming where the
        arrangement, if any, stopped)."""
        while True:
            runner = coll.runner
            runner.on_batch = coll.on_batch
            try:
                await runner.run()
                return  # stopped
            except asyncio.CancelledError:
                await runner.stop()
                raise
            except Exception as e:  # any failure: record it, rebuild
                coll.failure = f"{type(e).__name__}: {e}"
                log.warning("%s: dataflow %s failed: %s", self.name, coll.desc.id, coll.failure)
            await asyncio.sleep(RESTART_BACKOFF_S)
            if coll.dropped:
                return
            resume = None
            if coll.arrangement is not None and coll.arrangement.upper > 0:
                # Resume the arrangement where it stopped (its state is complete below upper).
                resume = coll.arrangement.upper - 1
            coll.runner = self._runner(coll.desc, resume)
