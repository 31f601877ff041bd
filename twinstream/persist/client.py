"""`PersistClient`: opens shards on one consensus + blob location."""

from __future__ import annotations

from collections.abc import Sequence

from twinstream.clock import SYSTEM_CLOCK, Clock
from twinstream.persist import limits
from twinstream.persist.errors import UpperMismatch
from twinstream.persist.location import Blob, Consensus
from twinstream.persist.machine import ExtraMismatch, Shard, compare_and_append_many
from twinstream.persist.types import Update
from twinstream.persist.urls import open_blob, open_consensus


class PersistClient:
    """One per process (or per component in tests). Shares one consensus connection."""

    def __init__(self, consensus: Consensus, blob: Blob, clock: Clock = SYSTEM_CLOCK) -> None:
        self.consensus = consensus
        self.blob = blob
        self.clock = clock

    @classmethod
    def from_urls(
        cls, consensus_url: str, blob_url: str, clock: Clock = SYSTEM_CLOCK
    ) -> PersistClient:
        return cls(open_consensus(consensus_url), open_blob(blob_url), clock)

    def open(
        self,
        shard_id: str,
        *,
        writer_id: str | None = None,
        lease_ms: int = limits.LEASE_DEFAULT_MS,
    ) -> Shard:
        return Shard(
            shard_id, self.consensus, self.blob, self.clock, writer_id=writer_id, lease_ms=lease_ms
        )

    async def compare_and_append_many(
        self, writes: Sequence[tuple[Shard, Sequence[Update], int, int]]
    ) -> dict[str, UpperMismatch] | ExtraMismatch | None:
        return await compare_and_append_many(writes)

    async def start_watching(self) -> None:
        await self.consensus.start_watching()

    async def close(self) -> None:
        await self.consensus.close()
        await self.blob.close()
