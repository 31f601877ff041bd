"""SUBSCRIBE over tables and materialized views: the snapshot at the as-of, then every change.

Rows are `(mz_timestamp, mz_diff, columns...)`, or with `WITH (PROGRESS)`
`(mz_timestamp, mz_progressed, mz_diff, columns...)` plus a progress row (columns NULL) each
time the frontier moves. Served straight from the table's (or the view's output) persist
shard (a listen with a leased read hold), so it works on a read-only generation too. Plain
views and queries run as transient dataflows (`subscribe_compute.py`).

A materialized view's evaluation errors end the subscription (`mviews.SubscriptionErrors`):
each batch of the listen is sent only once its errors, and those of the views it is computed
from, are known up to the batch's upper and absent.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from twinstream.adapter import errors as E
from twinstream.adapter.errors import AdapterError
from twinstream.adapter.mviews import SubscriptionErrors
from twinstream.adapter.names import ItemRef
from twinstream.persist import Progress, Shard, Updates
from twinstream.pgwire.backend import Column
from twinstream.sql import ast

INT8 = 20
BOOL = 16


@dataclass(frozen=True)
class SubscribePlan:
    ref: ItemRef
    shard: Shard
    progress: bool
    as_of: int | None
    up_to: int | None
    #: The evaluation errors that end it (a materialized view's); None for a table.
    errors: SubscriptionErrors | None = None

    def columns(self) -> list[Column]:
        from twinstream.adapter.types import oid_of

        cols = [Column("mz_timestamp", INT8)]
        if self.progress:
            cols.append(Column("mz_progressed", BOOL))
        cols.append(Column("mz_diff", INT8))
        cols += [Column(c["name"], oid_of(c["type"])) for c in self.ref.columns]
        return cols

    def rows(self) -> AsyncIterator[tuple[Any, ...]]:
        return subscribe_rows(self)


def parse_options(stmt: ast.Subscribe) -> bool:
    """Check the options; returns whether PROGRESS was asked for."""
    progress = False
    for opt in stmt.options:
        if opt.name == "progress":
            progress = opt.value is True or str(opt.value).lower() in ("true", "on")
        elif opt.name != "snapshot" or opt.value is not True:
            raise AdapterError(
                E.FEATURE_NOT_SUPPORTED, f"SUBSCRIBE option {opt.name.upper()} is not supported"
            )
    if stmt.envelope is not None:
        raise AdapterError(E.FEATURE_NOT_SUPPORTED, "SUBSCRIBE ... ENVELOPE is not supported yet")
    return progress


def plan_subscribe(
    stmt: ast.Subscribe, ref: ItemRef, shard: Shard, errors: SubscriptionErrors | None = None
) -> SubscribePlan:
    """A table or materialized view, read from `shard`."""
    return SubscribePlan(ref, shard, parse_options(stmt), stmt.as_of, stmt.up_to, errors)


async def subscribe_rows(plan: SubscribePlan) -> AsyncIterator[tuple[Any, ...]]:
    shard = plan.shard
    width = len(plan.ref.columns)
    upper = await shard.upper()
    as_of = plan.as_of if plan.as_of is not None else max(upper - 1, 0)
    if upper == 0:
        as_of = 0

    def row(ts: int, diff: int, values: tuple[Any, ...]) -> tuple[Any, ...]:
        if plan.progress:
            return (ts, False, diff, *values)
        return (ts, diff, *values)

    if plan.errors is not None:
        await plan.errors.check(as_of + 1)
    if upper > as_of:
        for values, diff in sorted(await shard.snapshot(as_of), key=lambda r: repr(r[0])):
            yield row(as_of, diff, tuple(values))
    if plan.progress:
        yield (as_of + 1, True, None, *([None] * width))
    listen = shard.listen(as_of)
    pending: list[tuple[Any, ...]] = []
    try:
        async for event in listen:
            if isinstance(event, Updates):
                for values, ts, diff in event.updates:
                    if plan.up_to is not None and ts >= plan.up_to:
                        continue
                    pending.append(row(ts, diff, tuple(values)))
            elif isinstance(event, Progress):
                # The listen yields a batch's updates and then its progress at once: held
                # back until then, they wait only for the errors below the same upper.
                if plan.errors is not None:
                    await plan.errors.check(event.upper)
                for r in pending:
                    yield r
                pending = []
                if plan.progress:
                    yield (event.upper, True, None, *([None] * width))
                if plan.up_to is not None and event.upper >= plan.up_to:
                    return
    finally:
        with contextlib.suppress(Exception):
            await listen.aclose()  # type: ignore[attr-defined]
