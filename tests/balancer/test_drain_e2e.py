"""A busy leader stopped with SIGTERM behind the balancer (doc/design/cutover.md, "Draining").

Writers insert unique ids through the balancer; the leader is stopped (SIGTERM) and started
again on the same data dir, three times. The balancer re-sends every statement the old process
cut off with 57P01 to the restarted one. Before the drain, shutdown cut off sessions whose
INSERT was queued in group commit and then let the commit loop run on: the write landed, the
client's INSERT was re-sent, and the id appeared twice. Now every acknowledged id is there
exactly once and no id appears twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from pathlib import Path

import psycopg

from twinstream.balancer import Balancer, StaticRoute
from twinstream.testing.environmentd import EnvironmentdProcess

HOST = "127.0.0.1"
WRITERS = 8
RESTARTS = 3
DEADLINE_S = 60.0


async def wait_acked(acked: list[int], n: int) -> None:
    """Until `n` more writes were acknowledged than now."""
    target = len(acked) + n

    async def loop() -> None:
        while len(acked) < target:
            await asyncio.sleep(0.02)  # poll interval

    try:
        await asyncio.wait_for(loop(), DEADLINE_S)
    except TimeoutError:
        raise AssertionError(f"only {len(acked)} of {target} writes acknowledged") from None


async def test_sigterm_of_a_busy_leader_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    env = EnvironmentdProcess(tmp_path / "env", generation=1)
    await asyncio.to_thread(env.start)
    route = StaticRoute((1, HOST, env.sql_port))
    bal = Balancer(HOST, 0, route, hold_timeout_s=DEADLINE_S)
    await bal.start()
    dsn = f"host={HOST} port={bal.port} user=twinstream dbname=twinstream"
    acked: list[int] = []
    failed: list[str] = []
    stop = asyncio.Event()

    async def writer(w: int) -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            i = 0
            while not stop.is_set():
                ident = w * 1_000_000 + i
                i += 1
                try:
                    await conn.execute(f"INSERT INTO t VALUES ({ident})")
                except psycopg.Error as e:
                    failed.append(f"{ident}: {e!r}")
                    return
                acked.append(ident)

    try:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute("CREATE TABLE t (id bigint)")
        tasks = [asyncio.create_task(writer(w)) for w in range(WRITERS)]
        try:
            for _ in range(RESTARTS):
                await wait_acked(acked, 50)
                assert await asyncio.to_thread(env.stop) == 0, env.log_tail()
                await asyncio.to_thread(env.start)
                route.set(1, HOST, env.sql_port)
            await wait_acked(acked, 50)  # the restarted leader takes writes
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        assert not failed, failed[:5]
        async with await psycopg.AsyncConnection.connect(env.conninfo(), autocommit=True) as c:
            cur = await c.execute("SELECT id FROM t")
            ids = Counter(int(r[0]) for r in await cur.fetchall())
        twice = sorted(i for i, n in ids.items() if n > 1)
        assert not twice, f"{len(twice)} ids inserted twice, e.g. {twice[:5]}"
        missing = [i for i in acked if i not in ids]
        assert not missing, f"{len(missing)} acknowledged ids lost, e.g. {missing[:5]}"
    finally:
        await bal.close()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(env.stop)
