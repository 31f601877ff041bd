"""Engine throughput: pure-Python dataflows vs. a DuckDB-per-delta-batch prototype.

    python -m twinstream.compute.dataflow.bench [--orders 1000000] [--batches 200] [--json]

Workload: `orders(id, cust, amount)` (`--orders` rows) and `customers(id, region)`
(`--customers` rows, `--regions` distinct regions) hydrated at time 0, then `--batches`
batches of `--batch` updates to orders (70% inserts of new orders, 30% deletes of existing
ones), one timestamp per batch, one `step` per batch. Queries:

- `filter_project`: SELECT id, amount * 2 FROM orders WHERE amount > 500
- `join_agg`: SELECT c.region, count(*), sum(o.amount) FROM orders o JOIN customers c
  ON o.cust = c.id GROUP BY c.region
- `join_agg_minmax`: the same grouped by o.cust with min/max (many groups, multisets)

The DuckDB prototype (`duckdb_*`) evaluates each delta batch as a SQL query (NumPy columns
scanned by DuckDB) against base tables kept in DuckDB, merging aggregate deltas in Python.
It needs NumPy (used only here). Numbers are updates per second of `step` (or of the
prototype's per-batch work); generating the updates is not timed.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pstats
import random
import sys
import time
from collections.abc import Callable
from typing import Any

from twinstream.compute.dataflow.dataflow import Dataflow
from twinstream.compute.dataflow.expr import Col, Lit, call
from twinstream.compute.dataflow.plan import Agg, Filter, Get, Join, Map, Plan, Project, Reduce
from twinstream.persist.types import Update

ORDERS = Get("orders", 3)
CUSTOMERS = Get("customers", 2)


def plan_filter_project() -> Plan:
    f = Filter(ORDERS, (call(">", Col(2), Lit(500)),))
    return Project(Map(f, (call("*", Col(2), Lit(2)),)), (0, 3))


def plan_join_agg() -> Plan:
    j = Join(ORDERS, CUSTOMERS, (1,), (0,))
    return Reduce(Project(j, (4, 2)), (Col(0),), (Agg("count"), Agg("sum", Col(1))))


def plan_join_agg_minmax() -> Plan:
    j = Join(ORDERS, CUSTOMERS, (1,), (0,))
    return Reduce(
        j, (Col(1),), (Agg("count"), Agg("sum", Col(2)), Agg("min", Col(2)), Agg("max", Col(2)))
    )


class Workload:
    def __init__(
        self, orders: int, customers: int, regions: int, batches: int, batch: int, seed: int
    ) -> None:
        rng = random.Random(seed)
        self.customers: list[Update] = [
            ((c, f"region{c % regions}"), 0, 1) for c in range(customers)
        ]
        self.orders: list[Update] = [
            ((i, rng.randrange(customers), rng.randrange(1, 1001)), 0, 1) for i in range(orders)
        ]
        live = [u[0] for u in self.orders]
        next_id = orders
        self.batches: list[list[Update]] = []
        for b in range(batches):
            t = b + 1
            ups: list[Update] = []
            for _ in range(batch):
                if rng.random() < 0.3 and live:
                    k = rng.randrange(len(live))
                    row = live[k]
                    live[k] = live[-1]
                    live.pop()
                    # An equal row, not the same object: the replica decodes retractions
                    # from persist, so no identity shortcut in comparisons.
                    ups.append((tuple(list(row)), t, -1))
                else:
                    row = (next_id, rng.randrange(customers), rng.randrange(1, 1001))
                    next_id += 1
                    live.append(row)
                    ups.append((row, t, 1))
            self.batches.append(ups)

    @property
    def updates(self) -> int:
        return sum(len(b) for b in self.batches)


def _timed(fn: Callable[[], Any]) -> float:
    gc.collect()
    gc.disable()
    try:
        t0 = time.process_time()  # CPU time: other processes on the machine do not count
        fn()
        return time.process_time() - t0
    finally:
        gc.enable()


def bench_engine(w: Workload, plan: Plan, profile: str | None = None) -> dict[str, Any]:
    df = Dataflow({"out": plan})
    needs_customers = "customers" in df.inputs
    first: dict[str, list[Update]] = {"orders": w.orders}
    if needs_customers:
        first["customers"] = w.customers
    hydrate = _timed(lambda: df.step(first, 1))
    outputs = 0

    def run() -> None:
        nonlocal outputs
        for i, b in enumerate(w.batches):
            outputs += len(df.step({"orders": b}, i + 2)["out"])

    prof = cProfile.Profile() if profile else None
    if prof is not None:
        prof.enable()
    elapsed = _timed(run)
    if prof is not None and profile:
        prof.disable()
        prof.dump_stats(profile)
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(12)
    n = w.updates
    return {
        "hydrate_rows": len(w.orders) + (len(w.customers) if needs_customers else 0),
        "hydrate_s": round(hydrate, 3),
        "hydrate_rows_per_s": round((len(w.orders) + len(w.customers)) / hydrate),
        "updates": n,
        "seconds": round(elapsed, 3),
        "updates_per_s": round(n / elapsed),
        "output_updates": outputs,
    }


def _columns(batch: list[Update]) -> dict[str, Any]:
    import numpy as np

    rows = [u[0] for u in batch]
    ids, custs, amounts = zip(*rows, strict=True)
    return {
        "id": np.fromiter(ids, dtype=np.int64, count=len(rows)),
        "cust": np.fromiter(custs, dtype=np.int64, count=len(rows)),
        "amount": np.fromiter(amounts, dtype=np.int64, count=len(rows)),
        "diff": np.fromiter((u[2] for u in batch), dtype=np.int64, count=len(rows)),
    }


def bench_duckdb_filter_project(w: Workload) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads = 1")

    def run() -> None:
        for i, b in enumerate(w.batches):
            d = _columns(b)  # noqa: F841 - scanned by DuckDB by name
            t = i + 1
            got = con.execute("SELECT id, amount * 2, diff FROM d WHERE amount > 500").fetchall()
            _ = [((a, b2), t, c) for a, b2, c in got]

    elapsed = _timed(run)
    return {
        "updates": w.updates,
        "seconds": round(elapsed, 3),
        "updates_per_s": round(w.updates / elapsed),
    }


def bench_duckdb_join_agg(w: Workload) -> dict[str, Any]:
    import duckdb
    import numpy as np

    con = duckdb.connect()
    con.execute("SET threads = 1")
    cust = {
        "id": np.arange(len(w.customers), dtype=np.int64),
        "region": np.array([u[0][1] for u in w.customers], dtype=object),
    }
    orders = _columns(w.orders)

    def hydrate() -> dict[str, list[int]]:
        cust_cols, order_cols = cust, orders  # noqa: F841 - scanned by DuckDB by name
        con.execute("CREATE TABLE customers AS SELECT id, region FROM cust_cols")
        con.execute("CREATE TABLE orders AS SELECT id, cust, amount FROM order_cols")
        con.execute("CREATE UNIQUE INDEX orders_id ON orders (id)")
        got = con.execute(
            "SELECT c.region, count(*), sum(o.amount) FROM orders o JOIN customers c "
            "ON o.cust = c.id GROUP BY c.region"
        ).fetchall()
        return {g: [n, s] for g, n, s in got}

    state: dict[str, list[int]] = {}
    hydrate_s = _timed(lambda: state.update(hydrate()))
    split = {"convert": 0.0, "query": 0.0, "merge": 0.0, "maintain": 0.0}
    clock = time.process_time

    def run() -> None:
        for i, b in enumerate(w.batches):
            c0 = clock()
            d = _columns(b)  # noqa: F841 - scanned by DuckDB by name
            t = i + 1
            c1 = clock()
            got = con.execute(
                "SELECT c.region, sum(d.diff), sum(d.amount * d.diff) FROM d JOIN customers c "
                "ON d.cust = c.id GROUP BY c.region"
            ).fetchall()
            c2 = clock()
            out: list[Update] = []
            for g, dn, ds in got:
                st = state.get(g)
                old = None if st is None else (g, st[0], st[1])
                if st is None:
                    st = state[g] = [0, 0]
                st[0] += int(dn)
                st[1] += int(ds)
                new = (g, st[0], st[1]) if st[0] else None
                if old != new:
                    if old is not None:
                        out.append((old, t, -1))
                    if new is not None:
                        out.append((new, t, 1))
            c3 = clock()
            con.execute("DELETE FROM orders WHERE id IN (SELECT id FROM d WHERE diff < 0)")
            con.execute("INSERT INTO orders SELECT id, cust, amount FROM d WHERE diff > 0")
            c4 = clock()
            split["convert"] += c1 - c0
            split["query"] += c2 - c1
            split["merge"] += c3 - c2
            split["maintain"] += c4 - c3

    elapsed = _timed(run)
    return {
        "split_s": {k: round(v, 3) for k, v in split.items()},
        "hydrate_s": round(hydrate_s, 3),
        "updates": w.updates,
        "seconds": round(elapsed, 3),
        "updates_per_s": round(w.updates / elapsed),
    }


QUERIES: dict[str, Callable[[], Plan]] = {
    "filter_project": plan_filter_project,
    "join_agg": plan_join_agg,
    "join_agg_minmax": plan_join_agg_minmax,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--orders", type=int, default=1_000_000)
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--regions", type=int, default=50)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", choices=[*QUERIES, "duckdb"], action="append")
    ap.add_argument("--profile", help="cProfile the streaming phase of each engine query")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    w = Workload(a.orders, a.customers, a.regions, a.batches, a.batch, a.seed)
    result: dict[str, Any] = {
        "orders": a.orders,
        "customers": a.customers,
        "regions": a.regions,
        "batch": a.batch,
    }
    for name, mk in QUERIES.items():
        if a.only and name not in a.only:
            continue
        prof = f"{a.profile}.{name}" if a.profile else None
        result[name] = bench_engine(w, mk(), prof)
        print(f"{name}: {result[name]}", file=sys.stderr)
    if not a.only or "duckdb" in a.only:
        try:
            result["duckdb_filter_project"] = bench_duckdb_filter_project(w)
            print(f"duckdb_filter_project: {result['duckdb_filter_project']}", file=sys.stderr)
            result["duckdb_join_agg"] = bench_duckdb_join_agg(w)
            print(f"duckdb_join_agg: {result['duckdb_join_agg']}", file=sys.stderr)
        except ImportError as e:  # NumPy is not a dependency of twinstream
            result["duckdb_skipped"] = str(e)
    if a.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
