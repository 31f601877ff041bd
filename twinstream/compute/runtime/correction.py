"""The correction buffer of a self-correcting sink: desired updates minus persisted updates.

A sink adds what its dataflow wants the output to contain (`add(updates)`) and subtracts what
the output shard already contains (`add(updates, negate=True)`). What remains, consolidated,
is exactly what still has to be written. Only accumulations at times `>= lower` matter (the
sink can only write there: `lower` is the larger of the shard's upper and the dataflow's
as-of), so updates at earlier times are advanced to `lower`, which lets a retraction at one
time cancel an insertion at another.

Invariant: every entry has a time `>= lower` and a non-zero diff; `len()` is the number of
entries, i.e. the buffer's memory. Pure data structure: no I/O, no asyncio.
"""

from __future__ import annotations

from collections.abc import Iterable

from twinstream.persist.types import Row, Update


class Correction:
    """`time -> {row: diff}` with zero diffs dropped and times advanced to `lower`."""

    __slots__ = ("_len", "_times", "lower")

    def __init__(self, lower: int = 0) -> None:
        self._times: dict[int, dict[Row, int]] = {}
        self._len = 0
        self.lower = lower

    def __len__(self) -> int:
        return self._len

    def add(self, updates: Iterable[Update], *, negate: bool = False) -> None:
        """Add (or, with `negate`, subtract) updates; times below `lower` become `lower`."""
        lower = self.lower
        times = self._times
        bucket: dict[Row, int] | None = None
        bucket_t = -1
        delta = 0
        for row, t, d in updates:
            if negate:
                d = -d
            if not d:
                continue
            if t < lower:
                t = lower
            if t != bucket_t or bucket is None:
                bucket = times.get(t)
                if bucket is None:
                    bucket = times[t] = {}
                bucket_t = t
            old = bucket.get(row)
            if old is None:
                bucket[row] = d
                delta += 1
            else:
                new = old + d
                if new:
                    bucket[row] = new
                else:
                    del bucket[row]
                    delta -= 1
        self._len += delta
        for t in [t for t, b in times.items() if not b]:
            del times[t]

    def advance(self, lower: int) -> None:
        """Raise `lower` (never lowers it), merging earlier times into it."""
        if lower <= self.lower:
            return
        self.lower = lower
        stale = sorted(t for t in self._times if t < lower)
        if not stale:
            return
        moved: list[Update] = []
        for t in stale:
            bucket = self._times.pop(t)
            self._len -= len(bucket)
            moved.extend((row, lower, d) for row, d in bucket.items())
        self.add(moved)

    def updates_before(self, upper: int) -> list[Update]:
        """The entries at times `< upper` as updates (in time order); the buffer is unchanged."""
        out: list[Update] = []
        for t in sorted(t for t in self._times if t < upper):
            out.extend((row, t, d) for row, d in self._times[t].items())
        return out

    def retire_before(self, upper: int) -> int:
        """Drop the entries at times `< upper` (they were written); returns how many."""
        gone = 0
        for t in [t for t in self._times if t < upper]:
            gone += len(self._times.pop(t))
        self._len -= gone
        return gone

    def times(self) -> list[int]:
        return sorted(self._times)

    def contents(self) -> dict[tuple[Row, int], int]:
        """`(row, time) -> diff` (tests and introspection)."""
        return {(row, t): d for t, b in self._times.items() for row, d in b.items()}
