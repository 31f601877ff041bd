"""Child process of the fencing tests: one environmentd-like process of deploy generation G.

    python _catalog_proc.py CONSENSUS_URL BLOB_URL GENERATION START_DELAY_MS

Opens the catalog writable (after a randomized start delay chosen by the parent), prints
``opened G EPOCH``, then waits for one line on stdin and commits one item, printing
``committed TS``. A fence error at either step goes through `exit_if_fenced`, as the real
process does: a generation fence prints "fenced out by generation N" on stderr and exits 0;
anything else (an epoch fence included) crashes the process (exit code != 0).
"""

from __future__ import annotations

import asyncio
import sys

from twinstream.catalog import DurableCatalog, FenceError, OpenMode, exit_if_fenced
from twinstream.clock import SYSTEM_CLOCK
from twinstream.persist import PersistClient


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(consensus_url: str, blob_url: str, gen: int, delay_ms: float) -> None:
    client = PersistClient.from_urls(consensus_url, blob_url)
    try:
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)  # randomized start, chosen by the parent
        try:
            cat = await DurableCatalog.open(
                client, OpenMode.WRITABLE, deploy_generation=gen, clock=SYSTEM_CLOCK
            )
        except FenceError:
            say("fenced-at-open")
            raise
        assert cat.token is not None
        say(f"opened {gen} {cat.token.epoch}")
        await asyncio.to_thread(sys.stdin.readline)  # the parent says when to write
        try:
            txn = cat.transaction()
            item_id = txn.allocate_id("item")
            txn.insert("item", item_id, {"type": "table", "name": f"from-gen-{gen}"})
            ts = await cat.commit(txn)
            await cat.confirm_leadership()
        except FenceError:
            say("fenced-at-commit")
            raise
        say(f"committed {ts}")
    finally:
        await client.close()


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
    except FenceError as err:
        exit_if_fenced(err)  # a generation fence: exit 0
        raise
