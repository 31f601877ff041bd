"""DataflowRunner + self-correcting PersistSink against live input shards.

Writers append random changes to `orders`/`customers` at timestamps 1, 2, ... while runners
maintain a materialized view into an output shard. The invariant checked everywhere: at every
time below the output shard's upper (from the runner's as-of on), the output's snapshot equals
a fresh dataflow's full recompute over the inputs' snapshots at that time — so no update is
missing or duplicated, whoever wrote it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, cast

import duckdb
import pytest
from _runtime_helpers import (
    FILTER_SQL,
    INPUTS,
    JOIN_SQL,
    Store,
    Tables,
    assert_consistent,
    inputs_of,
    output_at,
    plan_of,
    running,
)

from twinstream.compute.dataflow import Col, Constant, Filter, Get, Lit, Map, Project, call
from twinstream.compute.runtime import DataflowRunner, OutputBatch
from twinstream.persist import LocationUnavailable, PersistClient, ReadBeforeSince
from twinstream.persist.types import Row

OUT = "mv-out"


async def start_tables(store: Store, ticks: int = 5, n: int = 10) -> Tables:
    tables = Tables(await store.client())
    await tables.hold_everything(OUT, "mv-errors")
    await tables.run(ticks, n, pause_s=0)
    return tables


@pytest.mark.parametrize("sql", [FILTER_SQL, JOIN_SQL], ids=["filter", "join_group_by"])
async def test_mv_matches_recompute_at_every_time(store: Store, sql: str) -> None:
    tables = await start_tables(store)
    plan, inputs = plan_of(sql), inputs_of(sql)
    client = await store.client()
    runner = DataflowRunner(client, plan, inputs, OUT, name="mv")
    batches: list[OutputBatch] = []
    sub = runner.subscribe()
    async with running(runner):
        async with asyncio.timeout(30):
            await runner.hydrated.wait()
        assert runner.as_of == 4  # min(upper - 1) of the inputs
        await tables.run(40, 10)
        async with asyncio.timeout(30):
            await runner.wait_persisted(tables.upper)
        stats = runner.stats()
    async for b in sub:
        batches.append(b)
    checked = await assert_consistent(client, plan, inputs, OUT, 4)
    assert checked == tables.upper - 4
    assert stats["sink"]["mismatches"] == 0
    assert stats["persisted_upper"] == tables.upper
    # The subscription saw the hydration batch and then every change: it sums to the result.
    assert batches[0].lower == 4 and batches[-1].upper == tables.upper
    acc: Counter[Row] = Counter()
    for b in batches:
        for row, _t, d in b.updates:
            acc[row] += d
    assert +acc == await output_at(client, OUT, tables.upper - 1)
    if sql == JOIN_SQL:
        # And the same against DuckDB over the final contents.
        con = duckdb.connect()
        con.execute("CREATE TABLE orders (id INTEGER, cust INTEGER, amount INTEGER)")
        con.execute("CREATE TABLE customers (id INTEGER, region VARCHAR)")
        contents = tables.contents()
        con.executemany("INSERT INTO orders VALUES (?, ?, ?)", contents["orders"])
        con.executemany("INSERT INTO customers VALUES (?, ?)", contents["customers"])
        duck = Counter(tuple(r) for r in con.execute(JOIN_SQL).fetchall())
        assert duck == await output_at(client, OUT, tables.upper - 1)


async def test_two_writers_no_duplicates_and_one_killed(store: Store) -> None:
    tables = await start_tables(store)
    plan, inputs = plan_of(JOIN_SQL), inputs_of(JOIN_SQL)
    a = DataflowRunner(await store.client(), plan, inputs, OUT, name="a")
    b = DataflowRunner(await store.client(), plan, inputs, OUT, name="b")
    task_a = a.start()
    async with running(b):
        async with asyncio.timeout(30):
            await a.hydrated.wait()
            await b.hydrated.wait()
        assert a.as_of == b.as_of == 4
        await tables.run(20, 10)
        async with asyncio.timeout(30):
            await a.wait_persisted(tables.upper)
            await b.wait_persisted(tables.upper)
        killed_at = tables.upper
        task_a.cancel()  # a replica dies mid-stream
        with pytest.raises(asyncio.CancelledError):
            await task_a
        await tables.run(20, 10)
        async with asyncio.timeout(30):
            await b.wait_persisted(tables.upper)
        stats_a, stats_b = a.stats()["sink"], b.stats()["sink"]
    client = await store.client()
    await assert_consistent(client, plan, inputs, OUT, 4)
    assert (await client.open(OUT).upper()) == tables.upper > killed_at
    # Both raced for the same output; what one wrote the other did not write again.
    assert stats_a["appends"] + stats_b["appends"] > 0
    total = stats_a["updates_written"] + stats_b["updates_written"]
    single = await single_writer_volume(store, plan, inputs, 4, tables.upper)
    assert total == single, (stats_a, stats_b, single)


async def single_writer_volume(
    store: Store, plan: Any, inputs: dict[str, str], as_of: int, upper: int
) -> int:
    """Updates one runner alone writes for the same inputs (into a fresh shard)."""
    client = await store.client()
    await client.open("mv-solo").critical_reader("test-hold", 0)
    solo = DataflowRunner(client, plan, inputs, "mv-solo", as_of, name="solo")
    async with running(solo):
        async with asyncio.timeout(30):
            await solo.wait_persisted(upper)
        return int(solo.stats()["sink"]["updates_written"])


async def test_read_only_follower_bounded_then_takes_over(store: Store) -> None:
    tables = await start_tables(store)
    plan, inputs = plan_of(FILTER_SQL), inputs_of(FILTER_SQL)
    leader = DataflowRunner(await store.client(), plan, inputs, OUT, name="leader")
    follower = DataflowRunner(
        await store.client(), plan, inputs, OUT, read_only=True, name="follower"
    )
    leader_task = leader.start()
    follower.start()
    try:
        sizes: list[int] = []
        for _ in range(100):
            await tables.tick(20)
            await asyncio.sleep(0.002)
            assert follower.sink is not None
            sizes.append(len(follower.sink.correction))
        async with asyncio.timeout(30):
            await leader.wait_persisted(tables.upper)
            await follower.wait_persisted(tables.upper)
            await follower.wait_frontier(tables.upper)
        assert follower.sink is not None and leader.sink is not None
        written = leader.sink.stats.updates_written
        fstats = follower.sink.stats
        # The follower wrote nothing, yet its correction stayed small: the in-flight times.
        assert fstats.appends == 0 and fstats.updates_written == 0
        assert written > 1000
        assert fstats.max_correction <= 200, (fstats, written)
        assert len(follower.sink.correction) == 0  # both caught up: nothing to correct
        # Promote: the follower writes from now on; the old leader goes away.
        follower.allow_writes()
        await leader.stop()
        assert leader_task.done()
        await tables.run(30, 20)
        async with asyncio.timeout(30):
            await follower.wait_persisted(tables.upper)
        assert follower.sink.stats.appends > 0
        assert not follower.read_only
    finally:
        await follower.stop()
        await leader.stop()
    client = await store.client()
    await assert_consistent(client, plan, inputs, OUT, leader.as_of or 0)
    print(f"leader wrote {written}; follower correction max {fstats.max_correction}, {sizes}")


async def test_restart_resumes_from_output_upper(store: Store) -> None:
    tables = await start_tables(store)
    plan, inputs = plan_of(JOIN_SQL), inputs_of(JOIN_SQL)
    first = DataflowRunner(await store.client(), plan, inputs, OUT, name="first")
    async with running(first):
        await tables.run(15, 10)
        async with asyncio.timeout(30):
            await first.wait_persisted(tables.upper)
    stopped_at = tables.upper
    written_first = first.stats()["sink"]["updates_written"]
    await tables.run(15, 10)  # the inputs move on while no runner is up
    second = DataflowRunner(await store.client(), plan, inputs, OUT, name="second")
    async with running(second):
        async with asyncio.timeout(30):
            await second.hydrated.wait()
        # It recomputes from the output's upper, not from the inputs' (no gap, no redo).
        assert second.as_of == stopped_at - 1
        await tables.run(10, 10)
        async with asyncio.timeout(30):
            await second.wait_persisted(tables.upper)
    client = await store.client()
    await assert_consistent(client, plan, inputs, OUT, first.as_of or 0)
    assert first.as_of is not None
    single = await single_writer_volume(store, plan, inputs, first.as_of, tables.upper)
    assert written_first + second.stats()["sink"]["updates_written"] == single


async def test_sink_repairs_a_wrong_output(store: Store) -> None:
    """Rows that should not be there are retracted, missing rows are added (self-correction)."""
    tables = await start_tables(store)
    plan, inputs = plan_of(FILTER_SQL), inputs_of(FILTER_SQL)
    client = await store.client()
    out = client.open(OUT)
    good = await client.open(INPUTS["orders"]).snapshot(0)
    keep = [((r[0], r[2]), 0, d) for r, d in good if cast(int, r[2]) > 50][1:]  # one row missing
    assert await out.compare_and_append([*keep, (("bogus", 0), 0, 1)], 0, 1) is None
    runner = DataflowRunner(client, plan, inputs, OUT, name="repair")
    async with running(runner):
        await tables.run(5)
        async with asyncio.timeout(30):
            await runner.wait_persisted(tables.upper)
    assert runner.as_of == 0
    await assert_consistent(client, plan, inputs, OUT, 1)  # at 0 the bad data stays
    assert ("bogus", 0) in await output_at(client, OUT, 0)


async def test_read_only_runner_writes_nothing(store: Store) -> None:
    tables = await start_tables(store)
    plan, inputs = plan_of(FILTER_SQL), inputs_of(FILTER_SQL)
    client = await store.client()
    runner = DataflowRunner(client, plan, inputs, OUT, read_only=True, name="ro")
    async with running(runner):
        await tables.run(5)
        async with asyncio.timeout(30):
            await runner.wait_frontier(tables.upper)
        assert await client.open(OUT).upper() == 0
        assert runner.sink is not None
        # Nobody writes: the correction holds the whole desired output (the only bound).
        assert len(runner.sink.correction) > 0
        runner.allow_writes()
        async with asyncio.timeout(30):
            await runner.wait_persisted(tables.upper)
    await assert_consistent(client, plan, inputs, OUT, runner.as_of or 0)


async def test_errors_go_to_their_own_shard(store: Store) -> None:
    tables = await start_tables(store)
    orders = Get("orders", 3)
    # 100 / (amount - 50): division by zero for amount = 50.
    plan = Project(
        Map(Filter(orders, ()), (call("/", Lit(100), call("-", Col(2), Lit(50))),)), (0, 3)
    )
    client = await store.client()
    await tables.tick(0)
    o = tables.orders
    t = tables.upper
    assert await o.compare_and_append([((10_000, 1, 50), t, 1)], t, t + 1) is None
    assert await tables.customers.compare_and_append([], t, t + 1) is None
    tables.upper = t + 1
    runner = DataflowRunner(
        client, plan, {"orders": INPUTS["orders"]}, OUT, errors_shard_id="mv-errors"
    )
    async with running(runner):
        async with asyncio.timeout(30):
            await runner.wait_persisted(tables.upper)
            assert runner.errors_sink is not None
            await runner.errors_sink.wait_persisted(tables.upper)
    errors = await output_at(client, "mv-errors", tables.upper - 1)
    assert errors == Counter({("22012", "division by zero"): 1})


async def test_indeterminate_append_is_not_duplicated(store: Store) -> None:
    """An append that lands but reports LocationUnavailable: the sink must not write it twice."""
    tables = await start_tables(store)
    plan, inputs = plan_of(FILTER_SQL), inputs_of(FILTER_SQL)
    client = await store.client()
    flaky = FlakyClient(client)
    runner = DataflowRunner(flaky, plan, inputs, OUT, name="flaky")
    async with running(runner):
        await tables.run(10)
        async with asyncio.timeout(30):
            await runner.wait_persisted(tables.upper)
    assert runner.sink is not None and runner.sink.stats.indeterminate >= 1
    await assert_consistent(client, plan, inputs, OUT, runner.as_of or 0)


class FlakyClient(PersistClient):
    """Its output-shard writer's second successful CAS raises LocationUnavailable."""

    def __init__(self, inner: PersistClient) -> None:
        super().__init__(inner.consensus, inner.blob, inner.clock)
        self.fail_cas = 2

    def open(self, shard_id: str, **kw: Any) -> Any:
        shard = super().open(shard_id, **kw)
        if shard_id == OUT and kw.get("writer_id"):
            inner_consensus = shard.consensus
            client = self

            class _Flaky:
                feed = inner_consensus.feed

                def __getattr__(self, name: str) -> Any:
                    return getattr(inner_consensus, name)

                async def compare_and_set(self, key: str, expected: Any, new: Any) -> bool:
                    ok = await inner_consensus.compare_and_set(key, expected, new)
                    client.fail_cas -= ok
                    if ok and client.fail_cas == 0:
                        raise LocationUnavailable("lost the reply")
                    return ok

            shard.consensus = _Flaky()
        return shard


