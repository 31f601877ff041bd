"""The compute controller over in-process replicas: dataflows on every replica of their
cluster, frontiers per replica and as a maximum, replicas added and removed with the catalog
(killing one of two loses nothing), read-only replicas promoted in place; and the leader's
durable publication of frontiers."""

from __future__ import annotations

import asyncio

from _runtime_helpers import (
    JOIN_SQL,
    Store,
    Tables,
    assert_consistent,
    inputs_of,
    plan_of,
)

from twinstream.compute.replica import LocalReplica
from twinstream.controller.compute import ComputeController, ManagedReplica, ReplicaSpec
from twinstream.controller.frontiers import FrontierPublisher, read_published
from twinstream.controller.protocol import DataflowDesc

OUT = "mv-out"


def specs(*pairs: tuple[str, str]) -> list[ReplicaSpec]:
    return [ReplicaSpec(c, r, f"{c}-replica-{r}") for c, r in pairs]


async def test_dataflows_follow_replicas_of_their_cluster(store: Store) -> None:
    tables = Tables(await store.client())
    await tables.hold_everything(OUT)
    await tables.run(3, 10, pause_s=0)
    client = await store.client()
    built: list[str] = []

    def factory(spec: ReplicaSpec, read_only: bool) -> ManagedReplica:
        built.append(spec.replica_id)
        return LocalReplica(client, spec.name, read_only=read_only)

    ctl = ComputeController(factory, read_only=True)
    try:
        await ctl.sync_replicas(specs(("c1", "r1"), ("c1", "r2"), ("c2", "r3")))
        desc = DataflowDesc("u1", plan_of(JOIN_SQL), inputs_of(JOIN_SQL), OUT)
        await ctl.create_dataflow("c1", desc)
        await tables.run(5, 10)

        async def per_replica() -> dict[str, int]:
            return {r: f.write_frontier for r, f in (await ctl.frontiers())["u1"].items()}

        async with asyncio.timeout(30):
            while set((await per_replica()).values()) != {tables.upper}:
                await asyncio.sleep(0.01)
        assert set(await per_replica()) == {"r1", "r2"}  # not on c2's replica
        agg = await ctl.collection_frontier("u1")
        assert agg.hydrated and agg.write_frontier == tables.upper
        assert await client.open(OUT).upper() == 0  # read-only: nothing written
        await ctl.allow_writes()
        async with asyncio.timeout(30):
            while await client.open(OUT).upper() < tables.upper:
                await asyncio.sleep(0.01)
        # Kill one of the two replicas mid-stream; a new one joins and gets the dataflow.
        writing = asyncio.create_task(tables.run(20, 10))
        await asyncio.sleep(0.05)
        await ctl.sync_replicas(specs(("c1", "r2"), ("c2", "r3"), ("c1", "r4")))
        await writing
        async with asyncio.timeout(30):
            while await client.open(OUT).upper() < tables.upper:
                await asyncio.sleep(0.01)
        assert set(await per_replica()) == {"r2", "r4"}
        assert not (await ctl.replicas["r4"][1].status()).read_only  # promoted controller
        as_of = min(f.as_of for f in (await ctl.frontiers())["u1"].values() if f.as_of)
        await assert_consistent(client, plan_of(JOIN_SQL), inputs_of(JOIN_SQL), OUT, as_of)
        await ctl.drop_dataflow("u1")
        assert (await ctl.frontiers()) == {}
        for _spec, replica in ctl.replicas.values():
            assert (await replica.status()).dataflows == ()
        assert built == ["r1", "r2", "r3", "r4"]
    finally:
        await ctl.close()


async def test_published_frontiers(store: Store) -> None:
    leader = FrontierPublisher(await store.client(), store.clock)
    other = await store.client()
    assert await read_published(other) == []
    await leader.publish({("u1", "r1", 5), ("u2", "r1", 7)})
    assert await read_published(other) == [("u1", "r1", 5), ("u2", "r1", 7)]
    await leader.publish({("u1", "r1", 9), ("u2", "r1", 7)})
    assert await read_published(other) == [("u1", "r1", 9), ("u2", "r1", 7)]
    # A second publisher (say, a newer leader) takes over from whatever is there.
    successor = FrontierPublisher(await store.client(), store.clock)
    await successor.publish({("u3", "r2", 1)})
    assert await read_published(other) == [("u3", "r2", 1)]
    await leader.publish({("u1", "r1", 10)})  # loses the race once, re-reads, wins
    assert await read_published(other) == [("u1", "r1", 10)]
