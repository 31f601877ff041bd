"""IVM benchmark: ``twinstream bench ivm [--json] [--quick]``.

Materialized views maintained end to end through persist, against PostgreSQL's
``REFRESH MATERIALIZED VIEW`` in the same run (see README.md for the figures):

- ``filter``: ``SELECT id, amount * 2 FROM orders WHERE amount > 500``
- ``join_agg``: ``SELECT c.region, count(*), sum(o.amount) FROM orders o JOIN customers c
  ON o.cust = c.id GROUP BY c.region``

Per query, on fresh input shards (SQLite consensus + file blobs in a temporary directory):
the base (``orders`` 1M rows, ``customers`` 100k; ``--quick`` 100k / 10k) is appended in
chunks, then ``THROUGHPUT_BATCHES`` batches of ``BATCH`` order updates (70% inserts, 30%
deletes of live orders), one timestamp each. A replica process (this file run as a script)
runs a `DataflowRunner` with a persist sink into an output shard, as of the end of the base:
it hydrates, then catches up through the streamed batches (its throughput), then follows
``LAG_BATCHES`` more batches appended one every ``LAG_GAP_S`` (freshness lag). Afterwards
the same dataflows run in this process without persist (engine-only figures), and a
throwaway PostgreSQL refreshes the same views after each of ``PG_BATCHES`` batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import gc
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import twinstream
from twinstream.cli.bench import BenchmarkError, BenchOptions
from twinstream.compute.dataflow import bench as engine_bench
from twinstream.compute.dataflow.plan import Plan
from twinstream.compute.runtime import DataflowRunner
from twinstream.persist import PersistClient, Shard, open_blob, open_consensus
from twinstream.persist.types import Update

#: Order updates per batch (one timestamp each).
BATCH = 1000
#: Regions (join_agg groups).
REGIONS = 50
#: Rows per base chunk (one append each).
BASE_CHUNK = 100_000
#: Seconds between batches in the lag phase.
LAG_GAP_S = 0.1
#: How long the replica may take for anything (hydration, catching up).
REPLICA_TIMEOUT_S = 1800.0
#: Lease of the replica's read holds and listens (see `_LongLeaseClient`).
REPLICA_LEASE_MS = 900_000
#: Environment override of the orders row count (tests use a tiny one).
ORDERS_ENV = "TWINSTREAM_IVM_BENCH_ORDERS"
#: If set, the replica cProfiles its catch-up into `<value>.<query>` (for finding where the
#: time goes; the profiler slows the catch-up, so its figures are not comparable).
PROFILE_ENV = "TWINSTREAM_IVM_PROFILE"

QUERIES: dict[str, Plan] = {
    "filter": engine_bench.plan_filter_project(),
    "join_agg": engine_bench.plan_join_agg(),
}
SQL = {
    "filter": "SELECT id, amount * 2 AS a2 FROM orders WHERE amount > 500",
    "join_agg": "SELECT c.region, count(*), sum(o.amount) FROM orders o "
    "JOIN customers c ON o.cust = c.id GROUP BY c.region",
}


@dataclass(frozen=True)
class Sizes:
    orders: int
    throughput_batches: int
    lag_batches: int
    pg_batches: int

    @property
    def customers(self) -> int:
        return max(1, self.orders // 10)

    @classmethod
    def choose(cls, quick: bool) -> Sizes:
        orders = 100_000 if quick else 1_000_000
        override = os.environ.get(ORDERS_ENV)
        if override:
            orders = int(override)
        small = quick or orders < 100_000
        return cls(
            orders=orders,
            throughput_batches=50 if small else 200,
            lag_batches=20 if small else 50,
            pg_batches=5 if small else 10,
        )


def _pct(xs: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * len(s) + 0.5) - 1))]


def _workload(sizes: Sizes, batches: int, seed: int) -> engine_bench.Workload:
    return engine_bench.Workload(sizes.orders, sizes.customers, REGIONS, batches, BATCH, seed)


# -- persist + replica -------------------------------------------------------------------------


class _Writer:
    """Appends to the input shards of one query, every shard's upper moved together."""

    def __init__(self, client: PersistClient, shards: dict[str, Shard]) -> None:
        self.client = client
        self.shards = shards
        self.upper = 0

    async def append(self, updates: dict[str, list[Update]]) -> float:
        """Append `updates` (any times) at the current upper; returns the wall time it was
        durable (the compare-and-append returned)."""
        t = self.upper
        writes = [
            (shard, [(r, t, d) for r, _t, d in updates.get(name, [])], t, t + 1)
            for name, shard in self.shards.items()
        ]
        out = await self.client.compare_and_append_many(writes)
        if out is not None:
            raise BenchmarkError(f"unexpected concurrent writer on the input shards: {out}")
        self.upper = t + 1
        return time.time()


