"""pgwire benchmark: ``twinstream bench pgwire [--json] [--seconds S]``.

Starts a real environmentd (temp dir, SQLite consensus) and a throwaway PostgreSQL 15 server
in the same run, loads the same 1,000-row table into both, and measures with psycopg 3:

- point SELECT (`SELECT v FROM kv WHERE k = %s`, prepared) latency, one client: p50 / p99;
- the same point SELECT on twinstream once `CREATE INDEX kv_k ON kv (k)` exists: answered
  by a peek at the index's arrangement instead of DuckDB (`point_indexed_p50_ms`, ...), and
  unprepared (Parse on every execution, as clients that do not prepare send it:
  `point_indexed_unprepared_p50_ms`);
- single-row INSERT rate: one client in a loop (`insert_seq_per_s`) and 16 concurrent
  clients (`insert_per_s`, where twinstream's group commit batches them).

Ratios are twinstream / PostgreSQL (latency: lower is better; rates: higher is better).
Goal: point-query p50 ratio <= 2.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from twinstream.cli.bench import BenchOptions
from twinstream.testing.environmentd import environmentd_process
from twinstream.testing.pgserver import pg_server

ROWS = 1000
POINT_QUERIES = 2000
CONCURRENT_WRITERS = 16


def _load(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE kv (k int NOT NULL, v text)")
        with conn.cursor().copy("COPY kv FROM STDIN") as copy:
            for i in range(ROWS):
                copy.write_row((i, f"value-{i}"))
        conn.execute("CREATE TABLE w (writer int, n int)")


def _point_queries(conninfo: str, prepare: bool = True) -> list[float]:
    lat = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for i in range(100):  # warm-up
            conn.execute("SELECT v FROM kv WHERE k = %s", (i,), prepare=prepare).fetchone()
        for i in range(POINT_QUERIES):
            t0 = time.perf_counter()
            row = conn.execute(
                "SELECT v FROM kv WHERE k = %s", (i % ROWS,), prepare=prepare
            ).fetchone()
            lat.append((time.perf_counter() - t0) * 1000)
            assert row == (f"value-{i % ROWS}",), row
    return lat


def _inserts(conninfo: str, clients: int, seconds: float) -> float:
    counts = [0] * clients
    stop = threading.Event()

    def run(w: int) -> None:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            n = 0
            while not stop.is_set():
                conn.execute("INSERT INTO w VALUES (%s, %s)", (w, n), prepare=True)
                n += 1
            counts[w] = n

    threads = [threading.Thread(target=run, args=(w,)) for w in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def _measure(conninfo: str, seconds: float) -> dict[str, float]:
    _load(conninfo)
    lat = sorted(_point_queries(conninfo))
    return {
        "p50_ms": statistics.median(lat),
        "p99_ms": lat[int(len(lat) * 0.99) - 1],
        "insert_seq_per_s": _inserts(conninfo, 1, seconds),
        "insert_per_s": _inserts(conninfo, CONCURRENT_WRITERS, seconds),
    }


def _run(opts: BenchOptions) -> dict[str, Any]:
    seconds = max(1.0, opts.seconds)
    with tempfile.TemporaryDirectory(prefix="twinstream-bench-pgwire-") as tmp:
        with environmentd_process(Path(tmp) / "env") as env:
            opts.log("measuring twinstream ...")
            ours = _measure(env.conninfo(), seconds)
            opts.log("measuring twinstream with an index ...")
            with psycopg.connect(env.conninfo(), autocommit=True) as conn:
                conn.execute("CREATE INDEX kv_k ON kv (k)")
            indexed = sorted(_point_queries(env.conninfo()))
            unprepared = sorted(_point_queries(env.conninfo(), prepare=False))
        with pg_server() as pg:
            opts.log("measuring PostgreSQL ...")
            theirs = _measure(pg.conninfo(), seconds)
    out: dict[str, Any] = {
        "point_p50_ms": round(ours["p50_ms"], 3),
        "point_p99_ms": round(ours["p99_ms"], 3),
        "point_indexed_p50_ms": round(statistics.median(indexed), 3),
        "point_indexed_p99_ms": round(indexed[int(len(indexed) * 0.99) - 1], 3),
        "point_indexed_unprepared_p50_ms": round(statistics.median(unprepared), 3),
        "insert_per_s": round(ours["insert_per_s"], 1),
        "insert_seq_per_s": round(ours["insert_seq_per_s"], 1),
        "pg_point_p50_ms": round(theirs["p50_ms"], 3),
        "pg_point_p99_ms": round(theirs["p99_ms"], 3),
        "pg_insert_per_s": round(theirs["insert_per_s"], 1),
        "pg_insert_seq_per_s": round(theirs["insert_seq_per_s"], 1),
    }
    out["point_p50_ratio"] = round(ours["p50_ms"] / theirs["p50_ms"], 3)
    out["point_p99_ratio"] = round(ours["p99_ms"] / theirs["p99_ms"], 3)
    out["point_indexed_p50_ratio"] = round(out["point_indexed_p50_ms"] / theirs["p50_ms"], 3)
    out["insert_ratio"] = round(ours["insert_per_s"] / theirs["insert_per_s"], 3)
    out["insert_seq_ratio"] = round(ours["insert_seq_per_s"] / theirs["insert_seq_per_s"], 3)
    return out


async def run(opts: BenchOptions) -> dict[str, Any]:
    return await asyncio.to_thread(_run, opts)
