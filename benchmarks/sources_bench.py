"""Sources benchmark: ``twinstream bench sources [--json] [--seconds S]``.

One real environmentd (temp dir, SQLite consensus) and one throwaway PostgreSQL server with
wal_level=logical, in the same run:

- PostgreSQL CDC: one upstream client inserts single-row transactions as fast as it can
  (`upstream_insert_per_s`, the upstream's own rate); a reader polls the source in twinstream
  and records when each row becomes visible in SELECT: end-to-end lag (upstream commit ->
  visible) p50 / p99, and `cdc_rows_per_s`; `cdc_ratio` = cdc / upstream rate.
- Load generator: COUNTER at TICK INTERVAL '1ms' (`counter_rows_per_s`; bounded by one
  group commit per tick).
- Webhook: one sender posting sequentially (`webhook_per_s`, p50 / p99: 200 = durable and
  visible), against single-row INSERTs into a table through the same group commit
  (`insert_seq_per_s`); `webhook_ratio` = webhook / insert rate.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg

from twinstream.cli.bench import BenchOptions
from twinstream.testing.environmentd import EnvironmentdProcess, environmentd_process
from twinstream.testing.pgserver import pg_server

#: Seconds allowed for the source to catch up with the upstream after the writer stops.
CATCH_UP_TIMEOUT_S = 120.0


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[max(0, int(len(s) * q) - 1)] if s else 0.0


def _cdc(env: EnvironmentdProcess, upstream_url: str, seconds: float) -> dict[str, float]:
    with psycopg.connect(upstream_url, autocommit=True) as up:
        up.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        up.execute("ALTER TABLE t REPLICA IDENTITY FULL")
        up.execute("CREATE PUBLICATION p FOR TABLE t")
    u = psycopg.conninfo.conninfo_to_dict(upstream_url)
    with psycopg.connect(env.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE SECRET pgpass AS ''")
        conn.execute(
            f"CREATE CONNECTION pg TO POSTGRES (HOST '{u.get('host', '127.0.0.1')}', "
            f"PORT {u.get('port', 5432)}, USER '{u.get('user', 'postgres')}', "
            f"PASSWORD SECRET pgpass, DATABASE '{u.get('dbname', 'postgres')}')"
        )
        conn.execute("CREATE SOURCE s FROM POSTGRES CONNECTION pg (PUBLICATION 'p') FOR ALL TABLES")
    committed: list[float] = []  # committed[i]: commit time of id i + 1
    stop = threading.Event()

    def writer() -> None:
        with psycopg.connect(upstream_url, autocommit=True) as up:
            n = 0
            while not stop.is_set():
                n += 1
                up.execute("INSERT INTO t VALUES (%s, 'x')", (n,), prepare=True)
                committed.append(time.perf_counter())

    lags: list[float] = []
    seen = 0
    thread = threading.Thread(target=writer)
    t0 = time.perf_counter()
    thread.start()
    with psycopg.connect(env.conninfo(), autocommit=True) as conn:
        deadline = t0 + seconds + CATCH_UP_TIMEOUT_S
        while time.perf_counter() < deadline:
            if not stop.is_set() and time.perf_counter() - t0 >= seconds:
                stop.set()
                thread.join()
            row = conn.execute("SELECT max(id) FROM t").fetchone()
            now = time.perf_counter()
            top = int(row[0]) if row and row[0] is not None else 0
            for i in range(seen, min(top, len(committed))):
                lags.append((now - committed[i]) * 1000)
            seen = max(seen, min(top, len(committed)))
            if stop.is_set() and seen >= len(committed):
                break
        last_visible = time.perf_counter()
    stop.set()
    thread.join()
    upstream_s = (committed[-1] - t0) if committed else 1.0
    return {
        "upstream_insert_per_s": len(committed) / upstream_s,
        "cdc_rows_per_s": seen / max(last_visible - t0, 1e-9),
        "cdc_lag_p50_ms": statistics.median(lags) if lags else 0.0,
        "cdc_lag_p99_ms": _pct(lags, 0.99),
        "cdc_rows": float(seen),
    }


def _counter(env: EnvironmentdProcess, seconds: float) -> float:
    with psycopg.connect(env.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE SOURCE c FROM LOAD GENERATOR COUNTER (TICK INTERVAL '1ms')")
        t0 = time.perf_counter()
        first = conn.execute("SELECT count(*) FROM c").fetchone()
        time.sleep(seconds)  # the measured window
        last = conn.execute("SELECT count(*) FROM c").fetchone()
        elapsed = time.perf_counter() - t0
        conn.execute("DROP SOURCE c")
    assert first is not None and last is not None
    return (int(last[0]) - int(first[0])) / elapsed


def _webhook(env: EnvironmentdProcess, seconds: float) -> dict[str, float]:
    with psycopg.connect(env.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE SOURCE w FROM WEBHOOK BODY FORMAT JSON")
        conn.execute("CREATE TABLE ins (n int)")
        lat: list[float] = []
        url = f"http://127.0.0.1:{env.http_port}/api/webhook/twinstream/public/w"
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            req = urllib.request.Request(url, data=b'{"n": 1}', method="POST")
            s = time.perf_counter()
            with urllib.request.urlopen(req, timeout=30) as resp:
                assert resp.status == 200
            lat.append((time.perf_counter() - s) * 1000)
        webhook_rate = len(lat) / (time.perf_counter() - t0)
        n = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            conn.execute("INSERT INTO ins VALUES (%s)", (n,), prepare=True)
            n += 1
        insert_rate = n / (time.perf_counter() - t0)
    return {
        "webhook_per_s": webhook_rate,
        "webhook_p50_ms": statistics.median(lat),
        "webhook_p99_ms": _pct(lat, 0.99),
        "insert_seq_per_s": insert_rate,
    }


def _run(opts: BenchOptions) -> dict[str, Any]:
    seconds = max(1.0, opts.seconds)
    with (
        tempfile.TemporaryDirectory(prefix="twinstream-bench-sources-") as tmp,
        pg_server(wal_level_logical=True) as pg,
        environmentd_process(Path(tmp) / "env") as env,
    ):
        upstream_url = pg.create_database("upstream")
        opts.log("PostgreSQL CDC ...")
        cdc = _cdc(env, upstream_url, seconds)
        opts.log("load generator ...")
        counter = _counter(env, seconds)
        opts.log("webhook ...")
        hook = _webhook(env, seconds)
    out: dict[str, Any] = {k: round(v, 3) for k, v in {**cdc, **hook}.items()}
    out["counter_rows_per_s"] = round(counter, 1)
    out["cdc_ratio"] = round(cdc["cdc_rows_per_s"] / cdc["upstream_insert_per_s"], 3)
    out["webhook_ratio"] = round(hook["webhook_per_s"] / hook["insert_seq_per_s"], 3)
    return out


async def run(opts: BenchOptions) -> dict[str, Any]:
    return await asyncio.to_thread(_run, opts)
