"""Materialized views in the adapter: lowering at CREATE, dataflows on the compute controller,
and the output shard mirrored into the query engine for reads.

- `lower_for_create` lowers the view's query (`twinstream.compute.lower`) against the catalog
  before anything is created: an unsupported construct is 0A000 naming it, other lowering
  errors keep their SQLSTATE. The names the query used are stored with the item (`names`:
  `[*parts, item_id]`), so a restarted generation re-lowers the same query against the same
  items (`relower`) whatever its search path says.
- `MaterializedViews.install` creates the view's mirror table in DuckDB, follows the output
  shard into it (a `TableFollower`, as a read-only generation follows tables; here in every
  generation, since the output is written by a replica, not by this process) and creates the
  dataflow on every replica of its cluster (`ComputeController`). Its inputs are table
  shards and upstream views' output shards.
- `wait_readable` is the read barrier: a read at timestamp T waits until every view it reads
  has mirrored its output past T (strict serializable: never older than an acknowledged
  write), or fails after `MV_READ_TIMEOUT_S` naming the view and how far it got.
- Evaluation errors (`adapter/view_errors.py`): the dataflow writes its `$errors` collection
  to the view's errors shard; a read at T fails with the error while the view, or a view it
  is computed from, has one at T. A SUBSCRIBE ends with it (`SubscriptionErrors`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import sqlglot
from sqlglot import exp

from twinstream.adapter import errors as E
from twinstream.adapter.engine import QueryEngine, fqn
from twinstream.adapter.errors import AdapterError
from twinstream.adapter.follower import TableFollower
from twinstream.adapter.names import SYSTEM_SCHEMAS, CatalogIndex, ItemRef
from twinstream.adapter.temporary import is_temporary_id
from twinstream.adapter.types import lookup
from twinstream.adapter.view_errors import ViewErrors, errors_shard_id
from twinstream.compute.lower import Lowered, LoweringError, Relation, Unsupported, View, lower
from twinstream.controller.compute import ComputeController
from twinstream.controller.protocol import DataflowDesc
from twinstream.persist import PersistClient

log = logging.getLogger(__name__)

#: How long a read waits for a materialized view to catch up with its timestamp.
MV_READ_TIMEOUT_S = 30.0

#: Item types stored in a persist shard of their own (readable as a dataflow input).
SHARD_BACKED = ("table", "materialized_view", "source")


def output_shard_id(item_id: str) -> str:
    return f"mv-{item_id}"


def _relation_or_view(ref: ItemRef) -> Relation | View:
    if ref.type == "view":
        query = sqlglot.parse_one(str(ref.value["query"]), read="postgres")
        return View(ref.id, query, tuple(str(c["name"]) for c in ref.columns))
    if ref.type in SHARD_BACKED and "shard_id" in ref.value:
        return Relation.from_columns(ref.id, ref.columns)
    raise Unsupported(f"materialized views over {ref.type.replace('_', ' ')}s are not supported")


def lower_for_create(
    index: CatalogIndex, query: exp.Expr, database: str, search_path: Sequence[str]
) -> tuple[Lowered, list[list[str]]]:
    """Lower a new view's query; returns it and the names it resolved (see module docs)."""
    names: list[list[str]] = []

    def resolve(parts: tuple[str, ...]) -> Relation | View | None:
        if len(parts) >= 2 and parts[-2] in SYSTEM_SCHEMAS:
            raise Unsupported(f"materialized views over system catalog {'.'.join(parts)}")
        ref = index.resolve_item(parts, database, search_path)
        if ref is None:
            return None
        if is_temporary_id(ref.id):  # no shard: a dataflow cannot read it
            raise AdapterError(
                "0A000",
                f'maintained dataflows cannot depend on temporary {ref.type} "{ref.name}"',
            )
        names.append([*parts, ref.id])
        return _relation_or_view(ref)

    try:
        lowered = lower(query, resolve)
    except LoweringError as e:
        raise AdapterError(e.sqlstate, e.message) from None
    return lowered, names


def relower(index: CatalogIndex, ref: ItemRef) -> Lowered:
    """Lower a stored view again (boot, reconcile), by the names stored with it."""
    by_name = {tuple(n[:-1]): n[-1] for n in ref.value.get("names", [])}

    def resolve(parts: tuple[str, ...]) -> Relation | View | None:
        item_id = by_name.get(parts)
        dep = index.items_by_id.get(item_id) if item_id is not None else None
        return None if dep is None else _relation_or_view(dep)

    query = sqlglot.parse_one(str(ref.value["query"]), read="postgres")
    return lower(query, resolve)