async def test_waits_for_empty_inputs_and_stop_releases_holds(store: Store) -> None:
    client = await store.client()
    plan, inputs = plan_of(JOIN_SQL), inputs_of(JOIN_SQL)
    runner = DataflowRunner(client, plan, inputs, OUT, name="early")
    runner.start()
    async with asyncio.timeout(30):  # the as-of is chosen (holds registered) before any read
        while runner.as_of is None:
            await asyncio.sleep(0.01)
    assert runner.as_of == 0 and not runner.hydrated.is_set()  # nothing to read yet
    tables = Tables(await store.client())
    await tables.hold_everything(OUT)
    await tables.run(3)
    async with asyncio.timeout(30):
        await runner.wait_persisted(3)
    await runner.stop()
    for shard_id in (*INPUTS.values(), OUT):
        assert (await client.open(shard_id).fetch_state()).leased == {}, shard_id
    await assert_consistent(client, plan, inputs, OUT, 0)


async def test_explicit_as_of_below_since_is_refused(store: Store) -> None:
    tables = Tables(await store.client())
    await tables.run(5, pause_s=0)
    for shard_id in INPUTS.values():  # the only holds: since moves to 3
        await tables.client.open(shard_id).leased_reader("other", 3)
    plan, inputs = plan_of(JOIN_SQL), inputs_of(JOIN_SQL)
    runner = DataflowRunner(await store.client(), plan, inputs, OUT, as_of=1)
    with pytest.raises(ReadBeforeSince):
        await runner.run()
    chosen = DataflowRunner(await store.client(), plan, inputs, OUT)
    async with running(chosen):
        async with asyncio.timeout(30):
            await chosen.hydrated.wait()
    assert chosen.as_of == 4


