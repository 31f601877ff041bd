"""SUBSCRIBE to a plain view or a query: a transient dataflow on the session's cluster.

(Tables and materialized views are subscribed straight from their persist shard, see
`subscribe.py`.) The query is lowered (0A000 for what dataflows cannot do), installed as a
dataflow with an arrangement of its whole output (`index_key=()`) under a fresh transient id,
and streamed from one replica's `subscribe`: the first batch is the full result at the as-of,
then every change; rows are `(mz_timestamp, [mz_progressed,] mz_diff, columns...)` like a
table's, with a progress row at each batch's upper. The replica may forget history as the
subscriber consumes it (`allow_compaction`), so memory stays the size of the result. The
dataflow is dropped when the subscription ends (cursor closed, COPY cancelled, UP TO reached).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlglot
from sqlglot import exp

from twinstream.adapter import errors as E
from twinstream.adapter.errors import AdapterError
from twinstream.adapter.mviews import lower_for_create, mirror_type
from twinstream.adapter.subscribe import BOOL, INT8, parse_options
from twinstream.adapter.types import oid_of
from twinstream.controller.protocol import DataflowDesc
from twinstream.pgwire.backend import Column
from twinstream.sql import ast

if TYPE_CHECKING:
    from twinstream.adapter.coordinator import Coordinator
    from twinstream.adapter.session import AdapterSession

_transient_ids = itertools.count(1)


@dataclass(frozen=True)
class ComputeSubscribePlan:
    coord: Coordinator
    cluster_id: str
    desc: DataflowDesc
    names: tuple[str, ...]
    types: tuple[str, ...]
    progress: bool
    up_to: int | None

    def columns(self) -> list[Column]:
        cols = [Column("mz_timestamp", INT8)]
        if self.progress:
            cols.append(Column("mz_progressed", BOOL))
        cols.append(Column("mz_diff", INT8))
        cols += [Column(n, oid_of(t)) for n, t in zip(self.names, self.types, strict=True)]
        return cols

    def rows(self) -> AsyncIterator[tuple[Any, ...]]:
        return _rows(self)


def plan_compute_subscribe(
    s: AdapterSession, stmt: ast.Subscribe, cluster_id: str
) -> ComputeSubscribePlan:
    if isinstance(stmt.target, ast.QualifiedName):
        ident = ".".join(f'"{p}"' for p in stmt.target.parts)
        query: exp.Expr = sqlglot.parse_one(f"SELECT * FROM {ident}", read="postgres")
    else:
        query = stmt.target
    progress = parse_options(stmt)
    lowered, _names = lower_for_create(s.coord.index, query, s.database, s.vars.search_path())
    if not s.coord.compute.cluster_replicas(cluster_id):
        raise AdapterError(E.INVALID_PARAMETER_VALUE, "the session's cluster has no replica")
    inputs = {i: str(s.coord.index.items_by_id[i].value["shard_id"]) for i in lowered.inputs}
    desc = DataflowDesc(
        f"transient-{next(_transient_ids)}",
        lowered.plan,
        inputs,
        None,
        index_key=(),
        as_of=stmt.as_of,
    )
    types = tuple(mirror_type(t) for t in lowered.types)
    return ComputeSubscribePlan(
        s.coord, cluster_id, desc, lowered.columns, types, progress, stmt.up_to
    )


async def _rows(plan: ComputeSubscribePlan) -> AsyncIterator[tuple[Any, ...]]:
    compute = plan.coord.compute
    width = len(plan.names)
    await compute.create_dataflow(plan.cluster_id, plan.desc)
    try:
        replicas = compute.cluster_replicas(plan.cluster_id)
        if not replicas:
            raise AdapterError(E.INVALID_PARAMETER_VALUE, "the session's cluster has no replica")
        async for batch in replicas[0][1].subscribe(plan.desc.id):
            updates = sorted(batch.updates, key=lambda u: (u[1], repr(u[0])))
            for row, ts, diff in updates:
                if plan.up_to is not None and ts >= plan.up_to:
                    continue
                if plan.progress:
                    yield (ts, False, diff, *row)
                else:
                    yield (ts, diff, *row)
            if plan.progress:
                yield (batch.upper, True, None, *([None] * width))
            if plan.up_to is not None and batch.upper >= plan.up_to:
                return
            await compute.allow_compaction(plan.desc.id, batch.upper - 1)
    finally:
        await compute.drop_dataflow(plan.desc.id)
