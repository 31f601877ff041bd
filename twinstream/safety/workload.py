"""Clients through the balancer, recording every operation into a `History`.

Objects live in three tables seeded by `setup`: registers `reg (k, v)` (one row per key,
written by UPDATE), counters `ctr (k, n)` (UPDATE n = n + 1) and lists `lst (k, seq, val)`
(list-append: INSERT; a read is the key's values ordered by `seq`). Each client owns its own
list keys, so the appends to one list are issued one at a time and `seq` (a unique increasing
number taken at invoke) is their commit order. Registers and counters are shared by all.

Operations run outside transactions (one statement) and inside explicit ones (write-only or
read-only, the two kinds twinstream has). Outcomes: `ok`; `fail` when the server answered with
an ERROR (the statement did not run; the balancer's 40001 at cutover claims the same); `info`
when the connection was lost, a FATAL arrived, or the operation outlived `OP_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from twinstream.clock import SYSTEM_CLOCK, Clock
from twinstream.safety.checker import FINAL
from twinstream.safety.history import History, Mop, Outcome

#: Keys per object kind, and list keys owned by each client.
REGISTER_KEYS = 4
COUNTER_KEYS = 2
LIST_KEYS_PER_CLIENT = 2
#: An operation taking longer than this is abandoned as indeterminate.
OP_TIMEOUT_S = 30.0
#: Pause between a client's operations (keeps 2 shared cores responsive).
PACING_S = 0.01
#: SQLSTATEs after which a write's outcome is unknown (it may have run).
INDETERMINATE = frozenset({"57P01", "57P02", "57P03", "XX000", "08006", "08003", "08000"})

SCHEMA = (
    "CREATE TABLE reg (k int NOT NULL, v int NOT NULL)",
    "CREATE TABLE ctr (k int NOT NULL, n int NOT NULL)",
    "CREATE TABLE lst (k int NOT NULL, seq int NOT NULL, val int NOT NULL)",
)

Conn = psycopg.AsyncConnection[Any]


async def _within(aw: Awaitable[Any], timeout_s: float) -> Any:
    async with asyncio.timeout(timeout_s):
        return await aw


def classify(error: BaseException, *, write: bool) -> Outcome:
    """What a client knows after `error`: reads always fail; writes fail only on an ERROR."""
    if not write:
        return Outcome.FAIL
    if isinstance(error, psycopg.Error) and error.sqlstate and error.sqlstate not in INDETERMINATE:
        return Outcome.FAIL
    return Outcome.INFO


#: With `setup(indexed=True)`: register and counter reads by key are served by these indexes,
#: i.e. by the cluster's replicas (point reads peek the index), not by the table mirror.
INDEXES = (
    "CREATE INDEX reg_k ON reg (k)",
    "CREATE INDEX ctr_k ON ctr (k)",
)


async def setup(conninfo: str, *, indexed: bool = False) -> None:
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        for ddl in SCHEMA + (INDEXES if indexed else ()):
            await conn.execute(ddl)
        for k in range(REGISTER_KEYS):
            await conn.execute("INSERT INTO reg VALUES (%s, 0)", (k,))
        for k in range(COUNTER_KEYS):
            await conn.execute("INSERT INTO ctr VALUES (%s, 0)", (k,))


@dataclass
class Workload:
    conninfo: str
    clients: int = 6
    seed: int = 0
    clock: Clock = SYSTEM_CLOCK
    history: History = field(default_factory=History)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    errors: dict[str, int] = field(default_factory=dict)
    _values: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    _list_keys: list[int] = field(default_factory=list)

    def list_keys(self) -> list[int]:
        """Every list key used so far."""
        return list(self._list_keys)

    def _fresh_list_keys(self) -> list[int]:
        """New keys for a client: after an `info` append the old ones are abandoned, since
        that append may still land later and break the one-append-at-a-time order."""
        start = len(self._list_keys)
        keys = list(range(start, start + LIST_KEYS_PER_CLIENT))
        self._list_keys.extend(keys)
        return keys

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for c in range(self.clients):
                tg.create_task(self._client(c), name=f"safety-client-{c}")

    # -- one client ----------------------------------------------------------------------------

    async def _connect(self) -> Conn | None:
        while not self.stop.is_set():
            try:
                conn: Conn = await _within(
                    psycopg.AsyncConnection.connect(self.conninfo, autocommit=True), OP_TIMEOUT_S
                )
                return conn
            except (psycopg.Error, OSError, TimeoutError) as e:
                self._count_error(e)
                await asyncio.sleep(0.1)  # reconnect pause (the balancer may be restarting)
        return None

    async def _client(self, c: int) -> None:
        rng = random.Random(self.seed * 1000 + c)
        own = self._fresh_list_keys()
        conn = await self._connect()
        while conn is not None and not self.stop.is_set():
            ok = await self._one(conn, f"c{c}", rng, own)
            last = self.history.ops[-1] if self.history.ops else None
            if (
                last is not None
                and last.process == f"c{c}"
                and last.outcome is Outcome.INFO
                and any(m.f == "append" for m in last.mops)
            ):
                own = self._fresh_list_keys()
            if not ok:
                with contextlib.suppress(Exception):
                    await _within(conn.close(), 2.0)
                conn = await self._connect()
            await asyncio.sleep(PACING_S)
        if conn is not None:
            with contextlib.suppress(Exception):
                await _within(conn.close(), 2.0)

    async def _one(self, conn: Conn, process: str, rng: random.Random, own: list[int]) -> bool:
        """One random operation; False when the connection should be replaced."""
        choice = rng.random()
        lists = self.list_keys()
        if choice < 0.15:
            k, v = rng.randrange(REGISTER_KEYS), next(self._values)
            return await self._op(conn, process, (Mop("w", k, v),), False, self._exec_write)
        if choice < 0.30:
            k = rng.randrange(REGISTER_KEYS)
            return await self._op(conn, process, (Mop("r", k),), False, self._exec_read)
        if choice < 0.40:
            k = rng.randrange(COUNTER_KEYS)
            return await self._op(conn, process, (Mop("inc", k),), False, self._exec_write)
        if choice < 0.50:
            k = rng.randrange(COUNTER_KEYS)
            return await self._op(conn, process, (Mop("rc", k),), False, self._exec_read)
        if choice < 0.65:
            mop = Mop("append", rng.choice(own), next(self._values))
            return await self._op(conn, process, (mop,), False, self._exec_write)
        if choice < 0.78:
            mops = tuple(Mop("rl", k) for k in rng.sample(lists, 2))
            return await self._op(conn, process, mops, rng.random() < 0.5, self._exec_read)
        if choice < 0.90:
            mops = tuple(Mop("append", k, next(self._values)) for k in own)
            return await self._op(conn, process, mops, True, self._exec_write)
        mops = (
            Mop("w", rng.randrange(REGISTER_KEYS), next(self._values)),
            Mop("append", rng.choice(own), next(self._values)),
        )
        return await self._op(conn, process, mops, True, self._exec_write)

    async def _op(
        self,
        conn: Conn,
        process: str,
        mops: tuple[Mop, ...],
        txn: bool,
        run: Callable[[Conn, tuple[Mop, ...], bool], Awaitable[tuple[Mop, ...]]],
    ) -> bool:
        write = any(m.f in ("w", "inc", "append") for m in mops)
        invoke = self.clock.monotonic()
        try:
            async with asyncio.timeout(OP_TIMEOUT_S):
                done = await run(conn, mops, txn)
        except (psycopg.Error, OSError, TimeoutError) as e:
            complete = self.clock.monotonic()
            outcome = classify(e, write=write)
            if txn and isinstance(e, psycopg.Error) and not conn.closed:
                # An ERROR inside the transaction (not at COMMIT) aborted it.
                with contextlib.suppress(Exception):
                    await _within(conn.execute("ROLLBACK"), 5.0)
            self._count_error(e)
            self.history.record(process, invoke, complete, outcome, mops, txn=txn, error=str(e))
            return not conn.closed and not isinstance(e, TimeoutError | OSError)
        self.history.record(process, invoke, self.clock.monotonic(), Outcome.OK, done, txn=txn)
        return True

    def _count_error(self, e: BaseException) -> None:
        sqlstate = e.sqlstate if isinstance(e, psycopg.Error) else None
        key = f"{sqlstate or type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:120]
        self.errors[key] = self.errors.get(key, 0) + 1

    # -- statements ----------------------------------------------------------------------------

    async def _exec_write(self, conn: Conn, mops: tuple[Mop, ...], txn: bool) -> tuple[Mop, ...]:
        if txn:
            await conn.execute("BEGIN")
        for m in mops:
            if m.f == "w":
                cur = await conn.execute("UPDATE reg SET v = %s WHERE k = %s", (m.v, m.k))
            elif m.f == "inc":
                cur = await conn.execute("UPDATE ctr SET n = n + 1 WHERE k = %s", (m.k,))
            else:
                cur = await conn.execute("INSERT INTO lst VALUES (%s, %s, %s)", (m.k, m.v, m.v))
            del cur
        if txn:
            await conn.execute("COMMIT")
        return mops

    async def _exec_read(self, conn: Conn, mops: tuple[Mop, ...], txn: bool) -> tuple[Mop, ...]:
        if txn:
            await conn.execute("BEGIN")
        out = [await _read(conn, m) for m in mops]
        if txn:
            await conn.execute("COMMIT")
        return tuple(out)

    # -- the final read ------------------------------------------------------------------------

    async def final_read(self, conninfo: str, deadline_s: float = 60.0) -> bool:
        """Read every object once the workload stopped (retried until it succeeds)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        while loop.time() < end:
            try:
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                    invoke = self.clock.monotonic()
                    mops = [Mop("r", k) for k in range(REGISTER_KEYS)]
                    mops += [Mop("rc", k) for k in range(COUNTER_KEYS)]
                    mops += [Mop("rl", k) for k in self.list_keys()]
                    await conn.execute("BEGIN")
                    done = tuple([await _read(conn, m) for m in mops])
                    await conn.execute("COMMIT")
                    self.history.record(
                        FINAL, invoke, self.clock.monotonic(), Outcome.OK, done, txn=True
                    )
                    return True
            except (psycopg.Error, OSError) as e:
                self._count_error(e)
                await asyncio.sleep(0.2)  # retry pause while the environment settles
        return False


async def _read(conn: Conn, m: Mop) -> Mop:
    if m.f == "r":
        cur = await conn.execute("SELECT v FROM reg WHERE k = %s", (m.k,))
    elif m.f == "rc":
        cur = await conn.execute("SELECT n FROM ctr WHERE k = %s", (m.k,))
    else:
        cur = await conn.execute("SELECT val FROM lst WHERE k = %s ORDER BY seq", (m.k,))
    rows = await cur.fetchall()
    return Mop(m.f, m.k, tuple(int(r[0]) for r in rows))
