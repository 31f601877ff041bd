"""The two narrow storage seams persist runs on: `Consensus` (a compare-and-set log per key)
and `Blob` (a key -> bytes store), plus the `ChangeFeed` that wakes listeners.

Backends: `mem.py` (tests), `sqlite.py` (embedded default), `postgres.py` (distributed),
`fileblob.py` (local directory). `open_location` in `urls.py` picks one from a URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class VersionedData:
    """One entry of a key's log; seqnos of a key are contiguous from 0."""

    seqno: int
    data: bytes


#: One leg of a multi-key compare-and-set: (key, expected head seqno or None, new entry).
CasOp = tuple[str, int | None, VersionedData]


def check_cas_op(key: str, expected: int | None, new: VersionedData) -> None:
    """Every backend enforces new = expected + 1: that is what serializes racing writers."""
    want = 0 if expected is None else expected + 1
    if new.seqno != want:
        raise ValueError(f"consensus key {key}: new seqno {new.seqno} must be {want}")


class ChangeFeed:
    """Per-key wakeups. Take `event(key)` *before* reading state, then wait on it: no lost
    wakeups. Backends call `notify(key)` when they learn a key changed (here or elsewhere)."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def event(self, key: str) -> asyncio.Event:
        ev = self._events.get(key)
        if ev is None:
            ev = asyncio.Event()
            self._events[key] = ev
        return ev

    def notify(self, key: str) -> None:
        ev = self._events.pop(key, None)
        if ev is not None:
            ev.set()

    def notify_all(self) -> None:
        events, self._events = self._events, {}
        for ev in events.values():
            ev.set()


class Consensus(Protocol):
    """A linearizable log per key with compare-and-set on the head seqno."""

    feed: ChangeFeed

    async def head(self, key: str) -> VersionedData | None: ...

    async def compare_and_set(self, key: str, expected: int | None, new: VersionedData) -> bool: ...

    async def compare_and_set_many(self, ops: Sequence[CasOp]) -> bool:
        """All legs succeed or none does (one transaction)."""
        ...

    async def scan(self, key: str, from_seqno: int, limit: int) -> list[VersionedData]: ...

    async def truncate(self, key: str, seqno: int) -> int:
        """Delete entries below `seqno` (never the head); returns how many went."""
        ...

    async def start_watching(self) -> None:
        """Begin receiving other processes' change notices into `feed` (idempotent)."""
        ...

    async def close(self) -> None: ...


class Blob(Protocol):
    """Immutable-by-convention byte values under string keys."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, data: bytes) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def list_keys(self, prefix: str) -> list[str]: ...

    async def close(self) -> None: ...
