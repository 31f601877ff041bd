"""PostgreSQL consensus and blob: the distributed backend.

Compare-and-set is one statement: insert seqno = expected + 1 only if the current max seqno is
`expected`, under a (shard, seqno) primary key. Under READ COMMITTED the primary key is what
serializes racing writers (two writers expecting the same head both try the same seqno; one waits
on the other and then does nothing), which is why the seqno must be exactly expected + 1.
Change notices use LISTEN/NOTIFY, sent in the same statement/transaction as the write.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool

from twinstream.persist.errors import LocationUnavailable
from twinstream.persist.location import CasOp, ChangeFeed, VersionedData, check_cas_op

T = TypeVar("T")

CHANNEL = "twinstream_persist"
_POOL_MAX = 8
_SCHEMA_LOCK_ID = 0x7477_696E  # "twin"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS consensus (
    shard TEXT NOT NULL,
    seqno BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (shard, seqno)
);
CREATE TABLE IF NOT EXISTS blob (
    key TEXT PRIMARY KEY,
    data BYTEA NOT NULL
);
"""

_CAS_ONE = """
WITH ins AS (
    INSERT INTO consensus (shard, seqno, data)
    SELECT %(key)s, %(seqno)s, %(data)s
    WHERE (SELECT max(seqno) FROM consensus WHERE shard = %(key)s)
          IS NOT DISTINCT FROM %(expected)s::bigint
    ON CONFLICT DO NOTHING
    RETURNING shard
)
SELECT pg_notify('twinstream_persist', shard) FROM ins
"""


