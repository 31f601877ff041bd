"""The timestamp oracle: hands out write timestamps and the read timestamp of a timeline.

Timestamps are milliseconds since the epoch. A write timestamp is strictly greater than every
earlier one and at least the wall clock; `apply_write(ts)` makes writes at ts visible to
`read_ts()`. The state lives in the consensus store under `oracle/<timeline>`, changed only by
compare-and-set, so every process (and both generations) shares one oracle. A read-only handle
(what a read-only generation gets) reads it and can never advance it.
"""

from __future__ import annotations

from twinstream.clock import Clock
from twinstream.persist import codec
from twinstream.persist.location import CasOp, Consensus, VersionedData

_TRUNCATE_EVERY = 64
_CAS_RETRY_MAX = 10_000


class OracleReadOnly(Exception):
    """A read-only oracle handle was asked to advance the timeline."""


class TimestampOracle:
    def __init__(
        self, consensus: Consensus, clock: Clock, *, timeline: str = "user", read_only: bool = False
    ) -> None:
        self.consensus = consensus
        self.clock = clock
        self.key = f"oracle/{timeline}"
        self.read_only = read_only
        self._cached: tuple[int | None, int, int] | None = None

    async def _head(self) -> tuple[int | None, int, int]:
        head = await self.consensus.head(self.key)
        if head is None:
            return None, 0, 0
        read_ts, write_ts = codec.unpack(head.data)
        assert read_ts <= write_ts, f"oracle {self.key}: read_ts {read_ts} > write_ts {write_ts}"
        return head.seqno, read_ts, write_ts

    async def _update(self, read_ts: int | None, write_ts_floor: int | None) -> tuple[int, int]:
        if self.read_only:
            raise OracleReadOnly(f"oracle {self.key} is read-only in this process")
        for _ in range(_CAS_RETRY_MAX):
            seqno, r, w = await self._head()
            new_w = w if write_ts_floor is None else max(w + 1, write_ts_floor)
            new_r = r if read_ts is None else max(r, read_ts)
            new_w = max(new_w, new_r)
            new_seqno = 0 if seqno is None else seqno + 1
            if await self.consensus.compare_and_set(
                self.key, seqno, VersionedData(new_seqno, codec.pack([new_r, new_w]))
            ):
                if new_seqno > 0 and new_seqno % _TRUNCATE_EVERY == 0:
                    await self.consensus.truncate(self.key, new_seqno)
                return new_r, new_w
        raise AssertionError(f"oracle {self.key}: CAS retry limit exceeded")

    async def prepare_write(self, *, refresh: bool) -> tuple[int, CasOp]:
        """A write timestamp and the consensus leg that claims it *and* marks it applied, for
        a caller that commits its data in the same consensus transaction (group commit)."""
        if self.read_only:
            raise OracleReadOnly(f"oracle {self.key} is read-only in this process")
        if refresh or self._cached is None:
            self._cached = await self._head()
        seqno, _r, w = self._cached
        ts = max(w + 1, self.clock.now_ms())
        new_seqno = 0 if seqno is None else seqno + 1
        return ts, (self.key, seqno, VersionedData(new_seqno, codec.pack([ts, ts])))

    async def prepare_claim(self, *, refresh: bool) -> tuple[int, CasOp]:
        """Like `prepare_write`, but the leg only claims the write timestamp (the read
        timestamp stays): promotion commits it with its takeover of the tables, so every
        commit an older leader prepared against the old head now fails."""
        if self.read_only:
            raise OracleReadOnly(f"oracle {self.key} is read-only in this process")
        if refresh or self._cached is None:
            self._cached = await self._head()
        seqno, r, w = self._cached
        ts = max(w + 1, self.clock.now_ms())
        new_seqno = 0 if seqno is None else seqno + 1
        return ts, (self.key, seqno, VersionedData(new_seqno, codec.pack([r, ts])))

    def prepared_committed(self, op: CasOp) -> None:
        """The leg from `prepare_write` committed: remember the new head."""
        _key, _expected, new = op
        read_ts, write_ts = codec.unpack(new.data)
        self._cached = (new.seqno, read_ts, write_ts)

    async def read_ts(self) -> int:
        """The newest timestamp at which every applied write is visible."""
        _, r, _ = await self._head()
        return r

    async def write_ts(self) -> int:
        """A fresh timestamp > every earlier write timestamp and >= the wall clock."""
        _, w = await self._update(None, self.clock.now_ms())
        return w

    async def apply_write(self, ts: int) -> None:
        """Writes at `ts` are durable: reads may now happen at `ts`."""
        await self._update(ts, None)

    async def peek_write_ts(self) -> int:
        """The newest write timestamp handed out (no advance)."""
        _, _, w = await self._head()
        return w