def _child_env() -> dict[str, str]:
    """The replica imports the same `twinstream` package as this process."""
    root = str(Path(twinstream.__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root if not path else f"{root}{os.pathsep}{path}"}


async def _read_event(proc: asyncio.subprocess.Process, want: str) -> dict[str, Any]:
    assert proc.stdout is not None
    async with asyncio.timeout(REPLICA_TIMEOUT_S):
        line = await proc.stdout.readline()
    if not line:
        await proc.wait()
        raise BenchmarkError(f"the replica process exited ({proc.returncode}) before {want!r}")
    event: dict[str, Any] = json.loads(line)
    if event.get("event") != want:
        raise BenchmarkError(f"replica said {event!r}, expected {want!r}")
    return event


async def _persist_phase(
    name: str, sizes: Sizes, urls: tuple[str, str], opts: BenchOptions
) -> dict[str, Any]:
    """One query end to end: base and streamed batches into fresh input shards, a replica
    process maintaining the view into an output shard."""
    w = _workload(sizes, sizes.throughput_batches + sizes.lag_batches, seed=11)
    stream, lag = w.batches[: sizes.throughput_batches], w.batches[sizes.throughput_batches :]
    tag = uuid.uuid4().hex[:8]
    inputs = ["orders"] if name == "filter" else ["orders", "customers"]
    shard_ids = {i: f"ivm-{name}-{i}-{tag}" for i in inputs}
    out_id = f"ivm-{name}-out-{tag}"
    client = PersistClient.from_urls(*urls)
    await client.start_watching()
    proc: asyncio.subprocess.Process | None = None
    try:
        shards = {i: client.open(s) for i, s in shard_ids.items()}
        for s in shards.values():  # keep every time readable (the replica reads as of the base)
            await s.critical_reader("ivm-bench", 0)
        writer = _Writer(client, shards)
        t0 = time.perf_counter()
        base: dict[str, list[Update]] = {"customers": w.customers}
        for lo in range(0, len(w.orders), BASE_CHUNK):
            base["orders"] = w.orders[lo : lo + BASE_CHUNK]
            await writer.append(base)
            base = {}
        as_of = writer.upper - 1
        for b in stream:
            await writer.append({"orders": b})
        caught_up_at = writer.upper
        write_s = time.perf_counter() - t0
        opts.log(f"ivm {name}: wrote base + {len(stream)} batches in {write_s:.1f}s")
        end = caught_up_at + len(lag)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).resolve()), "replica", urls[0], urls[1], name,
            json.dumps(shard_ids), out_id, str(as_of), str(caught_up_at), str(end),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, env=_child_env(),
        )  # fmt: skip
        hydrated = await _read_event(proc, "hydrated")
        opts.log(f"ivm {name}: replica hydrated in {hydrated['hydrate_s']}s")
        caught = await _read_event(proc, "caught_up")
        opts.log(f"ivm {name}: replica caught up in {caught['catch_up_s']}s")
        appended: list[tuple[int, float]] = []
        for b in lag:
            await asyncio.sleep(LAG_GAP_S)
            at = await writer.append({"orders": b})
            appended.append((writer.upper, at))
        done = await _read_event(proc, "done")
        await proc.wait()
        if proc.returncode != 0:
            raise BenchmarkError(f"the replica process exited with status {proc.returncode}")
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await client.close()
    persisted: list[tuple[int, float]] = done["persisted"]
    lags: list[float] = []
    for upper, at in appended:
        seen = next((wall for u, wall in persisted if u >= upper), None)
        if seen is None:
            raise BenchmarkError(f"the output never reached {upper}")
        lags.append(max(0.0, seen - at) * 1000)
    streamed = sum(len(b) for b in stream)
    return {
        "updates_per_s": round(streamed / caught["catch_up_s"]),
        "replica_cpu_updates_per_s": round(streamed / max(1e-9, caught["catch_up_cpu_s"])),
        "lag_p50_ms": round(_pct(lags, 0.5), 1),
        "lag_p99_ms": round(_pct(lags, 0.99), 1),
        "hydrate_s": hydrated["hydrate_s"],
        "rss_mib": done["rss_mib"],
        "peak_rss_mib": done["peak_rss_mib"],
        "appends": done["stats"]["sink"]["appends"],
        "steps": done["stats"]["steps"],
    }


