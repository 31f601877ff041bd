"""Child process: take K write timestamps from the shared oracle and print them."""

from __future__ import annotations

import asyncio
import json
import sys

from twinstream.adapter.oracle import TimestampOracle
from twinstream.clock import SYSTEM_CLOCK
from twinstream.persist import open_consensus


async def main(url: str, k: int) -> None:
    consensus = open_consensus(url)
    oracle = TimestampOracle(consensus, SYSTEM_CLOCK)
    out = []
    for _ in range(k):
        ts = await oracle.write_ts()
        out.append(ts)
        await oracle.apply_write(ts)
    await consensus.close()
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
