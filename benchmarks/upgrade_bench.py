"""Upgrade benchmark: ``twinstream bench upgrade --json``.

Runs the demo's workload (AUCTION source, materialized views and indexes; writers,
read-your-writes readers, a SUBSCRIBE and DDL through the balancer) twice in
the same run: once with 3 zero-downtime upgrades, once with the naive baseline "stop the old
generation, start the new one" (clients reconnect through the same balancer). Prints the
figures of both and the ratios.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console

from twinstream.cli.bench import BenchOptions
from twinstream.cli.demo import run_demo

KEYS = (
    "statements",
    "failed_statements",
    "retried_statements",
    "lost_writes",
    "max_stall_ms",
    "p99_steady_ms",
    "p99_upgrade_ms",
    "promote_ms",
    "duplicated_writes",
    "mv_mismatches",
    "subscribe_resumes",
)


async def run(opts: BenchOptions) -> dict[str, Any]:
    console = Console(stderr=True)
    quick = opts.seconds < 5.0
    ours = await run_demo(upgrades=3, quick=quick, console=console)
    naive = await run_demo(upgrades=3, quick=quick, console=console, naive=True)
    out: dict[str, Any] = {"upgrades": 3}
    for key in KEYS:
        out[key] = ours[key]
        out[f"naive_{key}"] = naive[key]
    if naive["max_stall_ms"]:
        out["stall_ratio"] = round(ours["max_stall_ms"] / naive["max_stall_ms"], 3)
    return out
