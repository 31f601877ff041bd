"""Indexes: arrangements in the replicas that answer simple SELECTs by a peek.

`CREATE INDEX i ON obj (cols)` / `CREATE DEFAULT INDEX ON obj` (all columns) install a
dataflow on the index's cluster that reads `obj` (a table's shard, a materialized view's
output shard, or a plain view's lowered query) and arranges it by the key columns
(`DataflowDesc.index_key`). The index keys must be plain columns of `obj`, and a view must
lower (0A000 otherwise); checked before anything is created.

The fast path (`fast_select`): outside explicit transactions, a query of the shape
`SELECT * | col, ... FROM obj [WHERE k1 = v1 AND ...]` where the `k`s are exactly an index's
key columns (or no WHERE at all) and the `v`s are literals or parameters of the key's type is
answered by `peek(index, T, key)` at the read timestamp T (the peek waits until the index's
frontier passes T: strict serializable like any read), bypassing DuckDB. For an index on a
table the leader knows the table's newest write time W <= T: the contents at T equal those
at any time in [W, T], so the peek reads at the newest such time the index already has.
Anything else falls back to the engine. The coordinator lets the replicas forget index
history older than `INDEX_HISTORY_MS` behind the frontier (`allow_compaction`), so a peek at
a fresh timestamp is always answerable; one that races compaction is retried with a newer
timestamp. A replica that is frozen (its connection open, nothing answered) makes the
engine answer, like one that is down: its frontier lookup must answer within
`PEEK_REPLICA_TIMEOUT_S`, and so must one repeated at that interval while a peek waits (and
the replica's client must not have marked it unresponsive: `REPLICA_CALL_TIMEOUT_S`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlglot
from sqlglot import exp

from twinstream.adapter import errors as E
from twinstream.adapter.errors import AdapterError
from twinstream.adapter.mviews import SHARD_BACKED, lower_for_create
from twinstream.adapter.names import CatalogIndex, ItemRef
from twinstream.adapter.types import lookup, oid_of
from twinstream.compute.dataflow.plan import Get
from twinstream.controller.compute import unresponsive
from twinstream.controller.protocol import DataflowDesc, PeekError, Replica
from twinstream.persist.types import Diff, Row
from twinstream.pgwire.backend import Column, QueryResult

if TYPE_CHECKING:
    from twinstream.adapter.session import AdapterSession

log = logging.getLogger(__name__)

#: How much history (ms of timestamps) behind its frontier an index keeps for peeks.
INDEX_HISTORY_MS = 5_000
#: Peeks that lose a race with compaction are retried this often with a newer timestamp.
PEEK_RETRIES = 3
#: How long the index peek waits for a replica to answer a frontier lookup before the engine
#: answers instead: a replica that is frozen (SIGSTOP: connection open, nothing answered).
#: A live replica answers one in well under 10 ms even on the loaded VM; 2 s leaves two
#: orders of magnitude for scheduling stalls, and is what an indexed read costs extra while
#: a replica is frozen. Same bound as the caught-up check's `FRONTIERS_TIMEOUT_S`.
PEEK_REPLICA_TIMEOUT_S = 2.0

_INT_TYPES = ("int2", "int4", "int8")
_TEXT_TYPES = ("text", "varchar")
#: Output column types whose values read from persist are exactly what the engine returns
#: (numeric scales, float4 precision, blank-padded and zoned values would print differently).
_FAST_TYPES = frozenset({"bool", "int2", "int4", "int8", "float8", "text", "varchar", "date"})


def key_columns(on: ItemRef, keys: Sequence[str]) -> tuple[int, ...]:
    """Positions of the index keys in `on` (each must be a plain column)."""
    names = [str(c["name"]) for c in on.columns]
    out = []
    for key in keys:
        node = sqlglot.parse_one(key, read="postgres")
        if not isinstance(node, exp.Column) or node.table or node.name not in names:
            raise AdapterError(
                E.FEATURE_NOT_SUPPORTED, f"index keys must be columns of {on.name}, not {key}"
            )
        out.append(names.index(node.name))
    return tuple(out)


def check_indexable(index: CatalogIndex, on: ItemRef) -> None:
    """Raise (0A000, ...) if an index on `on` could not be maintained."""
    if on.type == "view":
        query = sqlglot.parse_one(str(on.value["query"]), read="postgres")
        lower_for_create(index, query, on.database, ["public"])
    elif not (on.type in SHARD_BACKED and "shard_id" in on.value):
        raise AdapterError(
            E.FEATURE_NOT_SUPPORTED,
            f"indexes on this {on.type.replace('_', ' ')} are not supported",
        )


def index_desc(index: CatalogIndex, ref: ItemRef) -> DataflowDesc:
    """The dataflow maintaining index `ref`."""
    on = index.items_by_id[str(ref.value["on_id"])]
    key = tuple(int(k) for k in ref.value["key_columns"])
    if on.type == "view":
        query = sqlglot.parse_one(str(on.value["query"]), read="postgres")
        lowered, _names = lower_for_create(index, query, on.database, ["public"])
        plan = lowered.plan
        inputs = {i: str(index.items_by_id[i].value["shard_id"]) for i in lowered.inputs}
    else:
        plan = Get(on.id, len(on.columns))
        inputs = {on.id: str(on.value["shard_id"])}
    return DataflowDesc(ref.id, plan, inputs, None, index_key=key)


def _key_value(node: exp.Expr, pg_type: str, params: Sequence[object]) -> object:
    """A literal or parameter as the arrangement keys it; raises LookupError if unsure."""
    base = lookup(pg_type).name
    if isinstance(node, exp.Parameter):
        i = int(node.this.this) - 1
        if not 0 <= i < len(params):
            raise LookupError
        value = params[i]
    elif isinstance(node, exp.Literal):
        value = node.this if node.is_string else int(node.this) if node.this.isdigit() else None
    elif isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal):
        value = -int(node.this.this) if node.this.this.isdigit() else None
    else:
        raise LookupError
    if base in _INT_TYPES and type(value) is int:
        return value
    if base in _TEXT_TYPES and isinstance(value, str):
        return value
    raise LookupError


@dataclass(frozen=True)
class _Shape:
    """A query the fast path answers: `on` read through `idx`; the key's value nodes (in
    key column order; None: the whole collection) and the output column positions."""

    on: ItemRef
    idx: ItemRef
    key_nodes: tuple[exp.Expr, ...] | None
    outputs: tuple[int, ...]
    #: the key columns' types, in key order (what `_key_value` checks a value against)
    key_types: tuple[str, ...]
    #: the result's columns (built once per statement, not per execution)
    columns: tuple[Column, ...]


#: A matched fast-path query: its shape and the key to look up (None: the whole collection).
_Key = tuple[_Shape, tuple[object, ...] | None]


def _make_shape(
    on: ItemRef, idx: ItemRef, key_nodes: tuple[exp.Expr, ...] | None, outputs: list[int]
) -> _Shape:
    cols = on.columns
    key_types = tuple(str(cols[int(k)]["type"]) for k in idx.value.get("key_columns", ()))
    columns = tuple(Column(str(cols[i]["name"]), oid_of(str(cols[i]["type"]))) for i in outputs)
    return _Shape(on, idx, key_nodes, tuple(outputs), key_types, columns)


#: (id(query), catalog version, database, search path) -> (query, shape): parsed statements
#: are cached per session, so a prepared statement is matched once, not per execution.
_SHAPES: dict[tuple[object, ...], tuple[exp.Expr, _Shape | None]] = {}
_SHAPES_MAX = 1024


def _shape(s: AdapterSession, query: exp.Expr) -> _Shape | None:
    path = tuple(s.vars.search_path())
    cache_key = (id(query), s.coord.index.version, s.database, path)
    hit = _SHAPES.get(cache_key)
    if hit is not None and hit[0] is query:
        return hit[1]
    shape = _find_shape(s, query, path)
    if len(_SHAPES) >= _SHAPES_MAX:
        _SHAPES.clear()
    _SHAPES[cache_key] = (query, shape)
    return shape


def _find_shape(s: AdapterSession, query: exp.Expr, path: tuple[str, ...]) -> _Shape | None:
    if not isinstance(query, exp.Select):
        return None
    args = query.args
    for k, v in args.items():
        if v and k not in ("expressions", "from_", "where", "kind"):
            return None
    src = args.get("from_")
    if src is None or not isinstance(src.this, exp.Table) or src.this.args.get("joins"):
        return None
    table = src.this
    if not isinstance(table.this, exp.Identifier) or table.args.get("alias"):
        return None
    parts = tuple(p for p in (table.catalog, table.db, table.name) if p)
    on = s.coord.index.resolve_item(parts, s.database, path)
    if on is None or on.type not in ("table", "materialized_view"):
        return None  # (plain views' catalog columns are untyped)
    names = [str(c["name"]) for c in on.columns]
    outputs: list[int] = []
    for e in query.expressions:
        if isinstance(e, exp.Star):
            outputs.extend(range(len(names)))
        elif isinstance(e, exp.Column) and not e.table and e.name in names:
            outputs.append(names.index(e.name))
        else:
            return None
    if any(lookup(str(on.columns[i]["type"])).name not in _FAST_TYPES for i in outputs):
        return None
    conds: dict[int, exp.Expr] = {}
    where = args.get("where")
    if where is not None:
        stack = [where.this]
        while stack:
            c = stack.pop()
            if isinstance(c, exp.And):
                stack += [c.this, c.expression]
            elif (
                isinstance(c, exp.EQ)
                and isinstance(c.this, exp.Column)
                and not c.this.table
                and c.this.name in names
            ):
                pos = names.index(c.this.name)
                if pos in conds:
                    return None
                conds[pos] = c.expression
            else:
                return None
    for idx in s.coord.index.items_by_id.values():
        if idx.type != "index" or idx.value.get("on_id") != on.id:
            continue
        key_cols = tuple(int(k) for k in idx.value.get("key_columns", ()))
        if not conds:
            return _make_shape(on, idx, None, outputs)
        if set(conds) == set(key_cols):
            return _make_shape(on, idx, tuple(conds[c] for c in key_cols), outputs)
    return None


def _match(s: AdapterSession, query: exp.Expr, params: Sequence[object]) -> _Key | None:
    """(shape, key or None) if the fast path applies."""
    shape = _shape(s, query)
    if shape is None or shape.idx.id not in s.coord.index_dataflows:
        return None
    if shape.key_nodes is None:
        return shape, None
    try:
        key = tuple(
            _key_value(node, pg_type, params)
            for node, pg_type in zip(shape.key_nodes, shape.key_types, strict=True)
        )
    except (LookupError, ValueError, AdapterError):
        return None
    return shape, key


async def peek_while_alive(
    replica: Replica, idx_id: str, ts: int, key: tuple[object, ...] | None
) -> list[tuple[Row, Diff]]:
    """`replica.peek(...)`, which may rightly wait (for a hydrating index, or its frontier to
    pass `ts`) as long as the replica is alive: while it waits, a frontier lookup every
    `PEEK_REPLICA_TIMEOUT_S` must be answered within that time, else TimeoutError."""
    peek = asyncio.create_task(replica.peek(idx_id, ts, key), name=f"index-peek-{idx_id}")
    try:
        while True:
            await asyncio.wait({peek}, timeout=PEEK_REPLICA_TIMEOUT_S)
            if peek.done():
                return peek.result()
            async with asyncio.timeout(PEEK_REPLICA_TIMEOUT_S):
                await replica.frontier(idx_id)  # answered: alive, keep waiting
            if (why := unresponsive(replica)) is not None:  # (its client gave up on it)
                raise TimeoutError(f"replica {replica.name} is not answering: {why}")
    finally:
        if not peek.done():
            peek.cancel()  # (sends the replica a cancel for the abandoned peek)
            await asyncio.wait({peek})
        if not peek.cancelled():
            peek.exception()  # retrieved: the probe's timeout is the news


async def fast_select(
    s: AdapterSession, query: exp.Expr, params: Sequence[object]
) -> QueryResult | None:
    """Answer the query by an index peek if it has the right shape (module docs), else None."""
    m = _match(s, query, params)
    if m is None:
        return None
    shape, key = m
    coord = s.coord
    idx_id = shape.idx.id
    cluster_id = str(shape.idx.value["cluster_id"])
    for attempt in range(PEEK_RETRIES):
        ts = await coord.local_read_timestamp()
        try:
            async with asyncio.timeout(PEEK_REPLICA_TIMEOUT_S):
                replica, f = await coord.compute.peek_target(cluster_id, idx_id)
            last_write = coord.table_write_ts.get(shape.on.id)
            if f is not None and last_write is not None and last_write <= ts:
                # Nothing was written to the table in (last_write, ts]: its contents at ts
                # are those at any time since last_write until a newer write commits. Any
                # time the replica already has is no older than that, so read at the newest
                # one (no wait for the index to see group commit's latest empty tick): a
                # read may return a state newer than ts, never older.
                ts = max(last_write, f.write_frontier - 1, f.as_of or 0)
            rows = await peek_while_alive(replica, idx_id, ts, key)
            break
        except TimeoutError:
            # Connected but not answering (a frozen process): the abandoned requests are
            # cancelled on the replica; the engine answers the same query without it.
            log.warning(
                "index peek at %s: replica not answering within %.1f s; using the engine",
                idx_id,
                PEEK_REPLICA_TIMEOUT_S,
            )
            return None
        except PeekError as e:
            if e.code != "compacted" or attempt == PEEK_RETRIES - 1:
                log.info("index peek failed (%s); using the engine", e)
                return None
        except ConnectionError as e:
            # The replica is gone (crashed, or ending with a fenced generation: safety cells
            # saw XX000 here). The engine answers the same query without it.
            log.info("index peek: replica unavailable (%s); using the engine", e)
            return None
    else:  # pragma: no cover - the loop breaks or returns
        return None
    if coord.mviews.is_incremental(shape.on):
        # The view's evaluation errors at the peek's time fail the read, as through the engine.
        await coord.mviews.check_errors(coord.mviews.computed_from(coord.index, [shape.on]), ts)
    coord.index_peeks += 1
    outputs = shape.outputs
    out: list[tuple[Any, ...]] = []
    for row, d in rows:
        projected = tuple(row[i] for i in outputs)
        out.extend([projected] * d)
    return QueryResult(columns=list(shape.columns), rows=out)
