"""Throughput of the persist sink and of a runner end to end.

    python -m twinstream.compute.runtime.bench [--store sqlite|mem] [--batches 200]
        [--batch 1000] [--json]

- `sink_serial`: one sink; feed one time's batch, wait until it is appended, repeat
  (latency-bound: one compare-and-append per time).
- `sink_pipelined`: one sink fed a batch per time as fast as the producer goes; the sink
  appends whatever has accumulated (fewer, larger appends).
- `sink_pair`: two writable sinks fed the same stream race on one shard.
- `runner_filter`: a writer appends `--batch` order updates per time to an input shard
  while a `DataflowRunner` maintains `SELECT id, amount FROM orders WHERE amount > 50` into an
  output shard; the read-only follower runs the same dataflow. Reported: input updates/s
  from the first append to the output's upper reaching the last time, and the follower's
  largest correction.

SQLite consensus with a file blob directory in a temporary directory; one process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from twinstream.clock import SystemClock
from twinstream.compute.dataflow.expr import Col, Lit, call
from twinstream.compute.dataflow.plan import Filter, Get, Project
from twinstream.compute.runtime.runner import DataflowRunner
from twinstream.compute.runtime.sink import PersistSink
from twinstream.persist import PersistClient
from twinstream.persist.fileblob import FileBlob
from twinstream.persist.mem import MemBlob, MemConsensus
from twinstream.persist.sqlite import SqliteConsensus
from twinstream.persist.types import Update


class _Stores:
    def __init__(self, kind: str, root: Path) -> None:
        self.kind = kind
        self.root = root
        self.mem = (MemConsensus(), MemBlob())
        self.clients: list[PersistClient] = []

    async def client(self) -> PersistClient:
        if self.kind == "mem":
            c = PersistClient(self.mem[0], self.mem[1], SystemClock())
        else:
            c = PersistClient(
                SqliteConsensus(self.root / "consensus.db"), FileBlob(self.root / "blob"),
                SystemClock(),
            )  # fmt: skip
            await c.start_watching()
        self.clients.append(c)
        return c

    async def close(self) -> None:
        if self.kind != "mem":
            for c in self.clients:
                await c.close()


def _batches(n: int, size: int, seed: int = 7) -> list[list[Update]]:
    rng = random.Random(seed)
    out: list[list[Update]] = []
    live: list[tuple[int, int, int]] = []
    next_id = 0
    for t in range(n):
        ups: list[Update] = []
        for _ in range(size):
            if live and rng.random() < 0.3:
                row = live.pop(rng.randrange(len(live)))
                ups.append((row, t, -1))
            else:
                row = (next_id, rng.randrange(1000), rng.randrange(1, 101))
                next_id += 1
                live.append(row)
                ups.append((row, t, 1))
        out.append(ups)
    return out


async def _sink_serial(stores: _Stores, batches: list[list[Update]]) -> dict[str, Any]:
    sink = PersistSink(await stores.client(), "bench-serial")
    task = asyncio.create_task(sink.run())
    start = time.perf_counter()
    for t, ups in enumerate(batches):
        sink.feed(ups, t, t + 1)
        await sink.wait_persisted(t + 1)
    elapsed = time.perf_counter() - start
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    n = sum(len(b) for b in batches)
    return {
        "updates_per_s": round(n / elapsed),
        "appends_per_s": round(sink.stats.appends / elapsed, 1),
        "ms_per_append": round(1000 * elapsed / sink.stats.appends, 2),
        "stats": sink.stats.as_dict(),
    }


async def _sink_pipelined(
    stores: _Stores, batches: list[list[Update]], shard: str, writers: int
) -> dict[str, Any]:
    sinks = [PersistSink(await stores.client(), shard, name=f"s{i}") for i in range(writers)]
    tasks = [asyncio.create_task(s.run()) for s in sinks]
    start = time.perf_counter()
    for t, ups in enumerate(batches):
        for s in sinks:
            s.feed(ups, t, t + 1)
        await asyncio.sleep(0)
    for s in sinks:
        await s.wait_persisted(len(batches))
    elapsed = time.perf_counter() - start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    n = sum(len(b) for b in batches)
    written = sum(s.stats.updates_written for s in sinks)
    return {
        "updates_per_s": round(n / elapsed),
        "appends": sum(s.stats.appends for s in sinks),
        "mismatches": sum(s.stats.mismatches for s in sinks),
        "updates_written": written,
        "input_updates": n,
    }


async def _runner_filter(stores: _Stores, batches: list[list[Update]]) -> dict[str, Any]:
    writer_client = await stores.client()
    orders = writer_client.open("bench-orders")
    await orders.compare_and_append([], 0, 1)
    plan = Project(Filter(Get("orders", 3), (call(">", Col(2), Lit(50)),)), (0, 2))
    leader = DataflowRunner(
        await stores.client(), plan, {"orders": "bench-orders"}, "bench-mv", name="leader"
    )
    follower = DataflowRunner(
        await stores.client(), plan, {"orders": "bench-orders"}, "bench-mv", read_only=True,
        name="follower",
    )  # fmt: skip
    leader.start()
    follower.start()
    await leader.hydrated.wait()
    await follower.hydrated.wait()
    start = time.perf_counter()
    upper = 1
    for ups in batches:
        shifted = [(r, upper, d) for r, _t, d in ups]
        assert await orders.compare_and_append(shifted, upper, upper + 1) is None
        upper += 1
        await asyncio.sleep(0)
    written = time.perf_counter() - start
    await leader.wait_persisted(upper)
    await follower.wait_persisted(upper)
    elapsed = time.perf_counter() - start
    stats = leader.stats()
    fstats = follower.stats()
    await leader.stop()
    await follower.stop()
    n = sum(len(b) for b in batches)
    return {
        "input_updates_per_s": round(n / elapsed),
        "writer_only_updates_per_s": round(n / written),
        "output_updates": stats["sink"]["updates_written"],
        "appends": stats["sink"]["appends"],
        "steps": stats["steps"],
        "follower_max_correction": fstats["sink"]["max_correction"],
        "follower_appends": fstats["sink"]["appends"],
    }


async def run(kind: str, n: int, size: int) -> dict[str, Any]:
    batches = _batches(n, size)
    results: dict[str, Any] = {"store": kind, "batches": n, "batch": size}
    with tempfile.TemporaryDirectory() as tmp:
        stores = _Stores(kind, Path(tmp))
        try:
            results["sink_serial"] = await _sink_serial(stores, batches)
            results["sink_pipelined"] = await _sink_pipelined(stores, batches, "bench-pipe", 1)
            results["sink_pair"] = await _sink_pipelined(stores, batches, "bench-pair", 2)
            results["runner_filter"] = await _runner_filter(stores, batches)
        finally:
            await stores.close()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--store", choices=["sqlite", "mem"], default="sqlite")
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = asyncio.run(run(args.store, args.batches, args.batch))
    if args.json:
        print(json.dumps(out))
        return
    for k, v in out.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