def test_plan_inputs_must_match_input_shards() -> None:
    plan = plan_of(JOIN_SQL)
    with pytest.raises(ValueError, match="differ"):
        DataflowRunner(None, plan, {"orders": "x"}, OUT)  # type: ignore[arg-type]


async def test_read_holds_follow_the_frontier(store: Store) -> None:
    """The leased holds move forward with the runner, so the shards can compact."""
    tables = Tables(await store.client())
    await tables.run(3, pause_s=0)
    plan, inputs = plan_of(JOIN_SQL), inputs_of(JOIN_SQL)
    client = await store.client()
    runner = DataflowRunner(client, plan, inputs, OUT, heartbeat_s=0.01, name="holds")
    async with running(runner):
        await tables.run(20, pause_s=0.005)
        async with asyncio.timeout(30):
            await runner.wait_persisted(tables.upper)
        # Our holds move every heartbeat; a persist listen moves its own hold only when idle
        # for a third of its lease (by the injected clock's monotonic time): let that pass.
        store.clock.advance(21_000)
        await asyncio.sleep(0.6)
        for shard_id in (*INPUTS.values(), OUT):
            since = (await client.open(shard_id).fetch_state()).since
            assert since >= tables.upper - 2, (shard_id, since, tables.upper)
    for shard_id in (*INPUTS.values(), OUT):
        assert (await client.open(shard_id).fetch_state()).leased == {}
    await assert_consistent(client, plan, inputs, OUT, tables.upper - 1)


async def test_constant_plan_without_inputs(store: Store) -> None:
    client = await store.client()
    plan = Constant(((("a", 1), 2),), 2)
    runner = DataflowRunner(client, plan, {}, OUT, name="const")
    async with running(runner):
        async with asyncio.timeout(30):
            await runner.wait_persisted(1)
    assert runner.as_of == 0
    assert await output_at(client, OUT, 0) == Counter({("a", 1): 2})
