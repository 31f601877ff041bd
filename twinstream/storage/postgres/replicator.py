"""Logical replication from one upstream database: replication slot + consistent snapshot,
then the pgoutput change stream as whole transactions, acknowledgements, slot removal.

Each operation opens its own ``replication=database`` session; `close()` (or leaving the
``async with``) ends every session still open and waits until upstream has hung up, so no
walsender keeps the slot active afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final

from twinstream.clock import Clock, SystemClock
from twinstream.storage.postgres import wire
from twinstream.storage.postgres.connection import (
    UpstreamConnection,
    quote_ident,
    quote_literal,
)
from twinstream.storage.postgres.model import (
    ErrorKind,
    Lsn,
    PgConnInfo,
    Progress,
    Row,
    SourceError,
    Txn,
    UpstreamTable,
    format_lsn,
    parse_lsn,
)
from twinstream.storage.postgres.pgoutput import PG_EPOCH_UNIX_US, TxnAssembler, decode_value

__all__ = ["PgReplicator", "Snapshot", "SnapshotReader"]

#: How often a standby status update is sent while streaming (PostgreSQL's own default for
#: wal_receiver_status_interval), well inside the server's wal_sender_timeout (60 s).
STATUS_INTERVAL_S: Final = 10.0
#: Rows per batch read from a snapshot.
SNAPSHOT_BATCH_ROWS: Final = 5000


@dataclass(frozen=True)
class Snapshot:
    """A whole consistent snapshot in memory: every table's rows as of `lsn`.

    Stream with ``start_lsn=lsn`` afterwards: exactly the transactions that commit after the
    snapshot follow.
    """

    slot: str
    lsn: Lsn
    rows: dict[UpstreamTable, list[Row]] = field(default_factory=dict)


class SnapshotReader:
    """The snapshot of a just-created slot, read table by table inside its transaction."""

    def __init__(
        self, conn: UpstreamConnection, slot: str, lsn: Lsn, tables: Sequence[UpstreamTable]
    ) -> None:
        self._conn = conn
        self.slot = slot
        self.lsn = lsn
        self._tables = tables

    async def batches(
        self, batch_rows: int = SNAPSHOT_BATCH_ROWS
    ) -> AsyncIterator[tuple[UpstreamTable, list[Row]]]:
        """(table, rows) batches; each table's rows in one or more consecutive batches."""
        for table in self._tables:
            types = [c.type_oid for c in table.columns]
            cols = ", ".join(quote_ident(c.name) for c in table.columns)
            sql = f"SELECT {cols} FROM ONLY {quote_ident(table.schema)}.{quote_ident(table.name)}"
            async for raw in self._conn.query_batches(sql, batch_rows):
                rows = [
                    tuple(decode_value(t, v) for t, v in zip(types, r, strict=True)) for r in raw
                ]
                yield table, rows


