"""Child process for the racing tests: M rounds of compare-and-append on one shard."""

from __future__ import annotations

import asyncio
import json
import sys

from twinstream.persist import PersistClient


async def main(consensus_url: str, blob_url: str, proc: int, rounds: int) -> None:
    client = PersistClient.from_urls(consensus_url, blob_url)
    shard = client.open("race", writer_id=f"p{proc}")
    wins: list[int] = []
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()  # start signal: all processes race from here
    for r in range(rounds):
        # Round r is the append that moves the upper from r to r + 1.
        while True:
            upper = await shard.upper()
            if upper > r:
                break
            out = await shard.compare_and_append([((proc, r), r, 1)], r, r + 1)
            if out is None:
                wins.append(r)
                break
    await client.close()
    sys.stdout.write(json.dumps(wins) + "\n")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
