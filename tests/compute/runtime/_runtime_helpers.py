"""Helpers of the runtime tests: persist stores, table writers, plans and the consistency check.

Two tables, as the coordinator would store them (one shard each, both uppers advanced
together by one `compare_and_append_many` per timestamp):

- `orders(id int4, cust int4, amount int4)` in shard `t-orders`
- `customers(id int4, region text)` in shard `t-customers`

`Tables` writes random inserts, deletes and updates at timestamps 1, 2, 3, ...; it registers a
critical read hold at 0 on every shard it knows, so that the check can snapshot any time.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlglot

from twinstream.clock import ManualClock
from twinstream.compute.dataflow import Dataflow
from twinstream.compute.dataflow.plan import Plan
from twinstream.compute.lower import Relation, lower
from twinstream.compute.runtime import DataflowRunner
from twinstream.persist import PersistClient, Shard
from twinstream.persist.fileblob import FileBlob
from twinstream.persist.mem import MemBlob, MemConsensus
from twinstream.persist.sqlite import SqliteConsensus
from twinstream.persist.types import Row, Update

ORDERS = Relation("orders", ("id", "cust", "amount"), ("int4", "int4", "int4"))
CUSTOMERS = Relation("customers", ("id", "region"), ("int4", "text"))
INPUTS = {"orders": "t-orders", "customers": "t-customers"}

FILTER_SQL = "SELECT id, amount FROM orders WHERE amount > 50"
JOIN_SQL = (
    "SELECT c.region, count(*) AS n, sum(o.amount) AS total "
    "FROM orders o JOIN customers c ON o.cust = c.id GROUP BY c.region"
)


def plan_of(sql: str) -> Plan:
    rels = {"orders": ORDERS, "customers": CUSTOMERS}
    return lower(sqlglot.parse_one(sql, read="postgres"), lambda p: rels.get(p[-1])).plan


def inputs_of(plan_sql: str) -> dict[str, str]:
    low = lower(
        sqlglot.parse_one(plan_sql, read="postgres"),
        lambda p: {"orders": ORDERS, "customers": CUSTOMERS}.get(p[-1]),
    )
    return {rel: INPUTS[rel] for rel in low.inputs}


class Store:
    """One persist location (`mem`, `sqlite` + file blobs, or `postgres` at `url`);
    `client()` opens another client on it (one per simulated process)."""

    def __init__(self, kind: str, root: Path, url: str | None = None) -> None:
        self.kind = kind
        self.root = root
        self.url = url
        self.clock = ManualClock()
        self._mem = (MemConsensus(), MemBlob())
        self._clients: list[PersistClient] = []

    async def client(self) -> PersistClient:
        if self.kind == "mem":
            c = PersistClient(self._mem[0], self._mem[1], self.clock)
        elif self.kind == "postgres":
            assert self.url is not None
            c = PersistClient.from_urls(self.url, self.url, self.clock)
            await c.start_watching()
        else:
            c = PersistClient(
                SqliteConsensus(self.root / "consensus.db"),
                FileBlob(self.root / "blob"),
                self.clock,
            )
            await c.start_watching()
        self._clients.append(c)
        return c

    async def close(self) -> None:
        if self.kind != "mem":
            for c in self._clients:
                await c.close()


class Tables:
    """Random changes to `orders` and `customers`, one timestamp per `tick`."""

    def __init__(self, client: PersistClient, seed: int = 1, *, customers: int = 20) -> None:
        self.client = client
        self.rng = random.Random(seed)
        self.orders = client.open(INPUTS["orders"])
        self.customers = client.open(INPUTS["customers"])
        self.upper = 0
        self.n_customers = customers
        self.live_orders: dict[int, Row] = {}
        self.live_customers: dict[int, Row] = {}
        self.next_id = 0
        self.updates_written = 0

    async def hold_everything(self, *extra: str) -> None:
        """Critical holds at 0 on the inputs and `extra` shards: every time stays readable."""
        for shard_id in (*INPUTS.values(), *extra):
            await self.client.open(shard_id).critical_reader("test-hold", 0)

    def _changes(self, t: int, n: int) -> tuple[list[Update], list[Update]]:
        rng = self.rng
        orders: list[Update] = []
        customers: list[Update] = []
        if t == 0:
            for cid in range(self.n_customers):
                crow: Row = (cid, f"r{cid % 5}")
                self.live_customers[cid] = crow
                customers.append((crow, t, 1))
        elif rng.random() < 0.3:
            cid = rng.randrange(self.n_customers)
            was = self.live_customers[cid]
            now: Row = (cid, f"r{rng.randrange(6)}")
            if now != was:
                customers += [(was, t, -1), (now, t, 1)]
                self.live_customers[cid] = now
        for _ in range(n):
            r = rng.random()
            if r < 0.65 or len(self.live_orders) < 5:
                oid = self.next_id
                self.next_id += 1
                row: Row = (oid, rng.randrange(self.n_customers + 5), rng.randrange(1, 101))
                self.live_orders[oid] = row
                orders.append((row, t, 1))
            elif r < 0.9:
                oid = rng.choice(list(self.live_orders))
                orders.append((self.live_orders.pop(oid), t, -1))
            else:
                oid = rng.choice(list(self.live_orders))
                old = self.live_orders[oid]
                new: Row = (oid, old[1], rng.randrange(1, 101))
                self.live_orders[oid] = new
                orders += [(old, t, -1), (new, t, 1)]
        return orders, customers

    async def tick(self, n: int = 10) -> int:
        """Write one timestamp's changes; returns the new upper."""
        t = self.upper
        o, c = self._changes(t, n)
        out = await self.client.compare_and_append_many(
            [(self.orders, o, t, t + 1), (self.customers, c, t, t + 1)]
        )
        assert out is None, out
        self.upper = t + 1
        self.updates_written += len(o) + len(c)
        return self.upper

    async def run(self, ticks: int, n: int = 10, pause_s: float = 0.002) -> None:
        for _ in range(ticks):
            await self.tick(n)
            await asyncio.sleep(pause_s)

    def contents(self) -> dict[str, list[Row]]:
        return {
            "orders": list(self.live_orders.values()),
            "customers": list(self.live_customers.values()),
        }