class PgReplicator:
    """Replicates `tables` (from `validate`) of `publication`; see the package docstring."""

    def __init__(
        self,
        info: PgConnInfo,
        publication: str,
        tables: Sequence[UpstreamTable],
        *,
        clock: Clock | None = None,
        status_interval_s: float = STATUS_INTERVAL_S,
    ) -> None:
        self.info = info
        self.publication = publication
        self.tables = tuple(tables)
        self._clock = clock or SystemClock()
        self._status_interval_s = status_interval_s
        self._conns: set[UpstreamConnection] = set()
        self._stream_conn: UpstreamConnection | None = None
        self._acked: Lsn = 0
        self._received: Lsn = 0
        self._slot: str | None = None

    async def __aenter__(self) -> PgReplicator:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """End every session this replicator still has open (waits for upstream to hang up)."""
        conns, self._conns = list(self._conns), set()
        self._stream_conn = None
        for conn in conns:
            await conn.close()

    async def _open(self) -> UpstreamConnection:
        conn = await UpstreamConnection.connect(self.info, replication=True)
        self._conns.add(conn)
        return conn

    async def _release(self, conn: UpstreamConnection) -> None:
        self._conns.discard(conn)
        await conn.close()

    # ------------------------------------------------------------------ slot + snapshot

    @contextlib.asynccontextmanager
    async def snapshot(self, slot: str) -> AsyncIterator[SnapshotReader]:
        """Create logical slot `slot` and open its snapshot for reading.

        The slot stays when the block ends (also on error: drop it with `drop_slot` and start
        again if the snapshot was not used).
        """
        conn = await self._open()
        try:
            await conn.query("BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ")
            rows = await _slot_query(
                conn, f"CREATE_REPLICATION_SLOT {quote_ident(slot)} LOGICAL pgoutput USE_SNAPSHOT"
            )
            lsn = parse_lsn(rows[0][1] or "")
            yield SnapshotReader(conn, slot, lsn, self.tables)
            await conn.query("COMMIT")
        finally:
            await self._release(conn)

    async def create_slot_and_snapshot(self, slot: str) -> Snapshot:
        """Create `slot` and read the whole snapshot into memory (small tables, tests)."""
        async with self.snapshot(slot) as reader:
            snap = Snapshot(slot, reader.lsn, {t: [] for t in self.tables})
            async for table, rows in reader.batches():
                snap.rows[table].extend(rows)
        return snap

    async def create_slot(self, slot: str) -> Lsn:
        """Create `slot` without reading a snapshot; returns its consistent point."""
        conn = await self._open()
        try:
            rows = await _slot_query(
                conn,
                f"CREATE_REPLICATION_SLOT {quote_ident(slot)} LOGICAL pgoutput NOEXPORT_SNAPSHOT",
            )
            return parse_lsn(rows[0][1] or "")
        finally:
            await self._release(conn)

    async def drop_slot(self, slot: str, *, missing_ok: bool = False) -> None:
        """Drop `slot` (fails with slot_in_use while another session streams from it)."""
        conn = await self._open()
        try:
            await _slot_query(conn, f"DROP_REPLICATION_SLOT {quote_ident(slot)}")
        except SourceError as exc:
            if not (missing_ok and exc.kind == "slot_missing"):
                raise
        finally:
            await self._release(conn)

    async def slot_position(self, slot: str) -> Lsn | None:
        """The slot's confirmed flush LSN (what upstream may recycle up to); None if absent."""
        conn = await self._open()
        try:
            rows = await conn.query(
                "SELECT confirmed_flush_lsn FROM pg_replication_slots "
                f"WHERE slot_name = {quote_literal(slot)}"
            )
        finally:
            await self._release(conn)
        return parse_lsn(rows[0][0]) if rows and rows[0][0] else None

    # ------------------------------------------------------------------ streaming

    async def stream(self, slot: str, start_lsn: Lsn) -> AsyncIterator[Txn | Progress]:
        """Whole transactions committed at or after `start_lsn`, in commit order, and
        `Progress` marks while nothing else arrives.

        Pass a snapshot's `lsn`, or the `end_lsn` of the last transaction made durable (or a
        `Progress.lsn` acknowledged). One stream per replicator at a time; the session ends
        when the iterator is closed or its consumer cancelled.
        """
        if self._stream_conn is not None:
            raise RuntimeError("this replicator is already streaming")
        conn = await self._open()
        self._stream_conn = conn
        self._slot = slot
        self._acked = max(self._acked, start_lsn)
        self._received = start_lsn
        assembler = TxnAssembler(self.tables)
        pubs = quote_literal(quote_ident(self.publication))
        command = (
            f"START_REPLICATION SLOT {quote_ident(slot)} LOGICAL {format_lsn(start_lsn)} "
            f"(proto_version '1', publication_names {pubs})"
        )
        try:
            try:
                await conn.start_copy_both(command)
            except SourceError as exc:
                raise _slot_error(exc) from None
            loop = asyncio.get_running_loop()
            next_status = loop.time() + self._status_interval_s
            emitted = start_lsn
            while True:
                try:
                    async with asyncio.timeout_at(next_status):
                        payload = await conn.copy_data()
                except TimeoutError:
                    await self._send_status(conn)
                    next_status = loop.time() + self._status_interval_s
                    continue
                except SourceError as exc:
                    raise _slot_error(exc) from None
                try:
                    msg = wire.parse_replication_message(payload)
                except wire.WireError as exc:
                    raise SourceError("protocol", str(exc)) from None
                if isinstance(msg, wire.Keepalive):
                    if msg.reply_requested:
                        await self._send_status(conn)
                        next_status = loop.time() + self._status_interval_s
                    if msg.wal_end > emitted:
                        emitted = msg.wal_end
                        yield Progress(msg.wal_end)
                    continue
                try:
                    item = assembler.feed(msg.data)
                except SourceError as exc:
                    raise _slot_error(exc) from None
                if item is None:
                    continue
                lsn = item.end_lsn if isinstance(item, Txn) else item.lsn
                if lsn <= emitted:
                    if isinstance(item, Txn):  # upstream resent what we already have
                        raise SourceError(
                            "protocol",
                            f"transaction ending at {format_lsn(lsn)} is not after "
                            f"{format_lsn(emitted)}",
                        )
                    continue
                emitted = self._received = lsn
                yield item
        finally:
            self._stream_conn = None
            if conn.in_copy and not conn.closed:  # hand over the last ack before leaving
                with contextlib.suppress(SourceError):
                    await self._send_status(conn)
            await self._release(conn)

    async def ack(self, lsn: Lsn, slot: str | None = None) -> None:
        """Everything before `lsn` is durable downstream: upstream may recycle that WAL and a
        restarted stream never goes back before it.

        While streaming this is a standby status update on the stream's session; otherwise
        the slot (`slot`, default: the one streamed last) is advanced with
        ``pg_replication_slot_advance``. Acknowledging a position at or before one already
        acknowledged does nothing.
        """
        slot = slot or self._slot
        if slot is None:
            raise RuntimeError("ack() needs a slot: none has been streamed from yet")
        conn = self._stream_conn
        if conn is not None and not conn.closed and slot == self._slot:
            if lsn > self._acked:
                self._acked = lsn
                await self._send_status(conn)
            return
        if slot == self._slot:
            self._acked = max(self._acked, lsn)
        side = await self._open()
        try:
            await _slot_query(
                side,
                f"SELECT pg_replication_slot_advance({quote_literal(slot)}, "
                f"{quote_literal(format_lsn(lsn))}::pg_lsn) "
                f"FROM pg_replication_slots WHERE slot_name = {quote_literal(slot)} "
                f"AND confirmed_flush_lsn < {quote_literal(format_lsn(lsn))}::pg_lsn",
            )
        finally:
            await self._release(side)

    async def _send_status(self, conn: UpstreamConnection) -> None:
        now_pg_us = self._clock.now_ms() * 1000 - PG_EPOCH_UNIX_US
        acked = self._acked
        conn.send_copy_data(wire.encode_standby_status(acked, acked, acked, now_pg_us))
        await conn.flush()


async def _slot_query(conn: UpstreamConnection, command: str) -> list[list[str | None]]:
    try:
        return await conn.query(command)
    except SourceError as exc:
        raise _slot_error(exc) from None


def _slot_error(exc: SourceError) -> SourceError:
    """Refine the kind of a replication command's error from its SQLSTATE and text."""
    text = exc.message
    if exc.sqlstate == "42704":  # undefined_object
        kind: ErrorKind = "missing_publication" if "publication" in text else "slot_missing"
        return SourceError(kind, text, sqlstate=exc.sqlstate)
    if exc.sqlstate == "55000" and "wal_level" in text:
        return SourceError("wal_level", text, sqlstate=exc.sqlstate)
    return exc
