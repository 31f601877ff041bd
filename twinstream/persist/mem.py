"""In-memory Consensus and Blob: one process, no durability; for unit and property tests."""

from __future__ import annotations

from collections.abc import Sequence

from twinstream.persist.location import CasOp, ChangeFeed, VersionedData, check_cas_op


class MemConsensus:
    def __init__(self) -> None:
        self.feed = ChangeFeed()
        self._logs: dict[str, list[VersionedData]] = {}

    async def head(self, key: str) -> VersionedData | None:
        log = self._logs.get(key)
        return log[-1] if log else None

    def _head_seqno(self, key: str) -> int | None:
        log = self._logs.get(key)
        return log[-1].seqno if log else None

    async def compare_and_set(self, key: str, expected: int | None, new: VersionedData) -> bool:
        return await self.compare_and_set_many([(key, expected, new)])

    async def compare_and_set_many(self, ops: Sequence[CasOp]) -> bool:
        for key, expected, new in ops:
            check_cas_op(key, expected, new)
            if self._head_seqno(key) != expected:
                return False
        for key, _expected, new in ops:
            self._logs.setdefault(key, []).append(new)
            self.feed.notify(key)
        return True

    async def scan(self, key: str, from_seqno: int, limit: int) -> list[VersionedData]:
        return [v for v in self._logs.get(key, []) if v.seqno >= from_seqno][:limit]

    async def truncate(self, key: str, seqno: int) -> int:
        log = self._logs.get(key, [])
        if not log:
            return 0
        keep = [v for v in log if v.seqno >= seqno or v is log[-1]]
        removed = len(log) - len(keep)
        self._logs[key] = keep
        return removed

    async def start_watching(self) -> None:
        return None

    async def close(self) -> None:
        return None


class MemBlob:
    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}

    async def get(self, key: str) -> bytes | None:
        return self._data.get(key)

    async def set(self, key: str, data: bytes) -> None:
        self._data[key] = data

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def list_keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self._data if k.startswith(prefix))

    async def close(self) -> None:
        return None