def recompute(plan: Plan, snapshots: Mapping[str, list[tuple[Row, int]]], t: int) -> Counter[Row]:
    """The plan's full result over the inputs' contents at `t` (a fresh dataflow)."""
    df = Dataflow({"o": plan}, as_of=t)
    out = df.step({n: [(r, t, d) for r, d in rows] for n, rows in snapshots.items()}, t + 1)
    got: Counter[Row] = Counter()
    for row, _t, d in out["o"]:
        got[row] += d
    return +got


async def output_at(client: PersistClient, shard_id: str, t: int) -> Counter[Row]:
    rows = await client.open(shard_id).snapshot(t)
    got: Counter[Row] = Counter()
    for row, d in rows:
        assert d > 0, f"negative multiplicity {d} of {row!r} at {t}"
        got[row] += d
    return got


async def assert_consistent(
    client: PersistClient,
    plan: Plan,
    inputs: Mapping[str, str],
    out_shard: str,
    lo: int,
    hi: int | None = None,
) -> int:
    """At every time in [lo, hi) (default: up to the output's upper) the output shard equals
    the full recompute of the plan over the inputs. Returns the number of times checked."""
    out = client.open(out_shard)
    if hi is None:
        hi = await out.upper()
    shards: dict[str, Shard] = {n: client.open(s) for n, s in inputs.items()}
    checked = 0
    for t in range(lo, hi):
        snaps = {n: await s.snapshot(t) for n, s in shards.items()}
        expected = recompute(plan, snaps, t)
        got = await output_at(client, out_shard, t)
        assert got == expected, f"output differs at time {t}: got {got}, expected {expected}"
        checked += 1
    return checked


async def wait_until(cond: Any, timeout_s: float = 30.0, what: str = "condition") -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():
            await asyncio.sleep(0.005)


@asynccontextmanager
async def running(runner: DataflowRunner) -> AsyncIterator[DataflowRunner]:
    runner.start()
    try:
        yield runner
    finally:
        await runner.stop()


__all__ = [
    "CUSTOMERS",
    "FILTER_SQL",
    "INPUTS",
    "JOIN_SQL",
    "ORDERS",
    "Store",
    "Tables",
    "assert_consistent",
    "inputs_of",
    "output_at",
    "plan_of",
    "recompute",
    "running",
    "wait_until",
]
