"""Promotion benchmark: ``twinstream bench promote --json [--rows N]``.

One environment, two generations, real processes:

1. generation 1 (leader) loads the workload (`COLLECTIONS`: today a table of ``--rows`` rows,
   1M by default) while a writer keeps inserting into a small table;
2. generation 2 boots read-only and hydrates: ``catch_up_s`` is from its start until it reports
   ReadyToPromote (stability period 0 and a 50 ms check interval, so the figure is hydration
   plus catch-up, not the safety margins);
3. promote: ``promote_to_leader_ms`` from the promote request until the status API says
   IsLeader (polled every 2 ms; ``promote_server_ms`` is the process's own measure from
   /metrics): the new generation serves reads and takes writes; ``promote_to_first_write_ms``
   until an INSERT sent on a connection opened before the promotion is acknowledged — it
   includes the new leader's wait for the fenced leader's read lease to end
   (`NEW_LEADER_WAIT_S`, 245 ms after the fence; adapter/linearize.py); ``old_exit_ms`` until
   generation 1 has exited; ``first_read_after_promote_s`` is the first full read of every
   collection on the new leader;
4. ``cold_hydration_s``: generation 2 restarted (leader at C == G), from its start until every
   collection answers in full — what a client waits for in a stop-and-restart upgrade. The
   baseline ratio is ``promote_to_leader_ms`` over that.

Goal: promote <= 50 ms. Adding an indexed view later means one more `Collection` (its DDL and
a query that reads it in full); the caught-up check and the steps above cover it unchanged.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from twinstream.cli.bench import BenchOptions
from twinstream.testing.environmentd import EnvironmentdProcess

DEFAULT_ROWS = 1_000_000
COPY_CHUNK_ROWS = 100_000
DEADLINE_S = 3600.0
STATUS_POLL_S = 0.002
FAST_CHECKS = [
    "--system-param",
    "with_0dt_caught_up_check_stability_period=0ms",
    "--system-param",
    "with_0dt_deployment_caught_up_check_interval=50ms",
]


@dataclass(frozen=True)
class Collection:
    """Something the new generation must hydrate: how to create it, how to read it in full."""

    name: str
    ddl: tuple[str, ...]
    count_query: str
    #: Rows it holds for `rows` table rows.
    expected: str = "rows"


COLLECTIONS = (
    Collection("big", ("CREATE TABLE big (k int NOT NULL, v text)",), "SELECT count(*) FROM big"),
    # An indexed view (when compute is wired to DDL):
    # Collection("big_by_bucket", ("CREATE MATERIALIZED VIEW ... FROM big GROUP BY k % 1000",
    #            "CREATE INDEX ON big_by_bucket (bucket)"), "SELECT count(*) FROM big_by_bucket",
    #            expected="buckets"),
)


def _sql(env: EnvironmentdProcess, stmt: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(env.conninfo(), autocommit=True) as conn:
        cur = conn.execute(stmt)
        return cur.fetchall() if cur.description else []


def _http(env: EnvironmentdProcess, method: str, path: str) -> str:
    req = urllib.request.Request(f"http://127.0.0.1:{env.internal_http_port}{path}", method=method)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return str(resp.read().decode())


def _status(env: EnvironmentdProcess) -> str:
    return str(json.loads(_http(env, "GET", "/api/leader/status"))["status"])


def _wait(pred: Any, what: str, poll_s: float = 0.02) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(poll_s)  # poll interval
    raise RuntimeError(f"timed out waiting for {what}")


def _load(env: EnvironmentdProcess, rows: int) -> None:
    with psycopg.connect(env.conninfo(), autocommit=True) as conn:
        for c in COLLECTIONS:
            for stmt in c.ddl:
                conn.execute(stmt)
        conn.execute("CREATE TABLE w (n int)")
        for start in range(0, rows, COPY_CHUNK_ROWS):
            with conn.cursor().copy("COPY big FROM STDIN") as copy:
                for i in range(start, min(rows, start + COPY_CHUNK_ROWS)):
                    copy.write_row((i, f"value-{i}"))


def _read_all(env: EnvironmentdProcess, rows: int) -> None:
    with psycopg.connect(env.conninfo(), autocommit=True) as conn:
        for c in COLLECTIONS:
            got = conn.execute(c.count_query).fetchone()
            assert got == (rows,), (c.name, got)


class Writer:
    """Inserts into `w` on generation 1 until it is fenced: live traffic during catch-up."""

    def __init__(self, env: EnvironmentdProcess) -> None:
        self.env = env
        self.acked = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with psycopg.connect(self.env.conninfo(), autocommit=True) as conn:
                while not self.stop.is_set():
                    conn.execute("INSERT INTO w VALUES (%s)", (self.acked,))
                    self.acked += 1
                    self.stop.wait(0.01)  # a light, steady write load
        except psycopg.Error:
            return  # fenced out: the old generation is gone


def _watch_exit(env: EnvironmentdProcess, at: list[float]) -> None:
    """Record when `env` exits (measured beside the promotion, not after it)."""
    _wait(lambda: env.proc is not None and env.proc.poll() is not None, "old exit", 0.002)
    at.append(time.perf_counter())


def _run(opts: BenchOptions) -> dict[str, Any]:
    rows = opts.rows or DEFAULT_ROWS
    out: dict[str, Any] = {"rows": rows, "collections": [c.name for c in COLLECTIONS]}
    with tempfile.TemporaryDirectory(prefix="twinstream-bench-promote-") as tmp:
        data_dir = Path(tmp) / "env"
        old = EnvironmentdProcess(data_dir, generation=1)
        new = EnvironmentdProcess(data_dir, generation=2, extra_args=FAST_CHECKS)
        try:
            old.start()
            opts.log(f"loading {rows:,} rows ...")
            t0 = time.perf_counter()
            _load(old, rows)
            out["load_s"] = round(time.perf_counter() - t0, 3)
            t0 = time.perf_counter()
            _read_all(old, rows)
            out["leader_first_read_s"] = round(time.perf_counter() - t0, 3)
            writer = Writer(old)
            writer.thread.start()

            opts.log("generation 2 catching up ...")
            t0 = time.perf_counter()
            new.start()
            out["boot_s"] = round(time.perf_counter() - t0, 3)
            _wait(lambda: _status(new) == "ReadyToPromote", "ReadyToPromote")
            out["catch_up_s"] = round(time.perf_counter() - t0, 3)

            opts.log("promoting ...")
            assert old.proc is not None
            t0 = time.perf_counter()
            old_exit: list[float] = []
            watcher = threading.Thread(target=_watch_exit, args=(old, old_exit), daemon=True)
            with psycopg.connect(new.conninfo(), autocommit=True) as probe:
                watcher.start()
                t0 = time.perf_counter()
                _http(new, "POST", "/api/leader/promote")
                _wait(lambda: _status(new) == "IsLeader", "IsLeader", STATUS_POLL_S)
                out["promote_to_leader_ms"] = round((time.perf_counter() - t0) * 1000, 1)
                probe.execute("INSERT INTO w VALUES (-1)")
                out["promote_to_first_write_ms"] = round((time.perf_counter() - t0) * 1000, 1)
            watcher.join()
            out["old_exit_ms"] = round((old_exit[0] - t0) * 1000, 1)
            out["old_exit_code"] = old.proc.returncode
            m = re.search(
                r"twinstream_promotion_duration_ms ([0-9.]+)", _http(new, "GET", "/metrics")
            )
            out["promote_server_ms"] = round(float(m.group(1)), 1) if m else None
            steps = re.search(r"promoted to leader in .*", new.log_path.read_text(errors="replace"))
            out["promote_log"] = steps.group(0) if steps else None
            writer.stop.set()
            writer.thread.join()
            t0 = time.perf_counter()
            _read_all(new, rows)
            out["first_read_after_promote_s"] = round(time.perf_counter() - t0, 3)
            written = _sql(new, "SELECT count(*) FROM w WHERE n >= 0")[0][0]
            out["writes_acked"] = writer.acked
            out["writes_lost"] = max(0, writer.acked - int(written))

            opts.log("cold hydration (restart) ...")
            new.stop()
            t0 = time.perf_counter()
            new.start()
            _read_all(new, rows)
            out["cold_hydration_s"] = round(time.perf_counter() - t0, 3)
        finally:
            new.stop()
            old.stop()
    out["promote_vs_cold_ratio"] = round(
        out["promote_to_leader_ms"] / 1000 / max(out["cold_hydration_s"], 1e-9), 5
    )
    out["goal_promote_ms"] = 50
    return out


async def run(opts: BenchOptions) -> dict[str, Any]:
    return await asyncio.to_thread(_run, opts)
