"""Many sessions at once: 100 concurrent asyncpg sessions writing and reading, concurrent
read-modify-write (no lost updates), cross-session visibility of acknowledged writes
(strict serializability), and a few psycopg threads."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import asyncpg
import psycopg
import pytest

from twinstream.testing.environmentd import EnvironmentdProcess

SESSIONS = 100
ROWS_PER_SESSION = 2
INCREMENTERS = 10
INCREMENTS_EACH = 3
THREADS = 10
#: Measured by test_many_sessions_insert_and_read (a second storm would cost ~12 s more).


async def connect(envd: EnvironmentdProcess) -> asyncpg.Connection:
    return await asyncpg.connect(
        host="127.0.0.1", port=envd.sql_port, user="twinstream", database="twinstream", timeout=30
    )


@pytest.fixture(scope="module")
def env(envd: EnvironmentdProcess) -> EnvironmentdProcess:
    with psycopg.connect(envd.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE conc_rows (session int4, seq int4, note text)")
        conn.execute("CREATE TABLE conc_counter (k int4, v int4)")
        conn.execute("INSERT INTO conc_counter VALUES (1, 0)")
        conn.execute("CREATE TABLE conc_seq (n int4)")
        conn.execute("CREATE TABLE conc_threads (t int4, n int4)")
    return envd


async def test_many_sessions_insert_and_read(env: EnvironmentdProcess) -> None:
    errors: list[BaseException] = []
    started = asyncio.Event()
    connected = 0

    async def session(i: int) -> list[int]:
        nonlocal connected
        conn = await connect(env)
        try:
            connected += 1
            if connected == SESSIONS:
                started.set()
            await asyncio.wait_for(started.wait(), 60)  # all 100 are open at once
            for j in range(ROWS_PER_SESSION):
                await conn.execute(
                    "INSERT INTO conc_rows (session, seq, note) VALUES ($1, $2, $3)",
                    i,
                    j,
                    f"s{i}-{j}",
                )
            rows = await conn.fetch("SELECT seq FROM conc_rows WHERE session = $1 ORDER BY seq", i)
            return [r["seq"] for r in rows]
        finally:
            await conn.close()

    results = await asyncio.gather(*(session(i) for i in range(SESSIONS)), return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            errors.append(r)
    assert not errors, f"{len(errors)} sessions failed, first: {errors[0]!r}"
    assert all(r == list(range(ROWS_PER_SESSION)) for r in results), results
    conn = await connect(env)
    try:
        total = await conn.fetchval("SELECT count(*) FROM conc_rows")
        distinct = await conn.fetchval("SELECT count(DISTINCT session) FROM conc_rows")
        sessions_left = await conn.fetchval("SELECT count(*) FROM mz_catalog.mz_sessions")
    finally:
        await conn.close()
    assert total == SESSIONS * ROWS_PER_SESSION
    assert distinct == SESSIONS
    assert sessions_left == 1  # only ours: closed sessions are unregistered


async def test_concurrent_updates_lose_nothing(env: EnvironmentdProcess) -> None:
    async def incrementer() -> None:
        conn = await connect(env)
        try:
            for _ in range(INCREMENTS_EACH):
                status = await conn.execute("UPDATE conc_counter SET v = v + 1 WHERE k = 1")
                assert status == "UPDATE 1"
        finally:
            await conn.close()

    await asyncio.gather(*(incrementer() for _ in range(INCREMENTERS)))
    conn = await connect(env)
    try:
        assert await conn.fetchval("SELECT v FROM conc_counter WHERE k = 1") == (
            INCREMENTERS * INCREMENTS_EACH
        )
    finally:
        await conn.close()


async def test_acknowledged_writes_visible_to_other_sessions(env: EnvironmentdProcess) -> None:
    writer = await connect(env)
    readers = [await connect(env) for _ in range(4)]
    try:
        for n in range(1, 16):
            await writer.execute("INSERT INTO conc_seq VALUES ($1)", n)
            counts = await asyncio.gather(
                *(r.fetchval("SELECT count(*) FROM conc_seq") for r in readers)
            )
            assert all(c == n for c in counts), (n, counts)
    finally:
        await writer.close()
        for r in readers:
            await r.close()


async def test_concurrent_transactions_commit_atomically(env: EnvironmentdProcess) -> None:
    async def txn(i: int) -> None:
        conn = await connect(env)
        try:
            async with conn.transaction():
                for j in range(3):
                    await conn.execute(
                        "INSERT INTO conc_rows (session, seq, note) VALUES ($1, $2, 'txn')",
                        1000 + i,
                        j,
                    )
        finally:
            await conn.close()

    async def observer(stop: asyncio.Event, seen: list[int]) -> None:
        conn = await connect(env)
        try:
            while not stop.is_set():
                n = await conn.fetchval("SELECT count(*) FROM conc_rows WHERE note = 'txn'")
                seen.append(n)
                await asyncio.sleep(0)
        finally:
            await conn.close()

    stop = asyncio.Event()
    seen: list[int] = []
    obs = asyncio.create_task(observer(stop, seen))
    await asyncio.gather(*(txn(i) for i in range(10)))
    stop.set()
    await obs
    assert all(n % 3 == 0 for n in seen), f"saw a partial transaction: {sorted(set(seen))}"
    conn = await connect(env)
    try:
        assert await conn.fetchval("SELECT count(*) FROM conc_rows WHERE note = 'txn'") == 30
    finally:
        await conn.close()


def test_threads_with_psycopg(env: EnvironmentdProcess) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def work(t: int) -> None:
        try:
            with psycopg.connect(env.conninfo(), autocommit=True) as conn:
                barrier.wait(timeout=30)
                for n in range(3):
                    conn.execute("INSERT INTO conc_threads (t, n) VALUES (%s, %s)", (t, n))
                got: Any = conn.execute(
                    "SELECT count(*) FROM conc_threads WHERE t = %s", (t,)
                ).fetchone()
                assert got == (3,), got
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors
    with psycopg.connect(env.conninfo(), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM conc_threads").fetchone() == (THREADS * 3,)
