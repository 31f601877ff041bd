"""Catalog benchmark: ``twinstream bench catalog [--json] [--backend sqlite|postgres]``.

On a fresh location (a temp dir for SQLite, a throwaway server for PostgreSQL, or the given
``--consensus-url``/``--blob-url``, which must hold no catalog yet):

1. open the catalog writable at generation 1 (bootstrap: ``first_open_ms``);
2. ``COMMITS`` single-item DDL-like commits, one after another: allocate an item id, insert the
   item, append an audit event, ``commit`` (one compare-and-append each); per-commit latency
   (``p50_ms``, ``p99_ms``, ``max_ms``) and rate (``ddl_per_s``);
3. open writable again at generation 2 from another client — the fencing open an upgrade does:
   load, write the new fence token, take over the critical hold (``open_writable_ms``) — and
   check that generation 1 is fenced.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from twinstream.catalog import DeployGenerationFenced, DurableCatalog, OpenMode
from twinstream.cli.bench import BenchmarkError, BenchOptions
from twinstream.cli.benchloc import bench_location
from twinstream.clock import SYSTEM_CLOCK
from twinstream.persist import PersistClient

#: Timed single-item commits.
COMMITS = 500
#: Untimed commits before the timed ones (connections, caches, first compaction).
WARMUP_COMMITS = 20


async def _ddl(cat: DurableCatalog, n: int) -> None:
    """One CREATE TABLE-like catalog transaction."""
    txn = cat.transaction()
    item_id = txn.allocate_id("item")
    name = f"bench_table_{n}"
    txn.insert(
        "item",
        item_id,
        {
            "type": "table",
            "name": name,
            "schema_id": "u1",
            "owner": "u1",
            "create_sql": f"CREATE TABLE {name} (a int, b text)",
            "columns": [["a", "int4"], ["b", "text"]],
        },
    )
    txn.audit("create", "table", {"id": item_id, "name": name}, SYSTEM_CLOCK.now_ms())
    await cat.commit(txn)


def _pct(sorted_s: list[float], p: float) -> float:
    i = min(len(sorted_s) - 1, max(0, round(p / 100 * (len(sorted_s) - 1))))
    return sorted_s[i]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


async def run(opts: BenchOptions, commits: int = COMMITS) -> dict[str, Any]:
    """The benchmark entry point (``twinstream bench catalog``)."""
    async with bench_location(opts, "twinstream-bench-catalog-") as (consensus_url, blob_url):
        leader_client = PersistClient.from_urls(consensus_url, blob_url)
        next_client = PersistClient.from_urls(consensus_url, blob_url)
        try:
            if await leader_client.open("catalog").upper() != 0:
                raise BenchmarkError("the given location already holds a catalog: use a fresh one")
            t0 = time.perf_counter()
            leader = await DurableCatalog.open(
                leader_client, OpenMode.WRITABLE, deploy_generation=1, clock=SYSTEM_CLOCK
            )
            first_open = time.perf_counter() - t0

            opts.log(f"[catalog/{opts.backend}] {commits} single-item DDL commits ...")
            for n in range(WARMUP_COMMITS):
                await _ddl(leader, -1 - n)
            latencies: list[float] = []
            start = time.perf_counter()
            for n in range(commits):
                t = time.perf_counter()
                await _ddl(leader, n)
                latencies.append(time.perf_counter() - t)
            elapsed = time.perf_counter() - start

            opts.log(f"[catalog/{opts.backend}] fencing open at generation 2 ...")
            await next_client.open("catalog").upper()  # connect first: time the open only
            t0 = time.perf_counter()
            successor = await DurableCatalog.open(
                next_client, OpenMode.WRITABLE, deploy_generation=2, clock=SYSTEM_CLOCK
            )
            open_writable = time.perf_counter() - t0
            try:
                await leader.confirm_leadership()
                fenced = False
            except DeployGenerationFenced:
                fenced = True
            if not fenced:
                raise BenchmarkError("generation 1 was not fenced by generation 2's open")
            catalog_entries = len(successor.state)
        finally:
            await leader_client.close()
            await next_client.close()

    latencies.sort()
    return {
        "backend": opts.backend,
        "p50_ms": _ms(_pct(latencies, 50)),
        "p99_ms": _ms(_pct(latencies, 99)),
        "max_ms": _ms(latencies[-1]),
        "mean_ms": _ms(statistics.fmean(latencies)),
        "ddl_per_s": round(commits / elapsed, 1),
        "open_writable_ms": _ms(open_writable),
        "first_open_ms": _ms(first_open),
        "commits": commits,
        "catalog_entries": catalog_entries,
    }
