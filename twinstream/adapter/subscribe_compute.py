"""SUBSCRIBE to a plain view or a query: a transient dataflow on the session's cluster.

(Tables and materialized views are subscribed straight from their persist shard, see
`subscribe.py`.) The query is lowered (0A000 for what dataflows cannot do), installed as a
dataflow with an arrangement of its whole output (`index_key=()`) under a fresh transient id,
and streamed from one replica's `subscribe`: the first batch is the full result at the as-of,
then every change; rows are `(mz_timestamp, [mz_progressed,] mz_diff, columns...)` like a
table's, with a progress row at each batch's upper. The replica may forget history as the
subscriber consumes it (`allow_compaction`), so memory stays the size of the result. The
dataflow is dropped when the subscription ends (cursor closed, COPY cancelled, UP TO reached).

Evaluation errors end the subscription before the batch that has them is sent: the
dataflow's own (a batch's `errors`, accumulated: `1/x` over a row with `x = 0`) and those of
the materialized views it reads (`mviews.SubscriptionErrors`, as for a view's shard).
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
from twinstream.adapter.mviews import SubscriptionErrors, lower_for_create, mirror_type
from twinstream.adapter.subscribe import BOOL, INT8, parse_options
from twinstream.adapter.types import oid_of
from twinstream.controller.protocol import DataflowDesc
from twinstream.persist.types import Diff, Row, Update
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
    #: The errors of the materialized views it reads.
    errors: SubscriptionErrors

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
    mviews = s.coord.mviews
    reads = [s.coord.index.items_by_id[i] for i in lowered.inputs]
    errors = SubscriptionErrors(mviews, mviews.computed_from(s.coord.index, reads))
    return ComputeSubscribePlan(
        s.coord, cluster_id, desc, lowered.columns, types, progress, stmt.up_to, errors
    )


def _own_error(counts: dict[Row, Diff], errors: list[Update]) -> tuple[str, str] | None:
    """Apply a batch's error updates to `counts` time by time; the first (smallest) error
    present at any of its times, if any."""
    found: tuple[str, str] | None = None
    by_time: dict[int, list[tuple[Row, Diff]]] = {}
    for err, ts, diff in errors:
        by_time.setdefault(ts, []).append((tuple(err), diff))
    for ts in sorted(by_time):
        for err, diff in by_time[ts]:
            n = counts.get(err, 0) + diff
            if n:
                counts[err] = n
            else:
                counts.pop(err, None)
        present = [e for e, n in counts.items() if n > 0]
        if found is None and present:
            first = min(present)
            found = (str(first[0]), str(first[1]))
    return found


async def _rows(plan: ComputeSubscribePlan) -> AsyncIterator[tuple[Any, ...]]:
    compute = plan.coord.compute
    width = len(plan.names)
    await compute.create_dataflow(plan.cluster_id, plan.desc)
    try:
        replicas = compute.cluster_replicas(plan.cluster_id)
        if not replicas:
            raise AdapterError(E.INVALID_PARAMETER_VALUE, "the session's cluster has no replica")
        own: dict[Row, Diff] = {}
        async for batch in replicas[0][1].subscribe(plan.desc.id):
            failed = _own_error(own, batch.errors)
            if failed is not None:
                raise AdapterError(*failed)
            await plan.errors.check(batch.upper)
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
