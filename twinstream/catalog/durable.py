"""The durable catalog: one persist shard, opened read-only, savepoint or writable.

- read-only: loads the catalog and follows others' writes; never writes.
- savepoint: a snapshot at open; mutations (migrations included) stay in memory; no following.
- writable: the fencing loop — load the current contents, write the fence token
  (G, epoch + 1) retracting the old one (plus bootstrap or migrations) in one
  compare-and-append, retry on an upper mismatch, fail if a higher token is durable.

Every writable commit is a compare-and-append at a new catalog timestamp; an upper mismatch
means someone else wrote, and the reload that follows tells whether that was a fence.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import AsyncIterator, Callable, Sequence

from twinstream.aio import wait_event
from twinstream.catalog.bootstrap import bootstrap
from twinstream.catalog.errors import (
    CatalogOutOfSync,
    IncompatibleCatalogVersion,
    NotWritable,
)
from twinstream.catalog.fence import DeployGenerationFenced, FenceError, FenceToken, fence_error
from twinstream.catalog.migrations import (
    DEFAULT_MIGRATIONS,
    Migration,
    newest_version,
    run_migrations,
)
from twinstream.catalog.state import CatalogChange, CatalogState, row
from twinstream.catalog.txn import Transaction
from twinstream.clock import Clock
from twinstream.persist import OpaqueMismatch, PersistClient, ReadBeforeSince, Shard
from twinstream.persist import state as pst
from twinstream.persist.machine import CriticalReadHandle
from twinstream.persist.state import ShardState
from twinstream.persist.types import Diff, Row, Update

log = logging.getLogger(__name__)

CATALOG_SHARD = "catalog"
CATALOG_CRITICAL_READER = "catalog-writer"
#: A writable catalog moves the shard's since forward every this many commits.
SINCE_DOWNGRADE_EVERY = 16
_OPEN_RETRY_MAX = 1000
_FOLLOW_POLL_S = 0.25


class OpenMode(enum.Enum):
    READ_ONLY = "read-only"
    SAVEPOINT = "savepoint"
    WRITABLE = "writable"


async def _load(shard: Shard) -> tuple[int, list[tuple[Row, Diff]]]:
    """Contents as of the current upper: (upper, consolidated rows)."""
    for _ in range(_OPEN_RETRY_MAX):
        state = await shard.fetch_state()
        if state.upper == 0:
            return 0, []
        try:
            return state.upper, await shard.snapshot(state.upper - 1)
        except ReadBeforeSince:
            continue  # the writer moved since past us between the two reads; read again
    raise AssertionError("catalog load kept racing the writer")


async def read_catalog_generation(client: PersistClient) -> int | None:
    """The generation of the largest durable fence token, without opening the catalog."""
    _, rows = await _load(client.open(CATALOG_SHARD))
    tokens = CatalogState.fence_tokens(rows)
    return max(tokens).deploy_generation if tokens else None


def _to_updates(changes: Sequence[CatalogChange], ts: int) -> list[Update]:
    return [(row(c.kind, c.key, c.value), ts, c.diff) for c in changes]


class DurableCatalog:
    """An open catalog. Create with `await DurableCatalog.open(...)`."""

    def __init__(
        self,
        client: PersistClient,
        mode: OpenMode,
        deploy_generation: int | None,
        clock: Clock,
        migrations: Sequence[Migration],
    ) -> None:
        self.client = client
        self.mode = mode
        self.deploy_generation = deploy_generation
        self.clock = clock
        self.migrations = tuple(migrations)
        self.newest_version = newest_version(self.migrations)
        self.shard = client.open(CATALOG_SHARD)
        self.state = CatalogState()
        self.upper = 0
        self.token: FenceToken | None = None
        self._fenced: FenceError | None = None
        self._commits = 0
        self._critical: CriticalReadHandle | None = None
        #: (upper, rows) of the latest full read of the shard (open, or a reload such as the
        #: DDL check's `committed_ids`): `open(preloaded=...)` of a promotion starts from it.
        self.loaded: tuple[int, list[tuple[Row, Diff]]] | None = None
        self._defer_hold = False
        self._subscribers: list[asyncio.Queue[list[CatalogChange]]] = []
        # Held from a commit's compare-and-append until `upper` records it, and by
        # confirm_leadership around its read of the shard's upper: otherwise a leadership check
        # running while our own DDL commit lands sees the upper moved "without a fence".
        self._append_lock = asyncio.Lock()

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        client: PersistClient,
        mode: OpenMode,
        *,
        deploy_generation: int | None,
        clock: Clock,
        migrations: Sequence[Migration] = DEFAULT_MIGRATIONS,
        preloaded: tuple[int, list[tuple[Row, Diff]]] | None = None,
        defer_critical_hold: bool = False,
    ) -> DurableCatalog:
        """`preloaded`: (upper, rows) of an earlier load (another open's `loaded`), tried
        first instead of reading the shard: promotion opens writable with what the last DDL
        check read. Safe when stale: the writable open's compare-and-append expects that
        upper, so a catalog that moved since (DDL, a newer fence) makes it load afresh.

        `defer_critical_hold` (writable): do not take the catalog shard's critical hold here;
        the caller commits `critical_hold_transition()` in a transaction of its own (promotion
        takes it with the tables' holds) and then calls `critical_hold_taken()` — before any
        commit through this handle."""
        if mode is not OpenMode.READ_ONLY and deploy_generation is None:
            raise ValueError(f"opening the catalog {mode.value} needs a deploy generation")
        cat = cls(client, mode, deploy_generation, clock, migrations)
        cat._defer_hold = defer_critical_hold
        for _ in range(_OPEN_RETRY_MAX):
            if await cat._try_open(preloaded):
                return cat
            preloaded = None
            log.info("catalog open lost a race (upper moved); retrying")
        raise AssertionError("catalog open kept losing compare-and-append races")

    async def _try_open(self, preloaded: tuple[int, list[tuple[Row, Diff]]] | None) -> bool:
        upper, rows = preloaded if preloaded is not None else await _load(self.shard)
        self.loaded = (upper, rows)
        tokens = CatalogState.fence_tokens(rows)
        durable = max(tokens) if tokens else None
        gen = self.deploy_generation
        if gen is not None and durable is not None and durable.deploy_generation > gen:
            raise DeployGenerationFenced(gen, durable.deploy_generation)
        state = CatalogState.from_rows(rows)
        version = state.catalog_version
        newer = version is not None and version > self.newest_version
        if self.mode is not OpenMode.READ_ONLY and newer:
            raise IncompatibleCatalogVersion(
                f"durable catalog_version {version} is newer than this binary's newest "
                f"{self.newest_version}; refusing to open {self.mode.value}"
            )
        if not state.initialized and self.mode is not OpenMode.WRITABLE:
            raise NotWritable(
                f"catalog is not initialized; will not create it in {self.mode.value} mode"
            )
        if self.mode is OpenMode.READ_ONLY:
            self.state, self.upper = state, upper
            return True
        assert gen is not None
        txn = Transaction(state)
        if self.mode is OpenMode.WRITABLE:
            token = FenceToken(gen, (durable.epoch if durable is not None else 0) + 1)
            if durable is not None:
                txn.delete("fence_token", "")
            txn.insert("fence_token", "", token.to_json())
        else:
            assert durable is not None, "an initialized catalog has a fence token"
            token = FenceToken(gen, durable.epoch)
        if not state.initialized:
            bootstrap(txn, self.clock.now_ms())
            txn.insert("config", "catalog_version", self.newest_version)
        else:
            assert version is not None
            run_migrations(txn, self.migrations, version)
        if self.mode is OpenMode.SAVEPOINT:
            self.state, self.upper, self.token = txn.view, upper, token
            return True
        ts = max(upper, self.clock.now_ms())
        mismatch = await self.shard.compare_and_append(_to_updates(txn.changes, ts), upper, ts + 1)
        if mismatch is not None:
            return False
        self.state, self.upper, self.token = txn.view, ts + 1, token
        if not self._defer_hold:
            await self._take_critical_hold()
        return True

    async def _take_critical_hold(self) -> None:
        """Own the catalog shard's critical read hold, keyed by our fence token.

        An older holder may still move the hold between our read of its opaque and our swap;
        that is not a fence (we hold the largest token), so re-read and retry.
        """
        take = self.critical_hold_transition()
        for _ in range(_OPEN_RETRY_MAX):
            try:
                await self.shard.transform(take)
            except OpaqueMismatch:
                await self._check_fence()  # raises if we really were fenced
                continue
            self.critical_hold_taken()
            return
        raise AssertionError("catalog critical hold kept moving under the writer")

    def critical_hold_transition(self) -> Callable[[ShardState], ShardState]:
        """The pure transition on `self.shard` that makes its critical hold ours: register it
        if absent, swap in our fence token (OpaqueMismatch if a newer token holds it), and
        move its since to our upper - 1."""
        assert self.token is not None, "only a writable open takes the critical hold"
        ours = (self.token.deploy_generation, self.token.epoch)
        since = self.upper - 1

        def take(state: ShardState) -> ShardState:
            state = pst.register_critical(state, CATALOG_CRITICAL_READER, ours)
            current = state.critical[CATALOG_CRITICAL_READER].opaque
            if tuple(current) > ours:
                raise OpaqueMismatch(state.shard_id, CATALOG_CRITICAL_READER, ours, current)
            return pst.compare_and_downgrade_critical(
                state, CATALOG_CRITICAL_READER, current, ours, since
            )

        return take

    def needs_critical_hold(self) -> bool:
        """Writable, opened with `defer_critical_hold`, and the hold not taken yet."""
        return self.mode is OpenMode.WRITABLE and self._defer_hold and self._critical is None

    def critical_hold_taken(self) -> None:
        """`critical_hold_transition()` committed (see `open(defer_critical_hold=True)`)."""
        self._critical = CriticalReadHandle(self.shard, CATALOG_CRITICAL_READER)

    # -- reading -------------------------------------------------------------------------------

    async def _reload(self) -> tuple[int, CatalogState, list[FenceToken]]:
        upper, rows = await _load(self.shard)
        self.loaded = (upper, rows)
        tokens = CatalogState.fence_tokens(rows)
        return upper, CatalogState.from_rows(rows), tokens

    async def _check_fence(self) -> tuple[int, CatalogState]:
        """Reload; raise (and remember) the fence error if a larger token is durable."""
        if self._fenced is not None:
            raise self._fenced
        upper, rows = await _load(self.shard)
        tokens = CatalogState.fence_tokens(rows)
        if self.token is not None and tokens and max(tokens) > self.token:
            self._fenced = fence_error(self.token, max(tokens))
            raise self._fenced
        return upper, CatalogState.from_rows(rows)

    async def sync(self) -> list[CatalogChange]:
        """Catch up with the durable catalog (read-only mode follows the leader this way)."""
        if self.mode is OpenMode.SAVEPOINT:
            return []
        head = await self.shard.upper()
        if head == self.upper:
            return []
        upper, newer = await self._check_fence()
        if self.mode is OpenMode.WRITABLE:
            raise CatalogOutOfSync(
                f"catalog upper moved from {self.upper} to {upper} without a fence"
            )
        changes = self.state.diff_to(newer)
        self.state, self.upper = newer, upper
        self._publish(changes)
        return changes

    async def follow(self) -> AsyncIterator[list[CatalogChange]]:
        """Yield each batch of changes as others commit them (read-only mode)."""
        while True:
            event = self.client.consensus.feed.event(CATALOG_SHARD)
            changes = await self.sync()
            if changes:
                yield changes
                continue
            await wait_event(event, _FOLLOW_POLL_S)

    def subscribe(self) -> asyncio.Queue[list[CatalogChange]]:
        """A queue receiving every change this handle applies (own commits and syncs)."""
        q: asyncio.Queue[list[CatalogChange]] = asyncio.Queue()
        self._subscribers.append(q)
        return q

    def _publish(self, changes: list[CatalogChange]) -> None:
        if changes:
            for q in self._subscribers:
                q.put_nowait(changes)

    # -- writing -------------------------------------------------------------------------------

    def transaction(self) -> Transaction:
        return Transaction(self.state, base_upper=self.upper)

    async def commit(self, txn: Transaction) -> int:
        """Make the transaction durable at a new catalog timestamp; returns that timestamp."""
        if self.mode is OpenMode.READ_ONLY:
            raise NotWritable("cannot write in read-only mode")
        if self._fenced is not None:
            raise self._fenced
        if txn.base_upper is not None and txn.base_upper != self.upper:
            raise CatalogOutOfSync("transaction was built on an older catalog state")
        if not txn.changes:
            return self.upper - 1
        async with self._append_lock:
            if txn.base_upper is not None and txn.base_upper != self.upper:
                raise CatalogOutOfSync("transaction was built on an older catalog state")
            ts = max(self.upper, self.clock.now_ms())
            if self.mode is OpenMode.WRITABLE:
                mismatch = await self.shard.compare_and_append(
                    _to_updates(txn.changes, ts), self.upper, ts + 1
                )
                if mismatch is not None:
                    await self._check_fence()
                    raise CatalogOutOfSync(
                        f"catalog upper is {mismatch.actual}, expected {self.upper}, and no fence"
                    )
            self.state.apply(txn.changes)
            self.upper = ts + 1
        self._publish(list(txn.changes))
        self._commits += 1
        if self.mode is OpenMode.WRITABLE and self._commits % SINCE_DOWNGRADE_EVERY == 0:
            # The commit is durable: a fence seen while moving the hold is remembered in
            # self._fenced and reported by the next operation, not by this commit.
            with contextlib.suppress(FenceError):
                await self._downgrade_since()
        return ts

    async def _downgrade_since(self) -> None:
        assert self._critical is not None and self.token is not None
        ours = (self.token.deploy_generation, self.token.epoch)
        try:
            await self._critical.compare_and_downgrade_since(ours, ours, self.upper - 1)
        except OpaqueMismatch:
            await self._check_fence()
            raise

    async def confirm_leadership(self) -> None:
        """Cheap (one consensus read when nothing changed): raises FenceError if fenced."""
        if self._fenced is not None:
            raise self._fenced
        if self.mode is not OpenMode.WRITABLE:
            return
        async with self._append_lock:
            if await self.shard.upper() == self.upper:
                return
        await self._check_fence()
        raise CatalogOutOfSync("catalog changed under the writer without a fence")

    # -- convenience ---------------------------------------------------------------------------

    def committed_user_item_ids(self) -> set[str]:
        return self.state.user_item_ids()

    def committed_user_replica_ids(self) -> set[str]:
        return self.state.user_replica_ids()

    async def committed_ids(self) -> tuple[set[str], set[str]]:
        """The durable (not in-memory) user item and replica ids: for the DDL check."""
        _, state, _ = await self._reload()
        return state.user_item_ids(), state.user_replica_ids()
