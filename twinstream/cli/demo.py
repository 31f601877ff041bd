"""`twinstream demo`: a live upgrade under the full workload, then checks and a report.

In a temporary directory: start an environment (orchestrator + balancer + generation 0) with an
AUCTION load-generator source, tables, materialized views (over the auction data, over the
tables, a join) and indexes; run clients through the balancer (`demo_workload.py`: writers,
read-your-writes and freshness readers, one SUBSCRIBE, occasional DDL); perform upgrades; then
check that every acknowledged write is present exactly once, that every materialized view
equals its query evaluated ad hoc and that the subscription ends equal to its view. The report
has statements, failed, retried, max stall, p99 latency steady vs during upgrades, promote ms,
lost writes, view and subscription figures, and a latency-over-time chart (terminal, PNG).
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
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console

from twinstream.cli.demo_workload import SUBSCRIBE_TARGET, Sample, Workload
from twinstream.orchestrator.rollout import Orchestrator

WRITERS = 4
READERS = 2
#: The AUCTION source's tick: one auction with a few bids per tick (full / --quick).
TICK_INTERVAL = "250ms"
QUICK_TICK_INTERVAL = "500ms"
#: Materialized views and the queries they must equal at the end (evaluated ad hoc).
VIEWS: dict[str, str] = {
    "mv_max_bid": "SELECT auction_id, max(amount) AS top, count(*) AS bids "
    "FROM bids GROUP BY auction_id",
    "mv_user_bids": "SELECT buyer, count(*) AS n, sum(amount) AS total FROM bids GROUP BY buyer",
    "mv_org_auctions": "SELECT u.org_id, count(*) AS auctions "
    "FROM auctions a JOIN users u ON u.id = a.seller GROUP BY u.org_id",
    "mv_writer_counts": "SELECT writer, count(*) AS n, max(n) AS last "
    "FROM demo_writes GROUP BY writer",
    "mv_ryw_last": "SELECT reader, max(k) AS k FROM demo_ryw GROUP BY reader",
}
INDEXES = {
    "mv_max_bid_idx": "mv_max_bid (auction_id)",
    "mv_ryw_last_idx": "mv_ryw_last (reader)",
    "mv_writer_counts_idx": "mv_writer_counts (writer)",
}
#: How long the final checks wait for a view / the subscription to reach the end state.
SETTLE_S = 30.0


def setup_sql(tick: str) -> list[str]:
    return [
        f"CREATE SOURCE auction FROM LOAD GENERATOR AUCTION (TICK INTERVAL '{tick}') "
        "FOR ALL TABLES",
        "CREATE TABLE demo_writes (writer int NOT NULL, n int NOT NULL)",
        "CREATE TABLE demo_ryw (reader int NOT NULL, k int NOT NULL)",
        *[f"CREATE MATERIALIZED VIEW {name} AS {q}" for name, q in VIEWS.items()],
        *[f"CREATE INDEX {name} ON {on}" for name, on in INDEXES.items()],
    ]


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


async def _mv_mismatches(conn: psycopg.AsyncConnection[Any]) -> dict[str, int]:
    """Rows in the symmetric difference of each view and its query, in ONE statement each (one
    read timestamp, so the ticking source cannot make them differ); a view that differs is
    asked again until SETTLE_S (the view may lag its inputs only within a statement's wait)."""
    out: dict[str, int] = {}
    for name, query in VIEWS.items():
        sql = (
            f"SELECT count(*) FROM ((SELECT * FROM {name} EXCEPT ALL {query}) "
            f"UNION ALL ({query} EXCEPT ALL SELECT * FROM {name})) AS d"
        )
        deadline = time.monotonic() + SETTLE_S
        while True:
            cur = await conn.execute(sql)
            row = await cur.fetchone()
            out[name] = int(row[0]) if row else -1
            if out[name] == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)  # poll: the check has no change feed to wait on
    return out


async def _subscription_settles(work: Workload, conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether the subscription's accumulated state reaches the view's final contents."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        cur = await conn.execute(f"SELECT * FROM {SUBSCRIBE_TARGET}")
        want = Counter(tuple(str(v) for v in row) for row in await cur.fetchall())
        if work.sub.state == want:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)  # poll: progress arrives with the source's ticks


def _count(rows: list[tuple[Any, ...]]) -> Counter[tuple[int, int]]:
    return Counter((int(r[0]), int(r[1])) for r in rows)