class _Pg:
    """A lazily opened connection pool shared by consensus and blob on one URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: AsyncConnectionPool[Any] | None = None
        self._lock = asyncio.Lock()

    async def pool(self) -> AsyncConnectionPool[Any]:
        if self._pool is not None:
            return self._pool
        async with self._lock:
            if self._pool is None:
                pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=_POOL_MAX,
                    open=False,
                    kwargs={"autocommit": True},
                    timeout=30.0,
                )
                try:
                    await pool.open(wait=True, timeout=30.0)
                    async with pool.connection() as conn, conn.transaction():
                        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_ID,))
                        await conn.execute(_SCHEMA)
                except (psycopg.Error, Exception) as e:
                    await pool.close()
                    raise LocationUnavailable(f"postgres {_redact(self.url)}: {e}") from e
                self._pool = pool
        assert self._pool is not None
        return self._pool

    async def run(self, fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        pool = await self.pool()
        try:
            async with pool.connection() as conn:
                return await fn(conn)
        except psycopg.OperationalError as e:
            raise LocationUnavailable(f"postgres {_redact(self.url)}: {e}") from e
        except Exception as e:
            if type(e).__name__ == "PoolTimeout":
                raise LocationUnavailable(f"postgres {_redact(self.url)}: {e}") from e
            raise

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def _redact(url: str) -> str:
    if "@" in url and ":" in url.split("@", 1)[0].split("//", 1)[-1]:
        scheme, rest = url.split("//", 1)
        user, host = rest.split("@", 1)
        return f"{scheme}//{user.split(':', 1)[0]}:***@{host}"
    return url


class PostgresConsensus:
    def __init__(self, url: str) -> None:
        self.url = url
        self.feed = ChangeFeed()
        self._pg = _Pg(url)
        self._listen_task: asyncio.Task[None] | None = None
        self._listen_conn: psycopg.AsyncConnection[Any] | None = None

    async def head(self, key: str) -> VersionedData | None:
        async def q(conn: psycopg.AsyncConnection[Any]) -> VersionedData | None:
            cur = await conn.execute(
                "SELECT seqno, data FROM consensus WHERE shard = %s ORDER BY seqno DESC LIMIT 1",
                (key,),
            )
            row = await cur.fetchone()
            return None if row is None else VersionedData(row[0], bytes(row[1]))

        return await self._pg.run(q)

    async def compare_and_set(self, key: str, expected: int | None, new: VersionedData) -> bool:
        check_cas_op(key, expected, new)

        async def q(conn: psycopg.AsyncConnection[Any]) -> bool:
            cur = await conn.execute(
                _CAS_ONE, {"key": key, "seqno": new.seqno, "data": new.data, "expected": expected}
            )
            return len(await cur.fetchall()) == 1

        ok = await self._pg.run(q)
        if ok:
            self.feed.notify(key)
        return ok

    async def compare_and_set_many(self, ops: Sequence[CasOp]) -> bool:
        for key, expected, new in ops:
            check_cas_op(key, expected, new)
        ordered = sorted(ops, key=lambda op: op[0])  # one lock order: no deadlocks

        async def q(conn: psycopg.AsyncConnection[Any]) -> bool:
            try:
                async with conn.transaction():
                    for key, expected, new in ordered:
                        cur = await conn.execute(
                            _CAS_ONE,
                            {
                                "key": key,
                                "seqno": new.seqno,
                                "data": new.data,
                                "expected": expected,
                            },
                        )
                        if len(await cur.fetchall()) != 1:
                            raise _Rollback
            except _Rollback:
                return False
            return True

        ok = await self._pg.run(q)
        if ok:
            for key, _e, _n in ops:
                self.feed.notify(key)
        return ok

    async def scan(self, key: str, from_seqno: int, limit: int) -> list[VersionedData]:
        async def q(conn: psycopg.AsyncConnection[Any]) -> list[VersionedData]:
            cur = await conn.execute(
                "SELECT seqno, data FROM consensus WHERE shard = %s AND seqno >= %s "
                "ORDER BY seqno LIMIT %s",
                (key, from_seqno, limit),
            )
            return [VersionedData(s, bytes(d)) for s, d in await cur.fetchall()]

        return await self._pg.run(q)

    async def truncate(self, key: str, seqno: int) -> int:
        async def q(conn: psycopg.AsyncConnection[Any]) -> int:
            cur = await conn.execute(
                "DELETE FROM consensus WHERE shard = %s AND seqno < %s AND seqno < "
                "(SELECT max(seqno) FROM consensus WHERE shard = %s)",
                (key, seqno, key),
            )
            return cur.rowcount

        return await self._pg.run(q)

    async def start_watching(self) -> None:
        if self._listen_task is not None:
            return
        await self._pg.pool()
        try:
            conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
            await conn.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error as e:
            raise LocationUnavailable(f"postgres {_redact(self.url)}: {e}") from e
        self._listen_conn = conn
        self._listen_task = asyncio.create_task(self._listen_loop(conn), name="pg-listen")

    async def _listen_loop(self, conn: psycopg.AsyncConnection[Any]) -> None:
        try:
            async for note in conn.notifies():
                self.feed.notify(note.payload)
        except psycopg.Error:
            # The listener lost its connection; listeners fall back to polling until it returns.
            self.feed.notify_all()
            self._listen_task = None

    async def close(self) -> None:
        if self._listen_task is not None:
            self._listen_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, psycopg.Error):
                await self._listen_task
            self._listen_task = None
        if self._listen_conn is not None:
            with contextlib.suppress(psycopg.Error):
                await self._listen_conn.close()
            self._listen_conn = None
        await self._pg.close()

    async def raw_insert(self, key: str, seqno: int, data: bytes) -> None:
        """A bare insert of the same size as a CAS (the benchmark's baseline)."""

        async def q(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(
                "INSERT INTO consensus (shard, seqno, data) VALUES (%s, %s, %s)",
                (key, seqno, data),
            )

        await self._pg.run(q)


class _Rollback(Exception):
    pass


class PostgresBlob:
    def __init__(self, url: str) -> None:
        self._pg = _Pg(url)

    async def get(self, key: str) -> bytes | None:
        async def q(conn: psycopg.AsyncConnection[Any]) -> bytes | None:
            cur = await conn.execute("SELECT data FROM blob WHERE key = %s", (key,))
            row = await cur.fetchone()
            return None if row is None else bytes(row[0])

        return await self._pg.run(q)

    async def set(self, key: str, data: bytes) -> None:
        async def q(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(
                "INSERT INTO blob (key, data) VALUES (%s, %s) "
                "ON CONFLICT (key) DO UPDATE SET data = EXCLUDED.data",
                (key, data),
            )

        await self._pg.run(q)

    async def delete(self, key: str) -> None:
        async def q(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute("DELETE FROM blob WHERE key = %s", (key,))

        await self._pg.run(q)

    async def list_keys(self, prefix: str) -> list[str]:
        async def q(conn: psycopg.AsyncConnection[Any]) -> list[str]:
            cur = await conn.execute(
                "SELECT key FROM blob WHERE starts_with(key, %s) ORDER BY key", (prefix,)
            )
            return [k for (k,) in await cur.fetchall()]

        return await self._pg.run(q)

    async def close(self) -> None:
        await self._pg.close()