def mirror_type(pg_type: str) -> str:
    """The catalog type of an output column (lowering's `unknown` literals are text)."""
    try:
        lookup(pg_type)
    except AdapterError:
        return "text"
    return pg_type


class MaterializedViews:
    """The adapter side of materialized views (see the module docstring)."""

    def __init__(
        self, engine: QueryEngine, persist: PersistClient, compute: ComputeController
    ) -> None:
        self.engine = engine
        self.persist = persist
        self.compute = compute
        #: item id -> the follower mirroring its output shard into the engine.
        self.mirrors: dict[str, TableFollower] = {}
        #: item id -> its evaluation errors and the follower of its errors shard.
        self.errors: dict[str, tuple[ViewErrors, TableFollower]] = {}
        self._tasks: dict[str, list[asyncio.Task[None]]] = {}

    @staticmethod
    def is_incremental(ref: ItemRef) -> bool:
        """Created with an output shard (older catalogs stored DuckDB views)."""
        return ref.type == "materialized_view" and "shard_id" in ref.value

    async def install(self, index: CatalogIndex, ref: ItemRef, tg: asyncio.TaskGroup) -> None:
        cols = [(str(c["name"]), str(c["type"])) for c in ref.columns]
        self.engine.create_table(ref.database, ref.schema, ref.name, cols)
        shard = self.persist.open(str(ref.value["shard_id"]))
        follower = TableFollower(
            self.engine, shard, fqn(ref.database, ref.schema, ref.name), len(cols)
        )
        self.mirrors[ref.id] = follower
        errors_shard = errors_shard_id(str(ref.value["shard_id"]))
        errors = ViewErrors(ref.name)
        errors_follower = TableFollower(errors, self.persist.open(errors_shard), "$errors", 2)
        self.errors[ref.id] = (errors, errors_follower)
        self._tasks[ref.id] = [
            tg.create_task(follower.run(), name=f"mirror-{ref.id}"),
            tg.create_task(errors_follower.run(), name=f"errors-{ref.id}"),
        ]
        lowered = relower(index, ref)
        inputs = {i: str(index.items_by_id[i].value["shard_id"]) for i in lowered.inputs}
        desc = DataflowDesc(
            ref.id, lowered.plan, inputs, str(ref.value["shard_id"]), errors_shard=errors_shard
        )
        await self.compute.create_dataflow(str(ref.value["cluster_id"]), desc)

    async def uninstall(self, ref: ItemRef) -> None:
        await self.compute.drop_dataflow(ref.id)
        self.mirrors.pop(ref.id, None)
        self.errors.pop(ref.id, None)
        for task in self._tasks.pop(ref.id, []):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.engine.drop_relation("TABLE", ref.database, ref.schema, ref.name)

    def read_set(self, index: CatalogIndex, deps: Iterable[ItemRef]) -> list[ItemRef]:
        """The incremental materialized views a query over `deps` reads (through views)."""
        out: dict[str, ItemRef] = {}
        stack = list(deps)
        seen: set[str] = set()
        while stack:
            ref = stack.pop()
            if ref.id in seen:
                continue
            seen.add(ref.id)
            if self.is_incremental(ref):
                out[ref.id] = ref
            elif ref.type == "view":
                for d in ref.value.get("dependencies", []):
                    dep = index.items_by_id.get(d)
                    if dep is not None:
                        stack.append(dep)
        return list(out.values())

    def computed_from(self, index: CatalogIndex, refs: Iterable[ItemRef]) -> list[ItemRef]:
        """`refs` and every incremental view they are computed from (their dataflows read
        those views' output shards), transitively: whose errors a read of `refs` reports."""
        out: dict[str, ItemRef] = {}
        stack = list(refs)
        while stack:
            ref = stack.pop()
            if ref.id in out or not self.is_incremental(ref):
                continue
            out[ref.id] = ref
            for name in ref.value.get("names", []):
                dep = index.items_by_id.get(str(name[-1]))
                if dep is not None:
                    stack.append(dep)
        return list(out.values())

    async def wait_readable(
        self,
        refs: Sequence[ItemRef],
        ts: int,
        timeout_s: float = MV_READ_TIMEOUT_S,
        *,
        errors_of: Sequence[ItemRef] = (),
    ) -> None:
        """Wait until every view in `refs` has mirrored its output past `ts` (module docs);
        then, once their errors (and those of `errors_of`, the views they are computed from)
        are known at `ts`, raise the first view error found."""
        for ref in refs:
            follower = self.mirrors.get(ref.id)
            if follower is None:
                raise AdapterError(E.UNDEFINED_TABLE, f'materialized view "{ref.name}" is gone')
            await self.wait_follower(ref, follower, ts, timeout_s)
        await self.check_errors([*refs, *errors_of], ts, timeout_s)

    async def check_errors(
        self, refs: Sequence[ItemRef], ts: int, timeout_s: float = MV_READ_TIMEOUT_S
    ) -> None:
        """Raise the evaluation error a view in `refs` has at `ts`, if any."""
        for _ref, errors in await self.errors_known_at(refs, ts, timeout_s):
            errors.check()

    async def errors_known_at(
        self, refs: Sequence[ItemRef], ts: int, timeout_s: float
    ) -> list[tuple[ItemRef, ViewErrors]]:
        """The errors of each view in `refs` (once each), after waiting until they are known
        at `ts`; views without errors to follow are left out."""
        out: dict[str, tuple[ItemRef, ViewErrors]] = {}
        for ref in refs:
            entry = self.errors.get(ref.id)
            if entry is None or ref.id in out:
                continue
            errors, follower = entry
            if not ref.value.get("errors_shard") and follower.frontier == 0:
                # Created before errors shards existed and never written: its replicas (a
                # leader of an older version, during an upgrade) write no errors. Its output
                # alone is the answer. Views created since are flagged, and a read waits for
                # their errors shard (the local frontier alone raced with the first write).
                continue
            await self.wait_follower(ref, follower, ts, timeout_s, what="errors of ")
            out[ref.id] = (ref, errors)
        return list(out.values())

    async def wait_follower(
        self, ref: ItemRef, follower: TableFollower, ts: int, timeout_s: float, what: str = ""
    ) -> None:
        if follower.frontier > ts:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await follower.wait_frontier(ts + 1)
        except TimeoutError:
            raise AdapterError(
                E.QUERY_CANCELED,
                f'{what}materialized view "{ref.name}" did not catch up with the read '
                f"timestamp {ts} within {timeout_s:g} s (its frontier is {follower.frontier})",
                hint="Check that its cluster has a running replica "
                "(mz_cluster_replica_frontiers, mz_hydration_statuses).",
            ) from None

    def stats(self) -> dict[str, Any]:
        return {id: f.frontier for id, f in self.mirrors.items()}