async def run_demo(
    *,
    upgrades: int,
    quick: bool,
    console: Console,
    naive: bool = False,
    writers: int = WRITERS,
    readers: int = READERS,
) -> dict[str, Any]:
    """The demo's workload and checks; `naive` upgrades by stop-old-start-new (the baseline)."""
    # SIGTERM cancels the demo so that its `finally` stops every process it started (they run
    # in their own sessions and would otherwise outlive it).
    task = asyncio.current_task()
    assert task is not None
    with contextlib.suppress(NotImplementedError, RuntimeError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    t_begin = time.monotonic()
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
                for sql in setup_sql(QUICK_TICK_INTERVAL if quick else TICK_INTERVAL):
                    await conn.execute(sql)
            console.print(
                f"AUCTION source, 2 tables, {len(VIEWS)} materialized views, "
                f"{len(INDEXES)} indexes; {writers} writers, {readers} readers, "
                "1 SUBSCRIBE, 1 DDL client"
            )
            work = Workload(conninfo, ddl_pause_s=1.0 if quick else 1.5)
            clients = [asyncio.create_task(work.writer(w)) for w in range(writers)]
            clients += [asyncio.create_task(work.reader(r)) for r in range(readers)]
            clients.append(asyncio.create_task(work.ddl()))
            subscriber = asyncio.create_task(work.subscriber())
            start = time.monotonic()
            steady_s = 2.0 if quick else 5.0
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
                    f"(promote {promote_ms[-1]:.0f} ms, upgrade {time.monotonic() - a:.1f} s)"
                )
                await asyncio.sleep(steady_s)  # steady load between upgrades
            work.stop.set()
            await asyncio.gather(*clients)
            end = time.monotonic()
            console.print("checking: writes exactly once, views = their queries, subscription")
            ep = record.active_endpoint()
            assert ep is not None
            direct = f"host=127.0.0.1 port={ep.sql_port} user=twinstream dbname=twinstream"
            async with await psycopg.AsyncConnection.connect(direct, autocommit=True) as conn:
                cur = await conn.execute("SELECT writer, n FROM demo_writes")
                writes = _count(await cur.fetchall())
                cur = await conn.execute("SELECT reader, k FROM demo_ryw")
                markers = _count(await cur.fetchall())
                mismatches = await _mv_mismatches(conn)
                sub_settled = await _subscription_settles(work, conn)
                cur = await conn.execute("SELECT count(*) FROM bids")
                bids_row = await cur.fetchone()
            subscriber.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await subscriber
        finally:
            if balancer is not None:
                await balancer.close()
            await orch.down()
            await orch.close()
    lost = len([k for k in work.acked if k not in writes])
    lost += len([k for k in work.acked_markers if k not in markers])
    duplicated = len([k for k, c in writes.items() if c > 1])
    duplicated += len([k for k, c in markers.items() if c > 1])

    def during(s: Sample) -> bool:
        return any(a <= s.at <= b for a, b in windows)

    # Latency figures are over the clients' DML and queries; DDL (hundreds of ms by nature:
    # catalog transaction, dataflow install) has its own figures.
    dml = [s for s in work.samples if not s.ddl]
    ddl = [s for s in work.samples if s.ddl]
    steady = [s.latency_ms for s in dml if not during(s)]
    upgrading = [s.latency_ms for s in dml if during(s)]
    report: dict[str, Any] = {
        "upgrades": upgrades,
        "statements": len(work.samples),
        "failed_statements": work.failed,
        "retried_statements": balancer.stats().retried if balancer else 0,
        "lost_writes": lost,
        "duplicated_writes": duplicated,
        "acknowledged_writes": len(work.acked) + len(work.acked_markers),
        "max_stall_ms": round(max((s.latency_ms for s in dml), default=0.0), 1),
        "p99_steady_ms": round(_p99(steady), 2),
        "p99_upgrade_ms": round(_p99(upgrading), 2),
        "p50_ms": round(statistics.median([s.latency_ms for s in dml]), 2) if dml else 0.0,
        "promote_ms": round(max(promote_ms), 1) if promote_ms else None,
        "promote_ms_each": [round(p, 1) for p in promote_ms],
        "moved_sessions": balancer.stats().moved if balancer else 0,
        "tx_aborted_40001": balancer.stats().tx_aborted_40001 if balancer else 0,
        "read_your_writes_checks": work.ryw_checks,
        "read_your_writes_violations": work.ryw_violations,
        "mv_freshness_violations": work.mv_freshness_violations,
        "materialized_views": len(VIEWS),
        "indexes": len(INDEXES),
        "mv_mismatches": sum(1 for v in mismatches.values() if v != 0),
        "mv_mismatch_rows": {k: v for k, v in mismatches.items() if v != 0},
        "source_bids": int(bids_row[0]) if bids_row else 0,
        "source_lag_p50_ms": round(statistics.median(work.source_lag_ms), 1)
        if work.source_lag_ms
        else None,
        "source_lag_max_ms": round(max(work.source_lag_ms), 1) if work.source_lag_ms else None,
        "subscribe_rows": work.sub.rows,
        "subscribe_progress": work.sub.progress,
        "subscribe_resumes": work.sub.resumes,
        "subscribe_resume_mismatches": work.sub.resume_mismatches,
        "subscribe_matches_view": sub_settled,
        "ddl_statements": work.ddl_statements,
        "ddl_during_upgrade": sum(1 for t in work.ddl_at if any(a <= t <= b for a, b in windows)),
        "ddl_max_ms": round(max((s.latency_ms for s in ddl), default=0.0), 1),
        "load_seconds": round(end - start, 1),
        "total_seconds": round(time.monotonic() - t_begin, 1),
        "through_balancer": balancer is not None,
    }
    report["_chart"] = _chart(dml, start, windows)
    report["_samples"] = [(s.at - start, s.latency_ms, s.ok, s.ddl) for s in work.samples]
    report["_windows"] = [(a - start, b - start) for a, b in windows]
    report["_errors"] = work.errors + [f"(subscribe, resumed) {e}" for e in work.sub.errors]
    return report


