"""`twinstream demo`: a live upgrade under load, then a report.

In a temporary directory: start an environment (orchestrator + balancer), create tables and
views, run clients through the balancer (writers inserting numbered rows, readers checking
read-your-writes, occasional DDL), perform upgrades, then check that every acknowledged write
is present exactly once. The report has statements, failed, retried, max stall, p99 latency
steady vs during upgrades, promote ms and lost writes, plus a latency-over-time chart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console

from twinstream.orchestrator.rollout import Orchestrator

WRITERS = 4
READERS = 2


@dataclass
class Sample:
    at: float
    latency_ms: float
    ok: bool


@dataclass
class Workload:
    conninfo: str
    samples: list[Sample] = field(default_factory=list)
    acked: set[tuple[int, int]] = field(default_factory=set)
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    ryw_violations: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _timed(
        self, conn: psycopg.AsyncConnection[Any], sql: str, params: tuple[object, ...] = ()
    ) -> list[tuple[Any, ...]] | None:
        t0 = time.monotonic()
        try:
            cur = await conn.execute(sql, params)
            rows = await cur.fetchall() if cur.description else []
        except psycopg.Error as e:
            self.samples.append(Sample(t0, (time.monotonic() - t0) * 1000, False))
            self.failed += 1
            if len(self.errors) < 20:
                self.errors.append(f"{type(e).__name__}: {e}".splitlines()[0])
            return None
        self.samples.append(Sample(t0, (time.monotonic() - t0) * 1000, True))
        return rows

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        while True:  # bounded by the demo's stop: the balancer holds, it does not refuse
            try:
                return await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
            except psycopg.OperationalError:
                self.failed += 1
                await asyncio.sleep(0.05)  # reconnect pause after a refused connection

    async def writer(self, w: int) -> None:
        conn = await self._connect()
        n = 0
        while not self.stop.is_set():
            rows = await self._timed(conn, "INSERT INTO demo_writes VALUES (%s, %s)", (w, n))
            if rows is not None:
                self.acked.add((w, n))
            elif conn.closed:
                conn = await self._connect()
            n += 1
            await asyncio.sleep(0.005)  # pacing: a steady, not saturating, load
        await conn.close()

    async def reader(self, r: int) -> None:
        conn = await self._connect()
        n = 0
        while not self.stop.is_set():
            marker = 1_000_000 + r * 100_000 + n
            wrote = await self._timed(conn, "INSERT INTO demo_ryw VALUES (%s)", (marker,))
            if wrote is not None:
                rows = await self._timed(
                    conn, "SELECT count(*) FROM demo_ryw WHERE m = %s", (marker,)
                )
                if rows is not None and rows[0][0] != 1:
                    self.ryw_violations += 1
            elif conn.closed:
                conn = await self._connect()
            n += 1
            await asyncio.sleep(0.01)  # pacing
        await conn.close()


def _p99(values: list[float]) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[max(0, int(len(values) * 0.99) - 1)]


def _chart(
    samples: list[Sample],
    start: float,
    windows: list[tuple[float, float]],
    width: int = 60,
    height: int = 8,
) -> str:
    if not samples:
        return "(no samples)"
    end = max(s.at for s in samples)
    span = max(end - start, 1e-6)
    buckets: list[list[float]] = [[] for _ in range(width)]
    for s in samples:
        i = min(width - 1, int((s.at - start) / span * width))
        buckets[i].append(s.latency_ms)
    peaks = [max(b) if b else 0.0 for b in buckets]
    top = max(peaks) or 1.0
    rows = []
    for level in range(height, 0, -1):
        line = "".join("█" if p >= top * level / height else " " for p in peaks)
        rows.append(f"{top * level / height:8.1f} ms |{line}")
    marks = [" "] * width
    for a, b in windows:
        for i in range(int((a - start) / span * width), int((b - start) / span * width) + 1):
            if 0 <= i < width:
                marks[i] = "^"
    rows.append(" " * 11 + "+" + "-" * width)
    rows.append(" " * 12 + "".join(marks) + "  (^ = upgrade)")
    return "\n".join(rows)


async def run_demo(
    *, upgrades: int, quick: bool, console: Console, naive: bool = False
) -> dict[str, Any]:
    """The demo's workload and checks; `naive` upgrades by stop-old-start-new (the baseline)."""
    # SIGTERM cancels the demo so that its `finally` stops every process it started (they run
    # in their own sessions and would otherwise outlive it).
    task = asyncio.current_task()
    assert task is not None
    with contextlib.suppress(NotImplementedError, RuntimeError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with tempfile.TemporaryDirectory(prefix="twinstream-demo-") as tmp:
        orch = Orchestrator(Path(tmp) / "env")
        balancer: Any = None
        try:
            record = await orch.up()
            from twinstream.cli.ops import _start_balancer

            balancer = await _start_balancer(orch, 0)
            if balancer is not None:
                port = balancer.port
            else:
                ep = record.active_endpoint()
                assert ep is not None
                port = ep.sql_port
            conninfo = f"host=127.0.0.1 port={port} user=twinstream dbname=twinstream"
            console.print(f"environment up (generation 0), clients connect to port {port}")
            # The balancer runs on this event loop: only asynchronous clients here.
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                await conn.execute("CREATE TABLE demo_writes (writer int NOT NULL, n int NOT NULL)")
                await conn.execute("CREATE TABLE demo_ryw (m int NOT NULL)")
                await conn.execute(
                    "CREATE VIEW demo_counts AS SELECT writer, count(*) AS n "
                    "FROM demo_writes GROUP BY writer"
                )
            work = Workload(conninfo)
            tasks = [asyncio.create_task(work.writer(w)) for w in range(WRITERS)]
            tasks += [asyncio.create_task(work.reader(r)) for r in range(READERS)]
            start = time.monotonic()
            steady_s = 1.0 if quick else 3.0
            windows: list[tuple[float, float]] = []
            promote_ms: list[float] = []
            await asyncio.sleep(steady_s)  # steady-state load before the first upgrade
            for i in range(upgrades):
                a = time.monotonic()
                console.print(f"upgrade {i + 1}/{upgrades} ...")

                def progress(phase: str, info: dict[str, object]) -> None:
                    if phase == "promoted":
                        promote_ms.append(float(info["promote_ms"]))  # type: ignore[arg-type]

                if naive:
                    record = await orch.restart_upgrade(progress=progress)
                else:
                    record = await orch.upgrade(progress=progress)
                windows.append((a, time.monotonic()))
                console.print(
                    f"  generation {record.active_generation} is leader "
                    f"(promote {promote_ms[-1]:.0f} ms)"
                )
                await asyncio.sleep(steady_s)  # steady load between upgrades
            work.stop.set()
            await asyncio.gather(*tasks)
            ep = record.active_endpoint()
            assert ep is not None
            direct = f"host=127.0.0.1 port={ep.sql_port} user=twinstream dbname=twinstream"
            async with await psycopg.AsyncConnection.connect(direct, autocommit=True) as conn:
                cur = await conn.execute("SELECT writer, n FROM demo_writes")
                present = await cur.fetchall()
        finally:
            if balancer is not None:
                await balancer.close()
            await orch.down()
            await orch.close()
    counted: dict[tuple[int, int], int] = {}
    for row in present:
        key = (int(row[0]), int(row[1]))
        counted[key] = counted.get(key, 0) + 1
    lost = len([k for k in work.acked if k not in counted])
    duplicated = len([k for k, c in counted.items() if c > 1])
    in_window = [s for s in work.samples if any(a <= s.at <= b for a, b in windows)]
    steady = [s for s in work.samples if not any(a <= s.at <= b for a, b in windows)]
    stall = max((s.latency_ms for s in work.samples), default=0.0)
    report: dict[str, Any] = {
        "upgrades": upgrades,
        "statements": len(work.samples),
        "failed_statements": work.failed,
        "retried_statements": balancer.stats().retried if balancer else 0,
        "moved_sessions": balancer.stats().moved if balancer else 0,
        "lost_writes": lost,
        "duplicated_writes": duplicated,
        "acknowledged_writes": len(work.acked),
        "read_your_writes_violations": work.ryw_violations,
        "max_stall_ms": round(stall, 1),
        "p99_steady_ms": round(_p99([s.latency_ms for s in steady]), 2),
        "p99_upgrade_ms": round(_p99([s.latency_ms for s in in_window]), 2),
        "p50_ms": round(statistics.median([s.latency_ms for s in work.samples]), 2)
        if work.samples
        else 0.0,
        "promote_ms": round(max(promote_ms), 1) if promote_ms else None,
        "through_balancer": balancer is not None,
    }
    report["_chart"] = _chart(work.samples, start, windows)
    report["_errors"] = work.errors
    return report


def print_report(report: dict[str, Any], console: Console) -> None:
    console.print("\n[bold]twinstream demo report[/bold]")
    for key, value in report.items():
        if not key.startswith("_"):
            console.print(f"  {key:28} {value}")
    console.print("\nlatency over time (max per slot):")
    console.print(report["_chart"], markup=False)
    if report["_errors"]:
        console.print("\nfirst errors:")
        for e in report["_errors"][:5]:
            console.print(f"  {e}", markup=False)


def demo_main(*, upgrades: int, quick: bool, json_output: bool) -> int:
    console = Console(stderr=json_output)
    try:
        report = asyncio.run(run_demo(upgrades=upgrades, quick=quick, console=console))
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.print("demo interrupted; everything it started was stopped")
        return 130
    if json_output:
        sys.stdout.write(
            json.dumps({k: v for k, v in report.items() if not k.startswith("_")}) + "\n"
        )
    else:
        print_report(report, console)
    ok = report["lost_writes"] == 0 and report["duplicated_writes"] == 0
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    return 0 if ok else 1