class SubscriptionErrors:
    """The evaluation errors a SUBSCRIBE reports: those of `refs` (the views it reads and
    every view they are computed from), from the errors followers environmentd runs anyway
    (no read of persist of its own: a check whose follower is past the time is in memory).

    `start` fails if an error is present at the read timestamp, as SELECT does. It waits
    for nothing unless a follower shows an error (a SUBSCRIBE to a view without errors starts
    as before, at the view's upper, even if the view lags); then, since that error may be
    gone by the read timestamp (the row was just deleted), it waits like SELECT until the
    views' errors and outputs are known there, so the subscription's as-of is not older. The
    subscription calls `check(as_of + 1)` before its snapshot and `check(upper)` before each
    batch: once every follower is past `upper - 1`, it fails if an error is present, or was
    present at some time since `start` (`ViewErrors.episodes`), so the subscription ends with
    it before its rows below `upper` are sent."""

    def __init__(self, mviews: MaterializedViews, refs: Sequence[ItemRef]) -> None:
        self.mviews = mviews
        self.refs = list(refs)
        self._episodes: dict[str, int] = {}

    async def start(
        self, read_timestamp: Callable[[], Awaitable[int]], timeout_s: float = MV_READ_TIMEOUT_S
    ) -> None:
        if any(errors.first() is not None for _ref, errors in self._followed()):
            ts = await read_timestamp()
            for _ref, errors in await self.mviews.errors_known_at(self.refs, ts, timeout_s):
                errors.check()
            for ref in self.refs:
                mirror = self.mviews.mirrors.get(ref.id)
                if mirror is not None:
                    await self.mviews.wait_follower(ref, mirror, ts, timeout_s)
        for ref, errors in self._followed():
            self._episodes.setdefault(ref.id, errors.episodes)

    def _followed(self) -> list[tuple[ItemRef, ViewErrors]]:
        """The errors of `refs` that are followed, as known now (no waiting)."""
        out = []
        for ref in self.refs:
            entry = self.mviews.errors.get(ref.id)
            if entry is None:
                continue
            errors, follower = entry
            if not ref.value.get("errors_shard") and follower.frontier == 0:
                continue  # not written (yet): see `errors_known_at`
            out.append((ref, errors))
        return out

    async def check(self, upper: int, timeout_s: float = MV_READ_TIMEOUT_S) -> None:
        if upper <= 0:
            return
        for ref, errors in await self.mviews.errors_known_at(self.refs, upper - 1, timeout_s):
            errors.check(since_episode=self._episodes.setdefault(ref.id, errors.episodes))
