"""`SourceManager`: the coordinator's storage hooks.

The coordinator treats every source output (and progress) collection like a table shard: it
creates the mirror, follows it in a read-only generation, registers it with group commit and
takes its critical read hold when it leads. This manager adds what only sources have:
- the leader's ingestion tasks (one per load-generator source), started once every output
  of the source is registered with group commit, and again on promotion;
- the status history shard behind `mz_source_statuses` (written by the leader only);
- lookups for the webhook endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from twinstream.adapter.follower import TableFollower
from twinstream.adapter.names import ItemRef
from twinstream.catalog.fence import FenceError
from twinstream.storage import generators, pg_source, status
from twinstream.storage.ingest import Ingestion, IngestionSpec, Writes
from twinstream.storage.status import SourceStatus
from twinstream.storage.upsert import StateFollower, UpsertState, UpsertWriter, take_over

if TYPE_CHECKING:
    from twinstream.adapter.coordinator import Coordinator

log = logging.getLogger(__name__)


def has_shard(ref: ItemRef) -> bool:
    """Items backed by a persist shard that the coordinator mirrors like a table."""
    return ref.type == "table" or (ref.type == "source" and "shard_id" in ref.value)


def is_upsert(ref: ItemRef) -> bool:
    """A source collection with ENVELOPE UPSERT (one row per key, the key in column 0)."""
    return (
        ref.type == "source" and "shard_id" in ref.value and ref.value.get("envelope") == "upsert"
    )


class SourceManager:
    def __init__(self, coord: Coordinator) -> None:
        self.coord = coord
        self.ingestions: dict[str, Ingestion] = {}  # root item id -> running ingestion
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._members: dict[str, set[str]] = {}  # root item id -> it and its subsources
        self._status_shard = coord.persist.open(status.STATUS_SHARD)
        self._status_follow: asyncio.Task[None] | None = None
        self._status_registered = False
        # UPSERT: a read-only generation's state followers (item id -> follower, task), the
        # states they hand over at promotion, and the leader's webhook writers.
        self._state_followers: dict[str, tuple[StateFollower, asyncio.Task[None]]] = {}
        self._handoff: dict[str, UpsertState] = {}
        self._upsert_writers: dict[str, UpsertWriter] = {}
        status.create_relations(coord.engine)
        coord.engine.execute_ddl(
            # Materialize's webhook CHECK helper (plain equality here: not constant time).
            "CREATE MACRO IF NOT EXISTS constant_time_eq(a, b) AS a = b"
        )

    @property
    def leader(self) -> bool:
        return not self.coord.config.read_only

    # -- lifecycle hooks (called by the coordinator) -------------------------------------------

    async def bootstrap(self) -> None:
        """Before any item is installed: the status history (mirror; registered if leader)."""
        shard = self._status_shard
        ncols = len(status.HISTORY_COLUMNS)
        if self.leader:
            upper = await shard.upper()
            if upper > 0:
                rows = await shard.snapshot(upper - 1)
                self.coord.engine.apply(status.HISTORY_TABLE, ncols, rows)
            await self.coord.committer.register(shard)
            self._status_registered = True
            return
        follower = TableFollower(self.coord.engine, shard, status.HISTORY_TABLE, ncols)
        assert self.coord._tg is not None
        self._status_follow = self.coord._tg.create_task(follower.run(), name="follow-statuses")

    async def installed(self, ref: ItemRef) -> None:
        """An item was installed (shards registered if we lead): start what is complete. A
        read-only generation hydrates the state of every UPSERT collection instead."""
        if not self.leader and is_upsert(ref):
            follower = StateFollower(self.coord.tables[ref.id])
            assert self.coord._tg is not None
            task = self.coord._tg.create_task(follower.run(), name=f"upsert-follow-{ref.id}")
            self._state_followers[ref.id] = (follower, task)
            return
        if not self.leader or ref.type != "source":
            return
        root = self._root_of(ref)
        if root is not None:
            await self._maybe_start(root)

    def uninstalled(self, ref: ItemRef) -> None:
        if self.leader and ref.value.get("source_type") == "postgres":
            # DROP SOURCE on the leader: release the upstream slot (after the stream ends).
            connection = self.coord.index.items_by_id.get(str(ref.value.get("connection_id")))
            if connection is not None:
                info = pg_source.conn_info(self.coord.index, connection.value)
                pub, slot = str(ref.value["publication"]), str(ref.value["slot"])
                assert self.coord._tg is not None
                self.coord._tg.create_task(pg_source.drop_slot_later(info, pub, slot))
        for root_id in [r for r, ids in self._members.items() if ref.id in ids]:
            self._stop(root_id)
        follower = self._state_followers.pop(ref.id, None)
        if follower is not None:
            follower[1].cancel()
        self._handoff.pop(ref.id, None)
        self._upsert_writers.pop(ref.id, None)

    def upsert_writer(self, item_id: str) -> UpsertWriter | None:
        """The leader's writer of an UPSERT webhook source (None until it is started)."""
        return self._upsert_writers.get(item_id)

    def upsert_hydrated(self) -> dict[str, int]:
        """item id -> keys held by the state follower (read-only generations; for tests and
        introspection)."""
        return {i: len(f.state) for i, (f, _t) in self._state_followers.items()}

    async def promoted(self) -> None:
        """We lead now (the coordinator has registered every shard): take over ingestion
        from the durable bindings the old leader left."""
        if self._status_follow is not None:
            self._status_follow.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._status_follow
            self._status_follow = None
        await self.coord.committer.register(self._status_shard)
        self._status_registered = True
        # The old leader is fenced: the hydrated UPSERT states catch up to the output shards'
        # uppers and become the new leader's (nothing is written in between).
        followers, self._state_followers = self._state_followers, {}
        for item_id, (follower, task) in followers.items():
            self._handoff[item_id] = await take_over(follower, task)
        for ref in list(self.coord.index.items_by_id.values()):
            if ref.type == "source" and self._is_root(ref):
                await self._maybe_start(ref)

    # -- statuses ------------------------------------------------------------------------------

    async def report(self, source_id: str, st: SourceStatus, error: str | None) -> None:
        """Record a status change durably (leader only), then mirror it."""
        assert self.leader and self._status_registered, "only the leader records statuses"
        row = status.history_row(
            source_id, st, error, self.coord.config.deploy_generation, self.coord.clock.now_ms()
        )
        await self.coord.committer.write({self._status_shard.shard_id: [(row, 1)]})
        self.coord.engine.apply(status.HISTORY_TABLE, len(status.HISTORY_COLUMNS), [(row, 1)])

    # -- internals -----------------------------------------------------------------------------

    def _is_root(self, ref: ItemRef) -> bool:
        return ref.value.get("source_type") in ("load-generator", "webhook", "postgres")

    def _root_of(self, ref: ItemRef) -> ItemRef | None:
        if self._is_root(ref):
            return ref
        parent = ref.value.get("parent_id")
        return None if parent is None else self.coord.index.items_by_id.get(parent)

    @staticmethod
    def _ids(root: ItemRef) -> list[str]:
        ids = [str(i) for i in dict(root.value.get("outputs", {})).values()]
        ids += [str(t["item_id"]) for t in root.value.get("tables", [])]
        if root.value.get("progress_id"):
            ids.append(str(root.value["progress_id"]))
        return ids

    def _registered(self, item_id: str) -> bool:
        shard = self.coord.tables.get(item_id)
        return shard is not None and shard.shard_id in self.coord.committer.shards

    async def _maybe_start(self, root: ItemRef) -> None:
        if root.id in self._tasks:
            return
        self._members[root.id] = {root.id, *self._ids(root)}
        kind = root.value.get("source_type")
        if kind == "webhook":
            if self._registered(root.id):
                if is_upsert(root):
                    self._upsert_writers[root.id] = UpsertWriter(
                        self.coord.tables[root.id], self._handoff.pop(root.id, None)
                    )
                self._tasks[root.id] = self._spawn(root, self._webhook_running(root))
            return
        ids = self._ids(root)
        if not all(self._registered(i) for i in ids):
            return  # the remaining outputs are installed next (same catalog transaction)

        async def report(st: SourceStatus, error: str | None) -> None:
            await self.report(root.id, st, error)

        async def write(writes: Writes) -> int:
            return await self.coord.committer.write(writes)

        if kind == "postgres":
            self._tasks[root.id] = self._spawn(root, self._postgres(root, write, report).run())
            return
        assert kind == "load-generator", kind
        v = root.value
        outputs: dict[str, Any] = dict(v["outputs"])
        upsert: dict[str, UpsertState | None] = {}
        for name, i in outputs.items():
            out_ref = self.coord.index.items_by_id.get(str(i))
            if out_ref is not None and is_upsert(out_ref):
                upsert[name] = self._handoff.pop(out_ref.id, None)
        spec = IngestionSpec(
            source_id=root.id,
            name=root.fq(),
            generator=generators.make(
                str(v["generator"]), int(v.get("keys", 0)), int(v.get("batch_size", 1))
            ),
            outputs={name: self.coord.tables[str(i)] for name, i in outputs.items()},
            progress=self.coord.tables[str(v["progress_id"])],
            tick_s=float(v["tick_ms"]) / 1000,
            upsert=upsert,
        )
        ingestion = Ingestion(spec, write, report, self.coord.clock)
        self.ingestions[root.id] = ingestion
        self._tasks[root.id] = self._spawn(root, ingestion.run())

    def _postgres(self, root: ItemRef, write: Any, report: Any) -> pg_source.PgIngestion:
        v = root.value
        connection = self.coord.index.items_by_id[str(v["connection_id"])]
        tables = {}
        for t in v["tables"]:
            table = pg_source.table_from_value(t)
            tables[table.oid] = (table, self.coord.tables[str(t["item_id"])])
        spec = pg_source.PgIngestionSpec(
            source_id=root.id,
            name=root.fq(),
            info=pg_source.conn_info(self.coord.index, connection.value),
            publication=str(v["publication"]),
            slot=str(v["slot"]),
            tables=tables,
            progress=self.coord.tables[str(v["progress_id"])],
        )
        return pg_source.PgIngestion(spec, write, report)

    async def _webhook_running(self, root: ItemRef) -> None:
        await self.report(root.id, SourceStatus.RUNNING, None)

    def _spawn(self, root: ItemRef, work: Any) -> asyncio.Task[None]:
        async def guarded() -> None:
            try:
                await work
            except FenceError:
                return
            except Exception as e:  # a bug or a dead store: the source fails, not the process
                log.exception("source %s failed", root.fq())
                with contextlib.suppress(Exception):
                    await self.report(root.id, SourceStatus.FAILED, str(e))

        assert self.coord._tg is not None
        return self.coord._tg.create_task(guarded(), name=f"source-{root.id}")

    def _stop(self, root_id: str) -> None:
        task = self._tasks.pop(root_id, None)
        self._members.pop(root_id, None)
        self.ingestions.pop(root_id, None)
        if task is not None:
            task.cancel()
