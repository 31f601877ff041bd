"""The timestamp oracle: monotonic across processes; read-only handles never advance it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from twinstream.adapter.oracle import OracleReadOnly, TimestampOracle
from twinstream.clock import SYSTEM_CLOCK, ManualClock
from twinstream.persist import open_consensus
from twinstream.persist.mem import MemConsensus
from twinstream.testing.locations import Location


async def test_write_ts_strictly_increases_and_tracks_wall_clock() -> None:
    clock = ManualClock(1_000)
    oracle = TimestampOracle(MemConsensus(), clock)
    a = await oracle.write_ts()
    b = await oracle.write_ts()
    assert a == 1_000 and b == 1_001, "same wall clock: strictly greater"
    clock.advance(5_000)
    c = await oracle.write_ts()
    assert c == 6_000, ">= wall clock"
    assert await oracle.read_ts() == 0
    await oracle.apply_write(b)
    assert await oracle.read_ts() == b
    await oracle.apply_write(a)
    assert await oracle.read_ts() == b, "read_ts never goes back"


async def test_read_only_handle_never_advances() -> None:
    consensus = MemConsensus()
    clock = ManualClock(1_000)
    leader = TimestampOracle(consensus, clock)
    follower = TimestampOracle(consensus, clock, read_only=True)
    ts = await leader.write_ts()
    await leader.apply_write(ts)
    before = await consensus.head("oracle/user")
    assert await follower.read_ts() == ts
    with pytest.raises(OracleReadOnly):
        await follower.write_ts()
    with pytest.raises(OracleReadOnly):
        await follower.apply_write(ts + 10)
    assert await consensus.head("oracle/user") == before, "read-only handle wrote"


def _run_procs(url: str, procs: int, k: int) -> list[list[int]]:
    script = Path(__file__).with_name("_oracle_proc.py")
    ps = [
        subprocess.Popen(
            [sys.executable, str(script), url, str(k)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(procs)
    ]
    out = []
    for p in ps:
        stdout, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


async def test_monotonic_across_processes(location: Location) -> None:
    results = await asyncio.to_thread(_run_procs, location.consensus_url, 3, 50)
    every = [ts for r in results for ts in r]
    assert len(set(every)) == len(every), "two processes got the same write timestamp"
    for r in results:
        assert r == sorted(r) and len(set(r)) == len(r), "per process strictly increasing"
    consensus = open_consensus(location.consensus_url)
    try:
        oracle = TimestampOracle(consensus, SYSTEM_CLOCK, read_only=True)
        assert await oracle.read_ts() == max(every)
        assert await oracle.peek_write_ts() == max(every)
    finally:
        await consensus.close()