class _LongLeaseClient(PersistClient):
    """Opens shards with `REPLICA_LEASE_MS` leases: a dataflow step runs synchronously, and
    hydrating 1M rows on a busy machine can block the event loop (and so the runner's
    heartbeats) for longer than the default lease, which would end the runner with
    `LeaseExpired` (a known gap of the runtime, see doc/design/compute.md)."""

    def open(self, shard_id: str, *, writer_id: str | None = None, lease_ms: int = 0) -> Shard:
        return super().open(shard_id, writer_id=writer_id, lease_ms=lease_ms or REPLICA_LEASE_MS)


async def _until(runner_task: asyncio.Task[None], aw: Awaitable[Any]) -> None:
    """Await `aw`, but fail if the runner ends first (it only ends by failing here)."""
    waiter = asyncio.ensure_future(aw)
    try:
        await asyncio.wait({waiter, runner_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not waiter.done():
            waiter.cancel()
    if not waiter.done() or waiter.cancelled():
        exc = None if runner_task.cancelled() else runner_task.exception()
        raise RuntimeError(f"the runner ended: {exc!r}")


async def _replica(argv: Sequence[str]) -> None:
    """The replica process: run the view, report hydration, catch-up and every output upper."""
    consensus_url, blob_url, name, shards_json, out_id, as_of_s, caught_s, end_s = argv
    as_of, caught_up_at, end = int(as_of_s), int(caught_s), int(end_s)
    client = _LongLeaseClient(open_consensus(consensus_url), open_blob(blob_url))
    await client.start_watching()

    def say(event: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    try:
        runner = DataflowRunner(
            client, QUERIES[name], json.loads(shards_json), out_id, as_of, name=f"ivm-{name}"
        )
        t0, c0 = time.perf_counter(), time.process_time()
        task = runner.start()
        await _until(task, runner.hydrated.wait())
        t1, c1 = time.perf_counter(), time.process_time()
        say({"event": "hydrated", "hydrate_s": round(t1 - t0, 3), "cpu_s": round(c1 - c0, 3)})
        profile_to = os.environ.get(PROFILE_ENV)
        prof = cProfile.Profile() if profile_to else None
        if prof is not None:
            prof.enable()
        persisted: list[tuple[int, float]] = []
        sink = runner.sink
        assert sink is not None
        said_caught_up = False
        while sink.persisted_upper < end:
            await _until(task, runner.wait_persisted(sink.persisted_upper + 1))
            persisted.append((sink.persisted_upper, time.time()))
            if not said_caught_up and sink.persisted_upper >= caught_up_at:
                said_caught_up = True
                t2, c2 = time.perf_counter(), time.process_time()
                if prof is not None and profile_to:
                    prof.disable()
                    prof.dump_stats(f"{profile_to}.{name}")
                say(
                    {
                        "event": "caught_up",
                        "catch_up_s": round(t2 - t1, 3),
                        "catch_up_cpu_s": round(c2 - c1, 3),
                    }
                )
        stats = runner.stats()
        await runner.stop()
        say(
            {
                "event": "done",
                "persisted": persisted,
                "rss_mib": round(_rss_kib("VmRSS") / 1024, 1),
                "peak_rss_mib": round(_rss_kib("VmHWM") / 1024, 1),
                "stats": stats,
            }
        )
    finally:
        await client.close()


def _rss_kib(field: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB (peak)


# -- engine only -------------------------------------------------------------------------------


def _engine_phase(name: str, sizes: Sizes) -> dict[str, Any]:
    """The same dataflow stepped directly (no persist), CPU seconds of this process."""
    w = _workload(sizes, sizes.throughput_batches, seed=11)
    got = engine_bench.bench_engine(w, QUERIES[name])
    return {"updates_per_s": got["updates_per_s"], "hydrate_s": got["hydrate_s"]}


# -- PostgreSQL --------------------------------------------------------------------------------


def _postgres_phase(sizes: Sizes, log: Any) -> dict[str, Any]:
    """Both views as PostgreSQL materialized views, refreshed after each batch."""
    import psycopg

    from twinstream.testing.pgserver import PgServerError, pg_server

    w = _workload(sizes, sizes.pg_batches, seed=11)
    try:
        # No autovacuum: its workers would be counted as REFRESH's CPU (see `_refresh_cpu_s`).
        server_cm = pg_server(extra_settings={"autovacuum": "off"})
        server = server_cm.__enter__()
    except (PgServerError, FileNotFoundError) as e:
        raise BenchmarkError(f"cannot start PostgreSQL for the baseline: {e}") from None
    try:
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE customers (id int4 PRIMARY KEY, region text NOT NULL)")
            conn.execute(
                "CREATE TABLE orders (id int8 PRIMARY KEY, cust int4 NOT NULL, amount int4)"
            )
            with conn.cursor() as cur:
                with cur.copy("COPY customers (id, region) FROM STDIN") as cp:
                    for (cid, region), _t, _d in w.customers:
                        cp.write_row((cid, region))
                with cur.copy("COPY orders (id, cust, amount) FROM STDIN") as cp:
                    for row, _t, _d in w.orders:
                        cp.write_row(row)
            conn.execute("ANALYZE")
            for name, sql in SQL.items():
                conn.execute(f"CREATE MATERIALIZED VIEW mv_{name} AS {sql}")
            refresh: dict[str, list[float]] = {name: [] for name in SQL}
            refresh_cpu: dict[str, list[float]] = {name: [] for name in SQL}
            pid_row = conn.execute("SELECT pg_backend_pid()").fetchone()
            backend = int(pid_row[0]) if pid_row else 0
            postmaster = _parent_pid(backend)
            for b in w.batches:
                with conn.transaction(), conn.cursor() as cur:
                    dels = [r[0] for r, _t, d in b if d < 0]
                    if dels:
                        cur.execute("DELETE FROM orders WHERE id = ANY(%s)", (dels,))
                    with cur.copy("COPY orders (id, cust, amount) FROM STDIN") as cp:
                        for r, _t, d in b:
                            if d > 0:
                                cp.write_row(r)
                for name in SQL:
                    c0 = _refresh_cpu_s(backend, postmaster)
                    t0 = time.perf_counter()
                    conn.execute(f"REFRESH MATERIALIZED VIEW mv_{name}")
                    refresh[name].append((time.perf_counter() - t0) * 1000)
                    c1 = _wait_reaped(backend, postmaster, c0)
                    refresh_cpu[name].append((c1 - c0) * 1000)
            version = conn.execute("SHOW server_version").fetchone()
    finally:
        server_cm.__exit__(None, None, None)
    medians = {name: statistics.median(v) for name, v in refresh.items()}
    cpu = {f"{name}_cpu": statistics.median(v) for name, v in refresh_cpu.items()}
    log(f"ivm postgres: refresh ms per batch {medians}, CPU ms {cpu}")
    return {
        "version": version[0] if version else "?",
        **medians,
        **cpu,
    }


def _stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name ([0] is the state), or []."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _parent_pid(pid: int) -> int:
    fields = _stat(pid)
    return int(fields[1]) if fields else 0


def _refresh_cpu_s(backend: int, postmaster: int) -> float:
    """CPU seconds (user + system) so far of the PostgreSQL backend plus the postmaster's
    exited children (its reaped `cutime + cstime`): REFRESH's parallel workers are children
    of the postmaster that exit after the query, so their CPU shows up there. Comparable
    with the replica's CPU per update however loaded the machine is when each phase runs.
    (Other children exiting meanwhile would count too: autovacuum is off for this.)"""
    tick = os.sysconf("SC_CLK_TCK")
    own = _stat(backend)
    total = (int(own[11]) + int(own[12])) / tick if own else 0.0
    parent = _stat(postmaster) if postmaster > 1 else []
    if parent:
        total += (int(parent[13]) + int(parent[14])) / tick
    return total


#: How long to wait for the postmaster to reap REFRESH's parallel workers.
REAP_WAIT_S = 0.2


def _wait_reaped(backend: int, postmaster: int, before: float) -> float:
    """`_refresh_cpu_s` once the workers' CPU has landed in the postmaster (it reaps them
    asynchronously): the figure stops moving or `REAP_WAIT_S` passes."""
    deadline = time.monotonic() + REAP_WAIT_S
    last = _refresh_cpu_s(backend, postmaster)
    while time.monotonic() < deadline:
        time.sleep(0.02)
        now = _refresh_cpu_s(backend, postmaster)
        if now == last and now > before:
            return now
        last = now
    return last


# -- the benchmark -----------------------------------------------------------------------------


async def run(opts: BenchOptions) -> dict[str, Any]:
    sizes = Sizes.choose(opts.quick)
    if opts.backend != "sqlite" or opts.consensus_url or opts.blob_url:
        raise BenchmarkError("the ivm benchmark runs on a temporary SQLite + file location only")
    load_before = os.getloadavg()[0]
    persist: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="twinstream-ivm-") as tmp:
        urls = (f"sqlite://{tmp}/consensus.db", f"file://{tmp}/blob")
        for name in QUERIES:
            persist[name] = await _persist_phase(name, sizes, urls, opts)
            opts.log(f"ivm {name}: {persist[name]}")
    gc.collect()
    engine = {name: await asyncio.to_thread(_engine_phase, name, sizes) for name in QUERIES}
    opts.log(f"ivm engine only: {engine}")
    pg = await asyncio.to_thread(_postgres_phase, sizes, opts.log)
    result: dict[str, Any] = {
        "orders": sizes.orders,
        "customers": sizes.customers,
        "batch": BATCH,
        "filter_updates_per_s": persist["filter"]["updates_per_s"],
        "join_agg_updates_per_s": persist["join_agg"]["updates_per_s"],
        "lag_p50_ms": persist["join_agg"]["lag_p50_ms"],
        "lag_p99_ms": persist["join_agg"]["lag_p99_ms"],
        "filter_lag_p50_ms": persist["filter"]["lag_p50_ms"],
        "filter_lag_p99_ms": persist["filter"]["lag_p99_ms"],
        "replica_rss_mib": persist["join_agg"]["peak_rss_mib"],
        "filter_replica_rss_mib": persist["filter"]["peak_rss_mib"],
        "refresh_ms_per_batch": round(pg["join_agg"], 1),
        "filter_refresh_ms_per_batch": round(pg["filter"], 1),
    }
    for name in QUERIES:
        ours_s = 1.0 / persist[name]["updates_per_s"]  # per update, end to end
        refresh_s = pg[name] / 1000 / BATCH  # per update, REFRESH after each batch
        prefix = "" if name == "join_agg" else "filter_"
        result[f"{prefix}ratio"] = round(refresh_s / ours_s, 1)
        result[f"{prefix}engine_ratio"] = round(refresh_s * engine[name]["updates_per_s"], 1)
        # CPU against CPU: the phases run minutes apart on a shared machine, so the wall
        # ratio also compares the load each phase happened to see.
        refresh_cpu_s = pg[f"{name}_cpu"] / 1000 / BATCH
        result[f"{prefix}refresh_cpu_ms_per_batch"] = round(pg[f"{name}_cpu"], 1)
        result[f"{prefix}cpu_ratio"] = round(
            refresh_cpu_s * persist[name]["replica_cpu_updates_per_s"], 1
        )
    for name in QUERIES:
        result[f"engine_{name}_updates_per_s"] = engine[name]["updates_per_s"]
        result[f"{name}_replica_cpu_updates_per_s"] = persist[name]["replica_cpu_updates_per_s"]
        result[f"{name}_hydrate_s"] = persist[name]["hydrate_s"]
        result[f"{name}_appends"] = persist[name]["appends"]
        result[f"{name}_steps"] = persist[name]["steps"]
    result["throughput_batches"] = sizes.throughput_batches
    result["lag_batches"] = sizes.lag_batches
    result["pg_batches"] = sizes.pg_batches
    result["pg_version"] = pg["version"]
    # The machine's 1-minute load average before and after: figures from a shared machine
    # are only comparable at similar load.
    result["load_avg"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
    return result


if __name__ == "__main__":
    if len(sys.argv) == 10 and sys.argv[1] == "replica":
        asyncio.run(_replica(sys.argv[2:]))
        sys.exit(0)
    print(
        "usage: ivm_bench.py replica CONSENSUS BLOB QUERY SHARDS_JSON OUT AS_OF CAUGHT END",
        file=sys.stderr,
    )
    sys.exit(2)
