"""N processes x M rounds of compare-and-append on one shard: exactly one winner per round,
no lost or duplicated update — on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from twinstream.persist import PersistClient
from twinstream.testing.locations import Location

PROCS = 4
ROUNDS = 40


def _race(location: Location) -> list[list[int]]:
    script = Path(__file__).with_name("_race_proc.py")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                location.consensus_url,
                location.blob_url,
                str(i),
                str(ROUNDS),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(PROCS)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, _ = p.communicate(timeout=120)
            assert p.returncode == 0
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


async def test_racing_processes_one_winner_per_round(location: Location) -> None:
    wins = await asyncio.to_thread(_race, location)
    all_wins = sorted(r for w in wins for r in w)
    assert all_wins == list(range(ROUNDS)), "each round must have exactly one winner"
    client = PersistClient.from_urls(location.consensus_url, location.blob_url)
    try:
        shard = client.open("race")
        assert await shard.upper() == ROUNDS
        contents = sorted(await shard.snapshot(ROUNDS - 1))
        expected = sorted(((p, r), 1) for p, w in enumerate(wins) for r in w)
        assert contents == expected, "no lost or duplicated update"
    finally:
        await client.close()
