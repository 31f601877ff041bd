"""The read barrier that keeps SELECT strict serializable across a cutover.

A leader answers reads from its local mirror, which holds every write *it* committed. That is
not enough when it has been superseded without noticing yet (paused across a promotion, or
simply between two fence checks): a successor may already have acknowledged writes the mirror
lacks. Before a read, `ReadBarrier.wait()` therefore reads the shared timestamp oracle (one
consensus read, shared by every read that arrives while it is in flight) and compares it with
the last timestamp our group commit made durable. Equal: nobody else wrote, serve locally.
Newer: either our own commit is just landing, or someone else wrote; wait for our next commit
to pass it — which succeeds in the first case and fails with the fence in the second (the
session answers FATAL 57P01 and the balancer retries on the new leader). Found by the safety
harness (doc/design/verification.md: stale-read-from-paused-fenced-leader).

The oracle read costs a consensus round trip per batch of reads, so a leader also holds a
**read lease**: for `READ_LEASE_S` after the *start* of its last successful leadership
confirmation (group commit confirms on every commit and every tick) it was the leader at some
instant after that start, and a successor cannot have acknowledged anything yet, because a new
leader commits nothing until `NEW_LEADER_WAIT_S` (> the lease, with margin for clock rates)
after its fence (`Coordinator.promote` / `serve`). Within the lease a read is served at the
last committed timestamp with no round trip; a paused process finds its lease expired when it
resumes (monotonic clocks keep running) and takes the oracle path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

#: How long after the start of a successful leadership confirmation local reads need no oracle
#: read. Group commit confirms at least every tick (100 ms by default).
READ_LEASE_S = 0.15
#: How long a new leader waits after its fence before it commits anything: longer than any
#: lease the fenced leader may still hold (x1.5 for clock-rate differences between hosts).
NEW_LEADER_WAIT_S = READ_LEASE_S * 1.5 + 0.02


class ReadBarrier:
    """Batched linearizable read timestamps for a leader (see the module docstring)."""

    def __init__(
        self,
        read_oracle: Callable[[], Awaitable[int]],
        last_committed: Callable[[], int],
        wait_committed: Callable[[int], Awaitable[int]],
        *,
        confirmed_at: Callable[[], float | None] = lambda: None,
        monotonic: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self._read_oracle = read_oracle
        self._confirmed_at = confirmed_at
        self._monotonic = monotonic
        #: Reads served within the lease (no oracle read): a metric.
        self.lease_reads = 0
        self._last_committed = last_committed
        self._wait_committed = wait_committed
        #: The oracle read in flight, and the one queued behind it: a read may only use an
        #: oracle read that *started* after it arrived, or it could miss a write acknowledged
        #: just before.
        self._inflight: asyncio.Future[int] | None = None
        self._next: asyncio.Future[int] | None = None
        self._task: asyncio.Task[None] | None = None
        #: Oracle reads issued (a metric: reads per oracle read is the batching factor).
        self.oracle_reads = 0

    async def wait(self) -> int:
        """A timestamp no older than any write acknowledged before this call, once the local
        mirror holds everything up to it. Raises the fence error if we were superseded."""
        confirmed = self._confirmed_at()
        if confirmed is not None and self._monotonic() - confirmed < READ_LEASE_S:
            self.lease_reads += 1
            return self._last_committed()
        ts = await self._oracle_ts()
        if ts > self._last_committed():
            await self._wait_committed(ts)
        return ts

    async def _oracle_ts(self) -> int:
        loop = asyncio.get_running_loop()
        if self._inflight is None:
            self._inflight = loop.create_future()
            fut = self._inflight
            self._task = loop.create_task(self._run(fut), name="read-barrier")
            return await asyncio.shield(fut)
        if self._next is None:
            self._next = loop.create_future()
        return await asyncio.shield(self._next)

    async def _run(self, fut: asyncio.Future[int]) -> None:
        while True:
            self.oracle_reads += 1
            try:
                fut.set_result(await self._read_oracle())
            except asyncio.CancelledError:
                for f in (fut, self._next):
                    if f is not None:
                        f.cancel()
                self._inflight = self._next = None
                raise
            except Exception as e:  # handed to every waiter of this read
                fut.set_exception(e)
                fut.exception()  # (marks it retrieved if nobody waits any more)
            if self._next is None:
                self._inflight = None
                return
            fut, self._next = self._next, None
            self._inflight = fut
