"""The clients of `twinstream demo`, all through the balancer and all asynchronous (the
balancer runs on the same event loop).

- writers insert numbered rows `(writer, n)` and remember which were acknowledged;
- readers write a marker, then read it back from the table (read-your-writes) and from an
  indexed materialized view over that table (freshness: an acknowledged write is in every view
  read after it), and sample how far the AUCTION source's newest bid lags the wall clock;
- one subscriber follows `SUBSCRIBE mv_writer_counts WITH (PROGRESS)` over COPY; when its
  backend goes away (the fenced generation ends it, cutover.md) it resumes on the next
  generation `AS OF` its last progress timestamp - 1 and checks that the resumed snapshot is
  exactly the state it had accumulated up to that progress;
- one DDL client creates and drops a table and a materialized view, between upgrades and
  during catch-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg

#: Pause between two statements of one writer / reader: a steady, not saturating, load.
WRITER_PAUSE_S = 0.005
READER_PAUSE_S = 0.01
#: Readers sample the source's lag on every n-th round.
LAG_EVERY = 5
#: Pause after a refused connection before trying again (the balancer holds, so rare).
RECONNECT_PAUSE_S = 0.05
#: The subscriber's target and its columns (all integers).
SUBSCRIBE_TARGET = "mv_writer_counts"


@dataclass
class Sample:
    at: float
    latency_ms: float
    ok: bool
    ddl: bool = False


@dataclass
class SubscribeStats:
    rows: int = 0
    progress: int = 0
    resumes: int = 0
    resume_mismatches: int = 0
    last_progress: int | None = None
    state: Counter[tuple[str, ...]] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


@dataclass
class Workload:
    conninfo: str
    ddl_pause_s: float = 1.5
    samples: list[Sample] = field(default_factory=list)
    acked: set[tuple[int, int]] = field(default_factory=set)
    acked_markers: set[tuple[int, int]] = field(default_factory=set)
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    ryw_checks: int = 0
    ryw_violations: int = 0
    mv_freshness_violations: int = 0
    source_lag_ms: list[float] = field(default_factory=list)
    ddl_statements: int = 0
    ddl_at: list[float] = field(default_factory=list)
    sub: SubscribeStats = field(default_factory=SubscribeStats)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def _error(self, e: BaseException) -> None:
        if len(self.errors) < 20:
            self.errors.append(f"{type(e).__name__}: {e}".splitlines()[0])

    async def _timed(
        self,
        conn: psycopg.AsyncConnection[Any],
        sql: str,
        params: tuple[object, ...] = (),
        *,
        ddl: bool = False,
    ) -> list[tuple[Any, ...]] | None:
        t0 = time.monotonic()
        try:
            cur = await conn.execute(sql, params)
            rows = await cur.fetchall() if cur.description else []
        except psycopg.Error as e:
            self.samples.append(Sample(t0, (time.monotonic() - t0) * 1000, False, ddl))
            self.failed += 1
            self._error(e)
            return None
        self.samples.append(Sample(t0, (time.monotonic() - t0) * 1000, True, ddl))
        return rows

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        while True:  # bounded by the demo's stop: the balancer holds, it does not refuse
            try:
                return await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
            except psycopg.OperationalError as e:
                self.failed += 1
                self._error(e)
                await asyncio.sleep(RECONNECT_PAUSE_S)

    async def writer(self, w: int) -> None:
        conn = await self._connect()
        n = 0
        while not self.stop.is_set():
            rows = await self._timed(conn, "INSERT INTO demo_writes VALUES (%s, %s)", (w, n))
            if rows is not None:
                self.acked.add((w, n))
            elif conn.closed:
                conn = await self._connect()
            n += 1
            await asyncio.sleep(WRITER_PAUSE_S)
        await conn.close()

    async def reader(self, r: int) -> None:
        conn = await self._connect()
        k = 0
        while not self.stop.is_set():
            k += 1
            wrote = await self._timed(conn, "INSERT INTO demo_ryw VALUES (%s, %s)", (r, k))
            if wrote is not None:
                self.acked_markers.add((r, k))
                seen = await self._timed(
                    conn, "SELECT count(*) FROM demo_ryw WHERE reader = %s AND k = %s", (r, k)
                )
                if seen is not None:
                    self.ryw_checks += 1
                    if seen[0][0] != 1:
                        self.ryw_violations += 1
                fresh = await self._timed(conn, "SELECT k FROM mv_ryw_last WHERE reader = %s", (r,))
                if fresh is not None and (not fresh or fresh[0][0] < k):
                    self.mv_freshness_violations += 1
            if k % LAG_EVERY == 0 and not conn.closed:
                newest = await self._timed(conn, "SELECT max(bid_time) FROM bids")
                if newest and newest[0][0] is not None:
                    lag = dt.datetime.now(dt.UTC) - newest[0][0]
                    self.source_lag_ms.append(lag.total_seconds() * 1000)
            if conn.closed:
                conn = await self._connect()
            await asyncio.sleep(READER_PAUSE_S)
        await conn.close()

    async def ddl(self) -> None:
        """Create a table and a materialized view over it and the source, then drop both."""
        conn = await self._connect()
        k = 0
        while not self.stop.is_set():
            k += 1
            for sql in (
                f"CREATE TABLE ddl_t{k} (x int)",
                f"INSERT INTO ddl_t{k} VALUES ({k})",
                f"CREATE MATERIALIZED VIEW ddl_v{k} AS "
                f"SELECT (SELECT count(*) FROM bids) + (SELECT count(*) FROM ddl_t{k}) AS c",
                None,
                f"DROP MATERIALIZED VIEW ddl_v{k}",
                f"DROP TABLE ddl_t{k}",
            ):
                if sql is None:
                    await asyncio.sleep(self.ddl_pause_s)
                    continue
                self.ddl_statements += 1
                self.ddl_at.append(time.monotonic())
                done = await self._timed(conn, sql, ddl=not sql.startswith("INSERT"))
                if done is None and conn.closed:
                    conn = await self._connect()
            await asyncio.sleep(self.ddl_pause_s)
        await conn.close()

    async def subscriber(self) -> None:
        """Follow SUBSCRIBE_TARGET until cancelled, resuming across generations."""
        sub = self.sub
        at_progress: Counter[tuple[str, ...]] = Counter()
        while True:
            resumed_from = sub.last_progress
            as_of = "" if resumed_from is None else f" AS OF {resumed_from - 1}"
            sql = f"COPY (SUBSCRIBE {SUBSCRIBE_TARGET} WITH (PROGRESS){as_of}) TO STDOUT"
            sub.state = Counter()  # the stream starts with the snapshot at its as-of
            checked = resumed_from is None
            conn: psycopg.AsyncConnection[Any] | None = None
            try:
                conn = await self._connect()
                async with conn.cursor().copy(sql) as copy:
                    async for row in copy.rows():
                        ts, progressed, diff, *values = row
                        if progressed == "t":
                            sub.progress += 1
                            sub.last_progress = int(ts)
                            if not checked and sub.last_progress >= (resumed_from or 0):
                                # The resumed snapshot at last_progress - 1 must equal what
                                # the old stream had accumulated below last_progress.
                                checked = True
                                if sub.last_progress == resumed_from and sub.state != at_progress:
                                    sub.resume_mismatches += 1
                            at_progress = +sub.state
                            continue
                        sub.rows += 1
                        sub.state[tuple(values)] += int(diff)
                        sub.state = +sub.state  # drop zero counts
            except psycopg.Error as e:
                if len(sub.errors) < 5:
                    sub.errors.append(f"{type(e).__name__}: {e}".splitlines()[0])
                await asyncio.sleep(RECONNECT_PAUSE_S)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            sub.resumes += 1  # the stream ended (its generation was fenced): resume
