"""SQLite consensus: the embedded default. One file in WAL mode, shared by every process
of the environment (both generations during an upgrade).

Compare-and-set runs in a `BEGIN IMMEDIATE` transaction (SQLite's write lock serializes writers)
and inserts seqno = expected + 1 under a (key, seqno) primary key, so two writers can never both
win. Change notices cross processes as UDP datagrams on loopback: watchers register their port in
a table; a writer sends the changed key to every registered port after it commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from twinstream.persist.errors import LocationUnavailable
from twinstream.persist.location import CasOp, ChangeFeed, VersionedData, check_cas_op

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS consensus (
    shard TEXT NOT NULL,
    seqno INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (shard, seqno)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS persist_watchers (
    port INTEGER PRIMARY KEY,
    pid INTEGER NOT NULL
);
"""


#: How long an operation keeps retrying when SQLite reports the database locked without
#: waiting (it does so for some lock upgrades and for WAL setup races between processes).
LOCKED_RETRY_S = 30.0


def _retry_locked(path: Path, fn: Callable[[], T]) -> T:
    """Run `fn` (on the consensus thread), retrying while SQLite says "database is locked".

    Safe because every operation starts with the statement that takes the lock (BEGIN
    IMMEDIATE or a single statement): a locked error means nothing happened.
    """
    deadline = time.monotonic() + LOCKED_RETRY_S
    delay = 0.001
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as e:
            text = str(e).lower()
            if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                raise
            time.sleep(delay)  # backoff on this private thread, not on the event loop
            delay = min(delay * 2, 0.05)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _WatchProtocol(asyncio.DatagramProtocol):
    def __init__(self, feed: ChangeFeed) -> None:
        self._feed = feed

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._feed.notify(data.decode("utf-8", "replace"))


class SqliteConsensus:
    """Consensus on one SQLite file; all calls run on one private thread (one connection)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.feed = ChangeFeed()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-consensus")
        self._conn: sqlite3.Connection | None = None
        self._send_sock: socket.socket | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._watch_port: int | None = None

    # -- thread side ------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = _retry_locked(self.path, self._open)
            self._send_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        return self._conn

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def once() -> T:
            conn = self._connection()
            try:
                return fn(conn)
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise

        def call() -> T:
            try:
                return _retry_locked(self.path, once)
            except (sqlite3.OperationalError, OSError) as e:
                raise LocationUnavailable(f"sqlite consensus {self.path}: {e}") from e

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def _cas_many(self, conn: sqlite3.Connection, ops: Sequence[CasOp]) -> list[int] | None:
        """Returns the watcher ports to notify on success, None on a lost race."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            for key, expected, _new in ops:
                row = conn.execute(
                    "SELECT max(seqno) FROM consensus WHERE shard = ?", (key,)
                ).fetchone()
                if row[0] != expected:
                    conn.execute("ROLLBACK")
                    return None
            conn.executemany(
                "INSERT INTO consensus (shard, seqno, data) VALUES (?, ?, ?)",
                [(key, new.seqno, new.data) for key, _e, new in ops],
            )
            ports = [p for (p,) in conn.execute("SELECT port FROM persist_watchers")]
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        sock = self._send_sock
        assert sock is not None
        for key, _e, _n in ops:
            payload = key.encode()
            for port in ports:
                if port != self._watch_port:
                    with contextlib.suppress(OSError):
                        sock.sendto(payload, ("127.0.0.1", port))
        return ports

    # -- Consensus --------------------------------------------------------------------------

    async def head(self, key: str) -> VersionedData | None:
        def q(conn: sqlite3.Connection) -> VersionedData | None:
            row = conn.execute(
                "SELECT seqno, data FROM consensus WHERE shard = ? ORDER BY seqno DESC LIMIT 1",
                (key,),
            ).fetchone()
            return None if row is None else VersionedData(row[0], bytes(row[1]))

        return await self._run(q)

    async def compare_and_set(self, key: str, expected: int | None, new: VersionedData) -> bool:
        return await self.compare_and_set_many([(key, expected, new)])

    async def compare_and_set_many(self, ops: Sequence[CasOp]) -> bool:
        for key, expected, new in ops:
            check_cas_op(key, expected, new)
        ok = await self._run(lambda conn: self._cas_many(conn, ops)) is not None
        if ok:
            for key, _e, _n in ops:
                self.feed.notify(key)
        return ok

    async def scan(self, key: str, from_seqno: int, limit: int) -> list[VersionedData]:
        def q(conn: sqlite3.Connection) -> list[VersionedData]:
            rows = conn.execute(
                "SELECT seqno, data FROM consensus WHERE shard = ? AND seqno >= ? "
                "ORDER BY seqno LIMIT ?",
                (key, from_seqno, limit),
            ).fetchall()
            return [VersionedData(s, bytes(d)) for s, d in rows]

        return await self._run(q)

    async def truncate(self, key: str, seqno: int) -> int:
        def q(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "DELETE FROM consensus WHERE shard = ? AND seqno < ? AND seqno < "
                "(SELECT max(seqno) FROM consensus WHERE shard = ?)",
                (key, seqno, key),
            )
            return cur.rowcount

        return await self._run(q)

    async def start_watching(self) -> None:
        if self._transport is not None:
            return
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _WatchProtocol(self.feed), local_addr=("127.0.0.1", 0)
        )
        self._transport = transport
        port = transport.get_extra_info("sockname")[1]
        self._watch_port = port

        def register(conn: sqlite3.Connection) -> None:
            dead = [
                (p,)
                for p, pid in conn.execute("SELECT port, pid FROM persist_watchers")
                if not _pid_alive(pid)
            ]
            conn.executemany("DELETE FROM persist_watchers WHERE port = ?", dead)
            conn.execute(
                "INSERT OR REPLACE INTO persist_watchers (port, pid) VALUES (?, ?)",
                (port, os.getpid()),
            )

        await self._run(register)

    async def close(self) -> None:
        if self._transport is not None:
            port = self._watch_port
            self._transport.close()
            self._transport = None
            with contextlib.suppress(LocationUnavailable):
                await self._run(
                    lambda conn: conn.execute(
                        "DELETE FROM persist_watchers WHERE port = ?", (port,)
                    )
                )

        def shutdown() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._send_sock is not None:
                self._send_sock.close()
                self._send_sock = None

        await asyncio.get_running_loop().run_in_executor(self._executor, shutdown)
        self._executor.shutdown(wait=True)

    # -- raw transactions (benchmark baseline) ------------------------------------------------

    async def raw_insert(self, key: str, seqno: int, data: bytes) -> None:
        """A bare insert transaction of the same size as a CAS (the benchmark's baseline)."""

        def q(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO consensus (shard, seqno, data) VALUES (?, ?, ?)", (key, seqno, data)
            )
            conn.execute("COMMIT")

        await self._run(q)
