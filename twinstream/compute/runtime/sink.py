"""The self-correcting persist sink: keeps an output shard equal to a dataflow's output.

Several sinks may target one shard at once (replicas of a cluster, or two generations during
an upgrade); none of them coordinates with the others. Each keeps a *correction* buffer

    correction = (what my dataflow wants the shard to contain) - (what the shard contains)

consolidated, at times `>= lower = max(persisted upper K, dataflow as_of)`. Two feeds change
it: `feed(updates, lower, upper)` adds the dataflow's output (complete below `W = upper`), and
a listen on the output shard subtracts what anybody (this sink included) appended (complete
below `K`). Whenever `W > K` and writes are allowed, the sink appends the correction's
entries below `W` with `compare_and_append(expected_upper=K, new_upper=W)`:

- success: those entries are now in the shard; they are dropped from the correction and
  `K = W`. The listen later sees them too and skips them (every time `< K` is accounted for).
- `UpperMismatch(actual)`: somebody else appended first. The sink waits until its listen has
  caught up to `actual` (subtracting what they wrote) and tries again with what is left, which
  is empty when they wrote what it would have written. So two writers never duplicate and a
  writer that stops never stalls the others.
- an indeterminate failure (`LocationUnavailable`): nothing is dropped; the listen tells
  whether the append landed, and the retry is decided on what it says.

Read-only, the sink appends nothing but keeps following the shard, so its correction stays
consolidated against what the writing sink appends: it holds only the in-flight difference
(the times one sink computed and the other did not yet), not the output's history.
`allow_writes()` turns it into a writing sink in place; it then writes only the difference.

The buffer also repairs a shard that disagrees with the dataflow (a bug, a different
plan version): the difference is written at the next write time.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, fields

from twinstream.compute.runtime.correction import Correction
from twinstream.compute.runtime.reading import (
    listen,
    move_hold,
    reader_id,
    release,
    wait_for_upper,
)
from twinstream.compute.runtime.tasks import supervise
from twinstream.persist import (
    LeasedReadHandle,
    LocationUnavailable,
    PersistClient,
    Progress,
    Updates,
)
from twinstream.persist.types import Update

log = logging.getLogger(__name__)

#: Wait before retrying an append whose outcome was unknown (the store was unreachable).
INDETERMINATE_BACKOFF_S = 0.1


@dataclass
class SinkStats:
    """Counters of one sink (monotonic except `correction`)."""

    appends: int = 0  #: successful compare_and_append calls (empty ones included)
    empty_appends: int = 0  #: successful appends that only moved the upper
    updates_written: int = 0  #: updates appended by this sink
    mismatches: int = 0  #: appends lost to another writer (UpperMismatch)
    indeterminate: int = 0  #: appends whose outcome was unknown (LocationUnavailable)
    persisted_seen: int = 0  #: updates of other writers subtracted from the correction
    correction: int = 0  #: current correction size (entries)
    max_correction: int = 0  #: largest correction size seen

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class PersistSink:
    """A self-correcting writer of one output shard (see the module docstring).

    Drive it with `feed(updates, lower, upper)` after each dataflow step (`lower` of the first
    call is the dataflow's as-of: the correction never places updates before it) and run
    `run()` as a task. `persisted_upper` is `K` (the shard's upper as far as this sink has
    accounted for its contents), `desired_upper` is `W`.
    """

    def __init__(
        self,
        client: PersistClient,
        shard_id: str,
        *,
        read_only: bool = False,
        name: str = "sink",
        heartbeat_s: float | None = None,
        writer_id: str | None = None,
    ) -> None:
        self.client = client
        self.shard_id = shard_id
        self.read_only = read_only
        self.name = name
        self.correction = Correction()
        self.persisted_upper = 0
        self.desired_upper = 0
        self.desired_as_of: int | None = None
        self.stats = SinkStats()
        #: Set once the shard's contents at the start are accounted for.
        self.ready = asyncio.Event()
        self._writer = client.open(shard_id, writer_id=writer_id or reader_id(f"{name}-writer"))
        self._heartbeat_s = heartbeat_s if heartbeat_s is not None else self._writer.lease_ms / 3000
        self._may_write_from_empty = False
        self._retry_after = 0
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._progress = asyncio.Event()
        self._hold: LeasedReadHandle | None = None
        self._listen_upper = 0
        self._running = False

    # -- driving -------------------------------------------------------------------------------

    def feed(self, updates: list[Update], lower: int, upper: int) -> None:
        """The dataflow's output at times in `[lower, upper)`; it is complete below `upper`."""
        if self.desired_as_of is None:
            self.desired_as_of = lower
            self._advance_lower()
        if upper < self.desired_upper:
            raise ValueError(
                f"{self.name}: frontier went back from {self.desired_upper} to {upper}"
            )
        self.correction.add(updates)
        self.desired_upper = upper
        self._note_size()
        self._changed.set()

    def allow_writes(self) -> None:
        """Turn a read-only sink into a writing one, in place."""
        if self.read_only:
            log.info("%s: writes allowed at persisted upper %d", self.name, self.persisted_upper)
        self.read_only = False
        self._changed.set()

    async def wait_persisted(self, upper: int) -> None:
        """Wait until this sink has seen the shard's upper reach `upper`."""
        while self.persisted_upper < upper:
            event = self._progress
            await event.wait()

    # -- the tasks -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Follow the shard and write; runs until cancelled (or the shard is sealed)."""
        if self._running:
            raise RuntimeError(f"{self.name}: already running")
        self._running = True
        try:
            await supervise(self._follow(), self._write_loop(), self._heartbeat(), name=self.name)
        finally:
            self._running = False
            await release(self._hold)
            self._hold = None

    async def _follow(self) -> None:
        """Account for the shard's contents: a snapshot, then a listen (under a leased hold)."""
        hold_shard = self.client.open(self.shard_id)
        read_shard = self.client.open(self.shard_id)
        state = await hold_shard.fetch_state()
        while True:
            start = max(state.upper - 1, 0)
            hold = await hold_shard.leased_reader(reader_id(f"{self.name}-hold"), start)
            if hold.since <= start:
                break
            # The shard's since passed its upper (a hold beyond it): wait until readable.
            await release(hold)
            await wait_for_upper(read_shard, hold.since + 1)
            state = await hold_shard.fetch_state()
        self._hold = hold
        if state.upper == 0:
            # Nothing was ever written: the first append (ours or another's) starts at 0.
            self._may_write_from_empty = True
            self._changed.set()
        await wait_for_upper(read_shard, start + 1)
        snapshot = await read_shard.snapshot(start)
        async with self._lock:
            # K > start only if this sink appended [0, K) to the empty shard meanwhile.
            if self.persisted_upper <= start:
                self.correction.add([(row, start, d) for row, d in snapshot], negate=True)
                self.stats.persisted_seen += len(snapshot)
            self._set_persisted(max(self.persisted_upper, start + 1))
            self._listen_upper = start + 1
            self.ready.set()
            self._note_size()
        # Updates below K are accounted for (ours, or subtracted already): the listen need
        # not even read the batches entirely below it (this sink's own appends, mostly).
        async with listen(
            read_shard, start, reader_id(f"{self.name}-listen"), lambda: self.persisted_upper
        ) as events:
            async for event in events:
                async with self._lock:
                    if isinstance(event, Updates):
                        k = self.persisted_upper
                        theirs = [u for u in event.updates if u[1] >= k]
                        if theirs:
                            self.correction.add(theirs, negate=True)
                            self.stats.persisted_seen += len(theirs)
                            self._note_size()
                    elif isinstance(event, Progress):
                        self._listen_upper = event.upper
                        if event.upper > self.persisted_upper:
                            self._set_persisted(event.upper)

    def _can_write(self) -> bool:
        return (
            not self.read_only
            and self.desired_as_of is not None
            and (self.ready.is_set() or self._may_write_from_empty)
            and self.desired_upper > self.persisted_upper
            and self.persisted_upper >= self._retry_after
        )

    async def _write_loop(self) -> None:
        while True:
            self._changed.clear()
            if not self._can_write():
                await self._changed.wait()
                continue
            if not await self._write_once():
                await asyncio.sleep(INDETERMINATE_BACKOFF_S)

    async def _write_once(self) -> bool:
        """One append attempt; False if its outcome is unknown."""
        async with self._lock:
            if not self._can_write():
                return True
            k, w = self.persisted_upper, self.desired_upper
            self._advance_lower()
            batch = self.correction.updates_before(w)
            try:
                out = await self._writer.compare_and_append(batch, k, w)
            except LocationUnavailable as e:
                # It may have landed: keep the correction; the listen tells what happened.
                self.stats.indeterminate += 1
                log.warning("%s: append [%d, %d) indeterminate: %s", self.name, k, w, e)
                return False
            if out is not None:
                self.stats.mismatches += 1
                self._retry_after = out.actual
                return True
            self.correction.retire_before(w)
            self.stats.appends += 1
            self.stats.updates_written += len(batch)
            if not batch:
                self.stats.empty_appends += 1
            self._set_persisted(w)
            self._note_size()
            return True

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            hold = self._hold
            # Not past the listen's position: its own lease is renewed only when it idles,
            # and a since beyond its position would end it with LeaseExpired.
            position = min(self.persisted_upper, self._listen_upper)
            if hold is not None and position > 0:
                await move_hold(hold, position - 1)

    # -- internals -----------------------------------------------------------------------------

    def _advance_lower(self) -> None:
        as_of = self.desired_as_of if self.desired_as_of is not None else 0
        self.correction.advance(max(self.persisted_upper, as_of))

    def _set_persisted(self, upper: int) -> None:
        assert upper >= self.persisted_upper, "persisted upper regressed"
        self.persisted_upper = upper
        self._advance_lower()
        self._changed.set()
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    def _note_size(self) -> None:
        n = len(self.correction)
        self.stats.correction = n
        if n > self.stats.max_correction:
            self.stats.max_correction = n
