"""An asyncio connection to an upstream PostgreSQL: startup, authentication (trust, cleartext,
md5, SCRAM-SHA-256), simple queries, and the CopyBoth stream of START_REPLICATION.

Only what logical replication needs; psycopg cannot speak the replication sub-protocol. Every
failure becomes a `SourceError` whose kind says what went wrong (see `model.SQLSTATE_KINDS`).
`close()` ends the session politely (CopyDone if streaming, Terminate) and waits for the
server to hang up, so the walsender has released its replication slot when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Final

from twinstream.pgwire import messages as m
from twinstream.storage.postgres import wire
from twinstream.storage.postgres.model import (
    SQLSTATE_KINDS,
    ErrorKind,
    PgConnInfo,
    SourceError,
)

__all__ = ["QueryResult", "UpstreamConnection", "quote_ident", "quote_literal"]

#: Bytes asked of the socket per read.
READ_CHUNK_BYTES: Final = 256 * 1024
#: How long `close()` waits for the server to hang up after Terminate.
CLOSE_TIMEOUT_S: Final = 5.0
#: Session settings that fix the text output format the value decoders expect.
SESSION_SETTINGS: Final = {
    "client_encoding": "UTF8",
    "DateStyle": "ISO",
    "TimeZone": "UTC",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",
    "application_name": "twinstream",
}

QueryResult = list[list[str | None]]


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    if "\0" in value:
        raise ValueError("NUL in SQL literal")
    return "'" + value.replace("'", "''") + "'"


def error_kind(sqlstate: str) -> ErrorKind:
    return SQLSTATE_KINDS.get(sqlstate, "upstream")


def _from_server(err: wire.ServerError, context: str) -> SourceError:
    return SourceError(error_kind(err.sqlstate), f"{context}: {err.text()}", sqlstate=err.sqlstate)


class UpstreamConnection:
    """One session. Create with `connect`; use `query`, `copy_both`; end with `close`."""

    def __init__(
        self,
        info: PgConnInfo,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.info = info
        self._reader = reader
        self._writer = writer
        self._framer = wire.Framer()
        self.parameters: dict[str, str] = {}
        self.backend_pid = 0
        self.in_copy = False
        self.closed = False

    @property
    def where(self) -> str:
        return f"{self.info.host}:{self.info.port}"

    # ------------------------------------------------------------------ connect

    @classmethod
    async def connect(cls, info: PgConnInfo, *, replication: bool) -> UpstreamConnection:
        """Open a session (``replication=database`` if `replication`) and authenticate."""
        where = f"{info.host}:{info.port}"
        try:
            async with asyncio.timeout(info.connect_timeout_s):
                reader, writer = await asyncio.open_connection(info.host, info.port)
        except TimeoutError:
            raise SourceError(
                "unreachable",
                f"cannot connect to {where}: timed out after {info.connect_timeout_s:g}s",
            ) from None
        except OSError as exc:
            raise SourceError("unreachable", f"cannot connect to {where}: {exc}") from None
        conn = cls(info, reader, writer)
        try:
            async with asyncio.timeout(info.connect_timeout_s):
                await conn._startup(replication)
        except TimeoutError:
            conn.abort()
            raise SourceError(
                "unreachable", f"{where} did not complete the startup handshake in time"
            ) from None
        except BaseException:
            conn.abort()
            raise
        return conn

    async def _startup(self, replication: bool) -> None:
        info = self.info
        params = {"user": info.user, "database": info.database, **SESSION_SETTINGS}
        if replication:
            params["replication"] = "database"
        self._send(m.StartupMessage(params).encode())
        scram: wire.ScramClient | None = None
        while True:
            t, payload = await self._next()
            if t == ord("R"):
                (code,) = _i32(payload, 0)
                if code == 0:
                    continue
                password = info.password
                if code in (3, 5, 10) and password is None:
                    raise SourceError(
                        "auth", f"{self.where} asks user {info.user!r} for a password; none given"
                    )
                if code == 3:
                    self._send(m.PasswordMessage(password or "").encode())
                elif code == 5:
                    answer = wire.md5_password(info.user, password or "", payload[4:8])
                    self._send(m.PasswordMessage(answer).encode())
                elif code == 10:
                    mechanisms = payload[4:].decode().split("\0")
                    if wire.ScramClient.MECHANISM not in mechanisms:
                        raise SourceError(
                            "auth", f"{self.where} offers no supported SASL mechanism"
                        )
                    scram = wire.ScramClient(password or "")
                    self._send(
                        m.SASLInitialResponse(wire.ScramClient.MECHANISM, scram.first()).encode()
                    )
                elif code == 11 and scram is not None:
                    self._send(m.SASLResponse(scram.final(payload[4:])).encode())
                elif code == 12 and scram is not None:
                    try:
                        scram.verify(payload[4:])
                    except wire.WireError as exc:
                        raise SourceError("auth", f"{self.where}: {exc}") from None
                else:
                    raise SourceError(
                        "auth", f"{self.where} requires unsupported authentication method {code}"
                    )
            elif t == ord("S"):
                name, value, *_ = payload.decode().split("\0")
                self.parameters[name] = value
            elif t == ord("K"):
                (self.backend_pid,) = _i32(payload, 0)
            elif t == ord("Z"):
                return
            elif t == ord("E"):
                raise _from_server(wire.parse_error(payload), f"connecting to {self.where}")
            elif t in (ord("N"), ord("v")):
                continue
            else:
                raise SourceError("protocol", f"unexpected message {chr(t)!r} during startup")

    # ------------------------------------------------------------------ I/O

    def _send(self, data: bytes) -> None:
        if self.closed:
            raise SourceError("unreachable", f"connection to {self.where} is closed")
        self._writer.write(data)

    async def flush(self) -> None:
        try:
            await self._writer.drain()
        except (OSError, RuntimeError) as exc:
            self.abort()
            raise SourceError("unreachable", f"connection to {self.where} lost: {exc}") from None

    async def _next(self) -> tuple[int, bytes]:
        """The next backend message; NoticeResponse and ParameterStatus are absorbed here."""
        while True:
            try:
                got = self._framer.next()
            except wire.WireError as exc:
                self.abort()
                raise SourceError("protocol", f"{self.where}: {exc}") from None
            if got is not None:
                return got
            if self.closed:
                raise SourceError("unreachable", f"connection to {self.where} is closed")
            try:
                data = await self._reader.read(READ_CHUNK_BYTES)
            except OSError as exc:
                self.abort()
                raise SourceError(
                    "unreachable", f"connection to {self.where} lost: {exc}"
                ) from None
            if not data:
                self.abort()
                raise SourceError("unreachable", f"{self.where} closed the connection")
            self._framer.feed(data)

    async def query(self, sql: str) -> QueryResult:
        """Run one simple query (one statement); return its rows as text (None for NULL)."""
        rows: QueryResult = []
        async for batch in self.query_batches(sql):
            rows.extend(batch)
        return rows

    async def query_batches(self, sql: str, batch_rows: int = 1000) -> AsyncIterator[QueryResult]:
        """Run one simple query, yielding its rows in batches of at most `batch_rows`.

        The whole result is read even if the consumer stops early (the connection stays in
        sync); the error of a failed statement is raised after ReadyForQuery.
        """
        self._send(m.Query(sql).encode())
        await self.flush()
        error: wire.ServerError | None = None
        batch: QueryResult = []
        while True:
            t, payload = await self._next()
            if t == ord("D"):
                batch.append(wire.parse_data_row(payload))
                if len(batch) >= batch_rows:
                    yield batch
                    batch = []
            elif t == ord("E"):
                error = wire.parse_error(payload)
            elif t == ord("Z"):
                break
            elif t in (ord("T"), ord("C"), ord("I"), ord("N"), ord("S")):
                if t == ord("S"):
                    name, value, *_ = payload.decode().split("\0")
                    self.parameters[name] = value
            elif t in (ord("H"), ord("G"), ord("W")):
                raise SourceError("protocol", f"unexpected COPY response to {sql[:60]!r}")
            else:
                raise SourceError("protocol", f"unexpected message {chr(t)!r} in a query result")
        if error is not None:
            raise _from_server(error, sql.split(" ", 1)[0])
        if batch:
            yield batch

    async def start_copy_both(self, command: str) -> None:
        """Send `command` (START_REPLICATION) and wait for CopyBothResponse."""
        self._send(m.Query(command).encode())
        await self.flush()
        while True:
            t, payload = await self._next()
            if t == ord("W"):
                self.in_copy = True
                return
            if t == ord("E"):
                err = wire.parse_error(payload)
                # ReadyForQuery follows; read it so the session stays usable
                with contextlib.suppress(SourceError):
                    while (await self._next())[0] != ord("Z"):
                        pass
                raise _from_server(err, "START_REPLICATION")
            if t in (ord("N"), ord("S")):
                continue
            raise SourceError("protocol", f"unexpected message {chr(t)!r} for START_REPLICATION")

    async def copy_data(self) -> bytes:
        """The payload of the next CopyData of a CopyBoth stream."""
        while True:
            t, payload = await self._next()
            if t == ord("d"):
                return payload
            if t == ord("E"):
                self.in_copy = False
                raise _from_server(wire.parse_error(payload), "replication stream")
            if t == ord("c"):
                self.in_copy = False
                raise SourceError("upstream", f"{self.where} ended the replication stream")
            if t in (ord("N"), ord("S")):
                continue
            raise SourceError("protocol", f"unexpected message {chr(t)!r} in CopyBoth")

    def send_copy_data(self, payload: bytes) -> None:
        self._send(m.CopyData(payload).encode())

    # ------------------------------------------------------------------ close

    def abort(self) -> None:
        """Drop the socket now (no goodbye)."""
        if not self.closed:
            self.closed = True
            self._writer.transport.abort()

    async def close(self) -> None:
        """End the session and wait (bounded) until the server has hung up."""
        if self.closed:
            return
        try:
            if self.in_copy:
                self._writer.write(m.CopyDone().encode())
            self._writer.write(m.Terminate().encode())
            self._writer.write_eof()
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                while await self._reader.read(READ_CHUNK_BYTES):
                    pass
        except (OSError, RuntimeError, TimeoutError):
            pass
        finally:
            self.abort()


def _i32(payload: bytes, pos: int) -> tuple[int]:
    return (int.from_bytes(payload[pos : pos + 4], "big", signed=True),)
