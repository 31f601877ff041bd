"""`LocalReplica` implements the controller's `Replica` protocol over `DataflowRunner`s:
idempotent creation (reconciliation keeps dataflows), frontiers and hydration, read-only sinks
promoted in place, and peeks / subscriptions of arranged collections at exact times."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from _runtime_helpers import (
    FILTER_SQL,
    JOIN_SQL,
    Store,
    Tables,
    assert_consistent,
    inputs_of,
    output_at,
    plan_of,
    recompute,
)

from twinstream.compute.replica import LocalReplica
from twinstream.controller.protocol import DataflowDesc, PeekError, Replica
from twinstream.persist.types import Row

OUT = "mv-out"


async def start_tables(store: Store, ticks: int = 3) -> Tables:
    tables = Tables(await store.client())
    await tables.hold_everything(OUT)
    await tables.run(ticks, 10, pause_s=0)
    return tables


def mv_desc(sql: str = JOIN_SQL, out: str = OUT) -> DataflowDesc:
    return DataflowDesc("u1", plan_of(sql), inputs_of(sql), out)


async def test_mv_dataflow_reconciles_and_reports_frontiers(store: Store) -> None:
    tables = await start_tables(store)
    client = await store.client()
    replica = LocalReplica(client, "r1")
    assert isinstance(replica, Replica)
    try:
        await replica.create_dataflow(mv_desc())
        await replica.create_dataflow(mv_desc())  # equal desc: kept, not rebuilt
        assert (await replica.status()).builds == 1
        await tables.run(10, 10)

        async def caught_up() -> bool:
            f = (await replica.frontiers())["u1"]
            return f.hydrated and f.write_frontier == tables.upper

        async with asyncio.timeout(30):
            while not await caught_up():
                await asyncio.sleep(0.01)
        as_of = (await replica.frontiers())["u1"].as_of
        assert as_of is not None
        # the one-collection lookup the index fast path uses agrees with the full map
        assert await replica.frontier("u1") == (await replica.frontiers())["u1"]
        assert await replica.frontier("nope") is None
        out_upper = await client.open(OUT).upper()
        async with asyncio.timeout(30):
            while out_upper < tables.upper:
                await asyncio.sleep(0.01)
                out_upper = await client.open(OUT).upper()
        await assert_consistent(client, plan_of(JOIN_SQL), inputs_of(JOIN_SQL), OUT, as_of)
        # A different desc replaces the dataflow.
        await replica.create_dataflow(mv_desc(FILTER_SQL, "mv-2"))
        status = await replica.status()
        assert status.builds == 2 and status.dataflows == ("u1",) and not status.failures
        await replica.drop_dataflow("u1")
        await replica.drop_dataflow("u1")  # unknown ids are ignored
        assert (await replica.status()).dataflows == ()
        assert await replica.frontiers() == {}
    finally:
        await replica.close()


async def test_read_only_replica_writes_nothing_until_allowed(store: Store) -> None:
    tables = await start_tables(store)
    client = await store.client()
    replica = LocalReplica(client, "r1", read_only=True)
    try:
        await replica.create_dataflow(mv_desc())
        await tables.run(5, 10)

        async def frontier() -> int:
            return (await replica.frontiers())["u1"].write_frontier

        async with asyncio.timeout(30):
            while await frontier() < tables.upper:
                await asyncio.sleep(0.01)
        assert await client.open(OUT).upper() == 0
        assert (await replica.status()).read_only
        as_of = (await replica.frontiers())["u1"].as_of
        assert as_of is not None
        await replica.allow_writes()
        assert not (await replica.status()).read_only
        async with asyncio.timeout(30):
            while await client.open(OUT).upper() < tables.upper:
                await asyncio.sleep(0.01)
        await assert_consistent(client, plan_of(JOIN_SQL), inputs_of(JOIN_SQL), OUT, as_of)
    finally:
        await replica.close()


async def test_peek_and_subscribe_an_index(store: Store) -> None:
    tables = await start_tables(store)
    client = await store.client()
    replica = LocalReplica(client, "r1")
    plan, inputs = plan_of(FILTER_SQL), inputs_of(FILTER_SQL)
    idx = DataflowDesc("i1", plan, inputs, None, index_key=(0,))
    try:
        await replica.create_dataflow(idx)
        await replica.create_dataflow(mv_desc())
        with pytest.raises(PeekError) as info:
            await replica.peek("u1", 0)
        assert info.value.code == "not_arranged"
        with pytest.raises(PeekError) as info:
            await replica.peek("nope", 0)
        assert info.value.code == "unknown"
        await tables.run(10, 10)
        shards = {n: client.open(s) for n, s in inputs.items()}
        first = (await replica.frontiers())["i1"].as_of
        assert first is not None
        for t in range(first, tables.upper):
            async with asyncio.timeout(30):
                got = await replica.peek("i1", t)
            expected = recompute(plan, {n: await s.snapshot(t) for n, s in shards.items()}, t)
            assert Counter(dict(got)) == expected, t
        # A point lookup by the index key (order id).
        last = tables.upper - 1
        some_id = next(iter(tables.live_orders))
        got = await replica.peek("i1", last, (some_id,))
        row = tables.live_orders[some_id]
        assert got == ([((row[0], row[2]), 1)] if row[2] > 50 else [])
        # A subscription: the contents at the earliest held time, then changes; it sums to a peek.
        acc: Counter[Row] = Counter()
        sub = replica.subscribe("i1")
        async with asyncio.timeout(30):
            async for batch in sub:
                for r, _t, d in batch.updates:
                    acc[r] += d
                if batch.upper >= tables.upper:
                    break
        assert +acc == Counter(dict(await replica.peek("i1", last)))
        # Compaction: older times become unreadable.
        await replica.allow_compaction("i1", last)
        with pytest.raises(PeekError) as info:
            await replica.peek("i1", first)
        assert info.value.code == "compacted"
        assert Counter(dict(await replica.peek("i1", last))) == +acc
        # An MV still matches its query at the end.
        async with asyncio.timeout(30):
            while await client.open(OUT).upper() < tables.upper:
                await asyncio.sleep(0.01)
        assert await output_at(client, OUT, last) == recompute(
            plan_of(JOIN_SQL),
            {n: await client.open(s).snapshot(last) for n, s in inputs_of(JOIN_SQL).items()},
            last,
        )
    finally:
        await replica.close()


async def test_a_late_subscriber_replays_the_errors(store: Store) -> None:
    """A subscription taken after hydration is caught up from the arrangement: the errors
    come with it (a SUBSCRIBE ends with them), at the same times as the rows would."""
    tables = await start_tables(store)
    client = await store.client()
    replica = LocalReplica(client, "r1")
    sql = "SELECT id, 1 / (id - id) AS q FROM orders"  # every order fails
    desc = DataflowDesc("t1", plan_of(sql), inputs_of(sql), None, index_key=())
    try:
        await replica.create_dataflow(desc)
        await tables.run(5, 10)
        async with asyncio.timeout(30):
            while (await replica.frontiers())["t1"].write_frontier < tables.upper:
                await asyncio.sleep(0.01)
        errors: Counter[Row] = Counter()
        async with asyncio.timeout(30):
            async for batch in replica.subscribe("t1"):
                assert batch.updates == [], "no row evaluates"
                for e, _t, d in batch.errors:
                    errors[tuple(e)] += d
                if batch.upper >= tables.upper:
                    break
        assert +errors == Counter({("22012", "division by zero"): len(tables.live_orders)})
    finally:
        await replica.close()