def failures(report: dict[str, Any]) -> list[str]:
    """What makes the demo fail: lost or duplicated acknowledged writes, failed statements
    (every statement of the demo runs outside a transaction), and wrong results."""
    out = []
    for key in (
        "lost_writes",
        "duplicated_writes",
        "failed_statements",
        "read_your_writes_violations",
        "mv_freshness_violations",
        "mv_mismatches",
        "subscribe_resume_mismatches",
    ):
        if report.get(key):
            out.append(f"{key} = {report[key]}")
    if report.get("subscribe_matches_view") is False:
        out.append("the subscription did not end equal to its view")
    return out


def write_png(report: dict[str, Any], path: Path) -> None:
    from twinstream.cli import png

    points = [
        (t, ms, png.FAILED if not ok else png.DDL if ddl else png.OK)
        for t, ms, ok, ddl in report["_samples"]
    ]
    path.write_bytes(png.latency_png(points, report["_windows"]))


def print_report(report: dict[str, Any], console: Console) -> None:
    console.print("\n[bold]twinstream demo report[/bold]")
    for key, value in report.items():
        if not key.startswith("_"):
            console.print(f"  {key:28} {value}", markup=False)
    console.print("\nlatency over time (max per slot, DML and queries):")
    console.print(report["_chart"], markup=False, style="cyan", soft_wrap=True)
    if report["_errors"]:
        console.print("\nfirst errors:")
        for e in report["_errors"][:5]:
            console.print(f"  {e}", markup=False)
    bad = failures(report)
    if bad:
        console.print("[bold red]FAILED[/bold red]: " + "; ".join(bad))
    else:
        console.print(
            "[bold green]OK[/bold green]: no acknowledged write lost or duplicated, "
            "no failed statement, views and subscription consistent"
        )


def demo_main(
    *,
    upgrades: int,
    quick: bool,
    json_output: bool,
    png_path: Path | None = None,
    writers: int = WRITERS,
    readers: int = READERS,
) -> int:
    console = Console(stderr=json_output)
    try:
        report = asyncio.run(
            run_demo(
                upgrades=upgrades, quick=quick, console=console, writers=writers, readers=readers
            )
        )
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.print("demo interrupted; everything it started was stopped")
        return 130
    if png_path is not None:
        write_png(report, png_path)
        console.print(f"latency chart written to {png_path}")
    if json_output:
        sys.stdout.write(
            json.dumps({k: v for k, v in report.items() if not k.startswith("_")}) + "\n"
        )
        bad = failures(report)
        if bad:  # stdout stays one JSON line; say why on stderr
            console.print("FAILED: " + "; ".join(bad), markup=False)
            for e in report["_errors"][:5]:
                console.print(f"  {e}", markup=False)
    else:
        print_report(report, console)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    return 1 if failures(report) else 0
