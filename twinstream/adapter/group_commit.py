"""Group commit for table writes.

Concurrent writes queue up; one commit loop takes everything pending, confirms leadership (so an
old leader learns of a fence within one commit or tick), takes a write timestamp from the
oracle, and appends every table shard in one atomic compare-and-append — tables without writes
get an empty append, so all table uppers advance together to `ts + 1`. Only then are the
writers acknowledged and the oracle's read timestamp moved to `ts`. The next commit starts as
soon as the previous one is done (no fixed wait); when nobody writes, a tick every
`interval_s` still advances the uppers and confirms leadership.

Stopping never cuts a commit in half (doc/design/cutover.md, "Draining"): `stop()` refuses new
work, commits what is queued once more (or fails it with the fence) and ends the loop; a
cancelled loop first lets the commit in flight finish, so every writer learns the real
outcome. A write is failed retryably only if it provably did not land.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from twinstream.adapter.oracle import TimestampOracle
from twinstream.aio import wait_event
from twinstream.catalog.fence import FenceError
from twinstream.persist import ExtraMismatch, Shard, compare_and_append_many
from twinstream.persist.types import Diff, Row

log = logging.getLogger(__name__)

#: Table writes per commit: (shard id -> list of (row, diff)).
TableWrites = dict[str, list[tuple[Row, Diff]]]

#: Attempts to claim an oracle timestamp before a commit gives up.
_ORACLE_RETRY_MAX = 100
#: Upper bound on writes merged into one commit (the rest waits for the next one).
MAX_WRITES_PER_COMMIT = 10_000
#: How long a cancelled commit loop waits for the commit in flight to finish before its
#: writers are told the outcome is unknown (a consensus store that hangs).
COMMIT_DRAIN_TIMEOUT_S = 5.0


class WriteFailed(Exception):
    """A commit could not be made durable; the write was not applied."""


class CommitterShutDown(WriteFailed):
    """The commit loop was cancelled (the process is shutting down, e.g. after another task
    saw the fence) before the write was committed: it was not applied. Sessions answer FATAL
    57P01 so that clients, and the balancer, send it again elsewhere."""


class CommitOutcomeUnknown(WriteFailed):
    """The process stopped while this write's commit was in flight and the commit did not
    finish within `COMMIT_DRAIN_TIMEOUT_S`: it may or may not have landed. Never retryable
    (sessions answer 40003 statement_completion_unknown)."""


@dataclass
class _Pending:
    writes: TableWrites
    done: asyncio.Future[int]


@dataclass
class _Registration:
    shard: Shard
    done: asyncio.Future[int]


@dataclass
class GroupCommitStats:
    commits: int = 0
    writes: int = 0
    empty_ticks: int = 0
    last_ts: int = 0
    batch_sizes: list[int] = field(default_factory=list)


class GroupCommitter:
    def __init__(
        self,
        oracle: TimestampOracle,
        confirm_leadership: Callable[[], Awaitable[None]],
        *,
        on_commit: Callable[[int, TableWrites], None] | None = None,
        interval_s: float = 0.1,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.oracle = oracle
        self.monotonic = monotonic
        #: When the last successful leadership confirmation *started* (monotonic seconds):
        #: we were the leader at some instant after it (the read lease, adapter/linearize.py).
        self.confirmed_at: float | None = None
        self.confirm_leadership = confirm_leadership
        self.on_commit = on_commit
        self.interval_s = interval_s
        self.shards: dict[str, Shard] = {}
        self.stats = GroupCommitStats()
        self._pending: list[_Pending] = []
        self._registrations: list[_Registration] = []
        self._wake = asyncio.Event()
        self._stopped: BaseException | None = None
        #: Set by `stop()`: no new work; the loop commits what is queued once more and ends.
        self._draining = False
        #: The batch of the commit in flight (its outcome is being decided).
        self._inflight: list[_Pending] = []
        self._inflight_regs: list[asyncio.Future[int]] = []
        #: Readers waiting for a commit at or above a timestamp (`wait_committed`).
        self._ts_waiters: list[tuple[int, asyncio.Future[int]]] = []

    # -- API -----------------------------------------------------------------------------------

    async def write(self, writes: TableWrites) -> int:
        """Append rows to tables; returns the commit timestamp once it is durable."""
        done = self._future()  # first: a stopped (fenced) loop answers retryably
        for shard_id in writes:
            if shard_id not in self.shards:
                raise WriteFailed(f"table shard {shard_id} is not registered for writes")
        return await self._enqueue_pending(_Pending(writes, done))

    async def register(self, shard: Shard) -> int:
        """Start advancing a (new) table's shard with every commit; returns the first commit ts
        that includes it (reads at or after it may read the table)."""
        reg = _Registration(shard, self._future())
        self._registrations.append(reg)
        self._wake.set()
        return await reg.done

    def adopt(self, shards: list[Shard]) -> None:
        """Advance these table shards with every commit from now on, without a commit to
        register them: promotion owns them already (their critical holds, the oracle) and
        their cached uppers are final, so the first commit appends to them as they are."""
        for shard in shards:
            assert shard.cached_upper() is not None, f"adopting {shard.shard_id} without its upper"
            self.shards[shard.shard_id] = shard

    def unregister(self, shard_id: str) -> None:
        self.shards.pop(shard_id, None)

    async def wait_committed(self, ts: int) -> int:
        """Wait until a commit at or above `ts` is done (its writes mirrored); raises what
        stopped the loop instead (a fence: we were not the leader any more)."""
        if self.stats.last_ts >= ts:
            return self.stats.last_ts
        fut = self._future()
        self._ts_waiters.append((ts, fut))
        self._wake.set()  # no need to wait for the next tick
        return await fut

    def stop(self) -> None:
        """Drain: refuse new writes (CommitterShutDown: retryable, they never ran), commit
        what is queued once more — or fail it with the fence, proving it did not land — and
        end `run()` normally. Idempotent; a no-op once the loop has stopped."""
        self._draining = True
        self._wake.set()

    @property
    def stopped(self) -> bool:
        """True once the loop has ended (drained, fenced or cancelled)."""
        return self._stopped is not None

    async def run(self) -> None:
        """The commit loop; runs until drained (`stop()`), cancelled or fenced (the fence
        error propagates)."""
        try:
            while not self._draining:
                if not self._pending and not self._registrations and not self._ts_waiters:
                    self._wake.clear()
                    await wait_event(self._wake, self.interval_s)
                await self._commit_finishing()
            await self._commit_finishing()  # what was queued before stop(): decided now
        except BaseException as e:
            self._stopped = e
            self._fail_all(e)
            raise
        self._stopped = CommitterShutDown("group commit has stopped: shutting down")
        self._fail_all(self._stopped)

    # -- internals -----------------------------------------------------------------------------

    async def _commit_finishing(self) -> None:
        """One commit that a cancellation cannot cut in half: cancelled, we still wait (up to
        `COMMIT_DRAIN_TIMEOUT_S`) for the commit in flight, so that its writers get their real
        outcome — acknowledged, or failed without landing — before the loop ends."""
        commit = asyncio.ensure_future(self._commit_once())
        try:
            await asyncio.shield(commit)
        except asyncio.CancelledError:
            try:
                if not commit.done():
                    await asyncio.wait({commit}, timeout=COMMIT_DRAIN_TIMEOUT_S)
            finally:
                if not commit.done():
                    commit.cancel()
                    unknown = CommitOutcomeUnknown("shut down while a commit was in flight")
                    for fut in [p.done for p in self._inflight] + self._inflight_regs:
                        if not fut.done():
                            fut.set_exception(unknown)
                elif not commit.cancelled():
                    commit.exception()  # retrieved: the writers have it
            raise

    def _future(self) -> asyncio.Future[int]:
        if self._draining and self._stopped is None:
            raise CommitterShutDown("group commit is shutting down")
        if isinstance(self._stopped, FenceError):
            raise self._stopped  # sessions turn it into FATAL 57P01: clients retry elsewhere
        if isinstance(self._stopped, CommitterShutDown):
            raise self._stopped
        if self._stopped is not None and not isinstance(self._stopped, Exception):
            raise CommitterShutDown("group commit has stopped: shutting down")
        if self._stopped is not None:
            raise WriteFailed(f"group commit has stopped: {self._stopped!r}")
        return asyncio.get_running_loop().create_future()

    async def _enqueue_pending(self, pending: _Pending) -> int:
        self._pending.append(pending)
        self._wake.set()
        return await pending.done

    def _fail_all(self, err: BaseException) -> None:
        exc = err if isinstance(err, Exception) else CommitterShutDown("group commit stopped")
        for p in self._pending:
            if not p.done.done():
                p.done.set_exception(exc)
        for r in self._registrations:
            if not r.done.done():
                r.done.set_exception(exc)
        for _ts, fut in self._ts_waiters:
            if not fut.done():
                fut.set_exception(exc)
        self._pending.clear()
        self._registrations.clear()
        self._ts_waiters.clear()

    async def _append_all(self, shards: dict[str, Shard], merged: TableWrites) -> int:
        """One consensus transaction: every table shard appended at a fresh oracle timestamp
        and the oracle advanced (write and read timestamp) to it. Returns the timestamp."""
        for attempt in range(_ORACLE_RETRY_MAX):
            ts, oracle_leg = await self.oracle.prepare_write(refresh=attempt > 0)
            appends = []
            for shard_id, shard in shards.items():
                expected = shard.cached_upper()
                if expected is None:
                    expected = await shard.upper()
                assert expected <= ts, f"table {shard_id} upper {expected} beyond write ts {ts}"
                updates = [(row, ts, d) for row, d in merged.get(shard_id, [])]
                appends.append((shard, updates, expected, ts + 1))
            outcome = await compare_and_append_many(appends, extra=[oracle_leg])
            if isinstance(outcome, ExtraMismatch):
                # The oracle moved: another process took a timestamp — at promotion that is
                # the new leader, so check for a fence before re-timing and retrying.
                await self.confirm_leadership()
                continue
            if outcome is not None:
                await self.confirm_leadership()  # raises if we were fenced
                raise WriteFailed(f"table uppers moved under the leader: {outcome}")
            self.oracle.prepared_committed(oracle_leg)
            return ts
        raise WriteFailed("the timestamp oracle kept moving under group commit")

    async def _commit_once(self) -> None:
        batch = self._pending[:MAX_WRITES_PER_COMMIT]
        del self._pending[: len(batch)]
        self._inflight = batch
        regs, self._registrations = self._registrations, []
        self._inflight_regs = [r.done for r in regs]
        merged: TableWrites = {}
        for p in batch:
            for shard_id, rows in p.writes.items():
                merged.setdefault(shard_id, []).extend(rows)
        try:
            started = self.monotonic()
            await self.confirm_leadership()
            self.confirmed_at = started
            shards = dict(self.shards)
            for r in regs:
                shards[r.shard.shard_id] = r.shard
            ts = await self._append_all(shards, merged)
            for r in regs:
                self.shards[r.shard.shard_id] = r.shard
            if self.on_commit is not None and merged:
                self.on_commit(ts, merged)
        except Exception as e:
            for p in batch:
                if not p.done.done():
                    p.done.set_exception(e)
            for r in regs:
                if not r.done.done():
                    r.done.set_exception(e)
            if isinstance(e, FenceError | AssertionError):
                raise
            log.warning("group commit failed; its writes were not applied: %s", e)
            return
        self.stats.commits += 1
        self.stats.writes += len(batch)
        self.stats.last_ts = ts
        if not batch:
            self.stats.empty_ticks += 1
        # A writer may have been cancelled meanwhile (a dropped source's ingestion, a gone
        # client): its write is durable anyway, and the loop must not die of it.
        for p in batch:
            if not p.done.done():
                p.done.set_result(ts)
        for r in regs:
            if not r.done.done():
                r.done.set_result(ts)
        if self._ts_waiters:
            waiting = self._ts_waiters
            self._ts_waiters = [(t, f) for t, f in waiting if t > ts and not f.done()]
            for t, f in waiting:
                if t <= ts and not f.done():
                    f.set_result(ts)
