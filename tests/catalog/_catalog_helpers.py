"""Shared helpers of the catalog tests (imported by module name: pytest puts this directory
on sys.path because tests/catalog has no __init__.py)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from twinstream.catalog import DEFAULT_MIGRATIONS, DurableCatalog, Migration, OpenMode
from twinstream.clock import SYSTEM_CLOCK
from twinstream.persist import PersistClient, open_blob, open_consensus
from twinstream.persist.location import CasOp, Consensus, VersionedData
from twinstream.testing.locations import Location
from twinstream.testing.pgserver import PgServer

_names = itertools.count(1)


def sqlite_location(directory: Path) -> Location:
    return Location(
        "sqlite", f"sqlite://{directory / 'consensus.db'}", f"file://{directory / 'blob'}"
    )


def pg_location(server: PgServer) -> Location:
    """A fresh, empty database on `server` (names never clash with other tests' databases)."""
    url = server.create_database(f"cat_{uuid.uuid4().hex[:10]}_{next(_names)}")
    return Location("postgres", url, url)


def client_for(location: Location) -> PersistClient:
    return PersistClient.from_urls(location.consensus_url, location.blob_url)


@contextlib.asynccontextmanager
async def clients(location: Location, n: int = 1) -> AsyncIterator[list[PersistClient]]:
    """`n` independent clients (as separate processes would have), all closed at the end."""
    out = [client_for(location) for _ in range(n)]
    try:
        yield out
    finally:
        for c in out:
            await c.close()


async def open_cat(
    client: PersistClient,
    mode: OpenMode,
    gen: int | None,
    migrations: Sequence[Migration] = DEFAULT_MIGRATIONS,
) -> DurableCatalog:
    return await DurableCatalog.open(
        client, mode, deploy_generation=gen, clock=SYSTEM_CLOCK, migrations=migrations
    )


async def commit_item(cat: DurableCatalog, tag: str, **extra: Any) -> tuple[str, int]:
    """One DDL-like commit: allocate an item id, insert the item, audit it. (id, timestamp)."""
    txn = cat.transaction()
    item_id = txn.allocate_id("item")
    txn.insert("item", item_id, {"type": "table", "name": tag, **extra})
    txn.audit("create", "table", {"id": item_id, "name": tag}, SYSTEM_CLOCK.now_ms())
    return item_id, await cat.commit(txn)


def item_names(cat: DurableCatalog) -> set[str]:
    return {v["name"] for v in cat.state.items().values()}


async def shard_position(client: PersistClient) -> tuple[int, int]:
    """(upper, seqno) of the catalog shard, read fresh from consensus."""
    state = await client.open("catalog").fetch_state()
    return state.upper, state.seqno


Hook = Callable[[], Awaitable[None]]


class HookedConsensus:
    """Forwards to another consensus; runs a one-shot hook before/after the n-th
    compare-and-set *of this wrapper* (to pin down an interleaving deterministically), and
    optionally yields to the event loop `yields()` times before every call (to shuffle the
    interleaving of concurrent tasks on an in-memory store)."""

    def __init__(
        self,
        inner: Consensus,
        yields: Callable[[], int] | None = None,
        *,
        owns_inner: bool = False,
    ) -> None:
        self.inner = inner
        self.owns_inner = owns_inner
        self.feed = inner.feed
        self.cas_calls = 0
        self.before_cas: dict[int, Hook] = {}
        self.after_cas: dict[int, Hook] = {}
        self._yields = yields

    async def _maybe_yield(self) -> None:
        if self._yields is not None:
            for _ in range(self._yields()):
                await asyncio.sleep(0)  # a scheduling point, not a wait for anything

    async def head(self, key: str) -> VersionedData | None:
        await self._maybe_yield()
        return await self.inner.head(key)

    async def compare_and_set(self, key: str, expected: int | None, new: VersionedData) -> bool:
        self.cas_calls += 1
        n = self.cas_calls
        await self._maybe_yield()
        if (hook := self.before_cas.pop(n, None)) is not None:
            await hook()
        ok = await self.inner.compare_and_set(key, expected, new)
        if (hook := self.after_cas.pop(n, None)) is not None:
            await hook()
        await self._maybe_yield()
        return ok

    async def compare_and_set_many(self, ops: Sequence[CasOp]) -> bool:
        await self._maybe_yield()
        return await self.inner.compare_and_set_many(ops)

    async def scan(self, key: str, from_seqno: int, limit: int) -> list[VersionedData]:
        return await self.inner.scan(key, from_seqno, limit)

    async def truncate(self, key: str, seqno: int) -> int:
        return await self.inner.truncate(key, seqno)

    async def start_watching(self) -> None:
        await self.inner.start_watching()

    async def close(self) -> None:
        if self.owns_inner:
            await self.inner.close()


def hooked_client(location: Location) -> tuple[PersistClient, HookedConsensus]:
    """A client of `location` whose consensus calls can be hooked (closing it closes all)."""
    hooked = HookedConsensus(open_consensus(location.consensus_url), owns_inner=True)
    return PersistClient(hooked, open_blob(location.blob_url)), hooked
