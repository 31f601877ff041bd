"""One client connection: the protocol state machine between a socket and a `Session`.

Phases: startup (SSLRequest/GSSENCRequest → 'N', CancelRequest, StartupMessage, protocol
version check, connection limit, authentication, session creation, ParameterStatus,
BackendKeyData, ReadyForQuery), then the command loop:

- simple Query: split into statements, run them in order, stop at the first error;
  EmptyQueryResponse for an empty string; ReadyForQuery at the end.
- extended protocol: Parse (describe the statement, infer parameter types), Bind (decode the
  parameters with the statement's types, text or binary), Describe S/P, Execute (max_rows →
  PortalSuspended, resumable), Close, Flush, Sync. After an error everything but Sync is
  skipped. Portals survive Syncs while a transaction block is open and are dropped at a Sync
  (or the end of a Query) in status I, as at PostgreSQL's transaction end.
- COPY: CopyInResponse then CopyData/CopyDone/CopyFail; CopyOutResponse, CopyData rows,
  CopyDone. Stray CopyData/CopyDone/CopyFail (after a COPY failed) are dropped.

Output is buffered and written at Sync/Flush/ReadyForQuery, when the buffer is large, and —
while rows are streamed from an async source or a notice arrives — whenever the task yields
to the event loop, so that a slow producer (SUBSCRIBE) never holds back rows already made.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice, zip_longest
from typing import TYPE_CHECKING, Literal

from twinstream.pgwire import messages as m
from twinstream.pgwire import types
from twinstream.pgwire.backend import (
    BackendKey,
    Column,
    ConnectionContext,
    CopyInRequest,
    CopyOutStream,
    QueryResult,
    Rows,
    Session,
)
from twinstream.pgwire.codec import FrontendParser
from twinstream.pgwire.copy import (
    CopyBinaryDecoder,
    CopyCsvDecoder,
    CopyFormat,
    CopyTextFormatDecoder,
    binary_header,
    binary_trailer,
    encode_binary_row,
    encode_csv_row,
    encode_header,
    encode_text_row,
)
from twinstream.pgwire.errors import (
    MessageDecodeError,
    Notice,
    PgError,
    ProtocolViolation,
    SqlState,
)
from twinstream.pgwire.limits import (
    OUTPUT_FLUSH_BYTES,
    READ_CHUNK_BYTES,
    ROW_BATCH,
    SHUTDOWN_FLUSH_TIMEOUT_S,
)
from twinstream.pgwire.sqlsplit import split_statements

if TYPE_CHECKING:
    from twinstream.pgwire.server import PgWireServer

__all__ = ["SERVER_VERSION", "Connection", "default_parameters"]

log = logging.getLogger(__name__)

_DEALLOCATE = re.compile(
    r'^\s*deallocate\s+(?:prepare\s+)?("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)\s*;?\s*$',
    re.IGNORECASE,
)

_MOVE = re.compile(
    r"^\s*move\s+(?:forward\s+)?(?:(\d+|all|next)\s+)?(?:(?:from|in)\s+)?"
    r'("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)\s*;?\s*$',
    re.IGNORECASE,
)

SERVER_VERSION = "15.0 (twinstream)"
_UTF8_NAMES = {"utf8", "unicode", "sqlascii"}
_EXTENDED_TYPES = {"P", "B", "D", "E", "C", "H", "S"}


def default_parameters(user: str, params: dict[str, str]) -> dict[str, str]:
    """The ParameterStatus values every session starts with (PostgreSQL's GUC_REPORT set)."""
    return {
        "server_version": SERVER_VERSION,
        "server_encoding": "UTF8",
        "client_encoding": "UTF8",
        "DateStyle": "ISO, MDY",
        "IntervalStyle": "postgres",
        "TimeZone": "UTC",
        "integer_datetimes": "on",
        "standard_conforming_strings": "on",
        "is_superuser": "off",
        "session_authorization": user,
        "application_name": params.get("application_name", ""),
        "default_transaction_read_only": "off",
        "in_hot_standby": "off",
    }


class _Closed(Exception):
    """The client went away (EOF, reset, Terminate)."""


class _Fatal(Exception):
    def __init__(self, error: PgError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass
class _Statement:
    name: str
    sql: str
    param_oids: list[int]
    columns: list[Column] | None

    @property
    def empty(self) -> bool:
        return not self.sql


class _RowSource:
    """Uniform, incremental access to sync and async row iterables."""

    def __init__(self, rows: Rows) -> None:
        self._sync: Iterator[Sequence[object]] | None = None
        self._async: AsyncIterator[Sequence[object]] | None = None
        if isinstance(rows, AsyncIterable):
            self._async = aiter(rows)
        else:
            self._sync = iter(rows)

    @property
    def is_async(self) -> bool:
        return self._async is not None

    def take_sync(self, n: int) -> list[Sequence[object]]:
        assert self._sync is not None
        return list(islice(self._sync, n))

    async def next_async(self) -> Sequence[object] | None:
        assert self._async is not None
        try:
            return await anext(self._async)
        except StopAsyncIteration:
            return None

    async def close(self) -> None:
        it: object = self._async if self._async is not None else self._sync
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception:  # the backend's generator failing to close is not our error
                log.exception("closing a row iterator failed")
        else:
            close = getattr(it, "close", None)
            if close is not None:
                close()


@dataclass
class _Portal:
    name: str
    statement: _Statement
    params: list[object]
    result_formats: tuple[int, ...]
    columns: list[Column] | None
    source: _RowSource | None = None
    encoders: list[Callable[[object], bytes | None]] = field(default_factory=list)
    started: bool = False
    done: bool = False
    sent: int = 0
    tag: str | None = None


def _expand_formats(formats: Sequence[int], n: int, what: str) -> list[int]:
    for f in formats:
        if f not in (m.TEXT, m.BINARY):
            raise PgError(SqlState.PROTOCOL_VIOLATION, f"unsupported format code: {f}")
    if len(formats) == 0:
        return [m.TEXT] * n
    if len(formats) == 1:
        return [formats[0]] * n
    if len(formats) != n:
        raise PgError(
            SqlState.PROTOCOL_VIOLATION,
            f"bind message has {len(formats)} {what} formats but {n} {what}s",
        )
    return list(formats)


def _field(column: Column, fmt: int) -> m.FieldDescription:
    size = column.type_size if column.type_size is not None else types.type_size(column.type_oid)
    return m.FieldDescription(
        column.name,
        column.type_oid,
        size,
        column.type_modifier,
        fmt,
        column.table_oid,
        column.column_number,
    )


def _row_description(columns: Sequence[Column], formats: Sequence[int]) -> m.RowDescription:
    return m.RowDescription(tuple(_field(c, f) for c, f in zip(columns, formats, strict=True)))


def _internal(exc: BaseException) -> PgError:
    return PgError(SqlState.INTERNAL_ERROR, f"internal error: {type(exc).__name__}: {exc}")


def _statement_not_found(name: str) -> PgError:
    what = f'prepared statement "{name}"' if name else "unnamed prepared statement"
    return PgError(SqlState.INVALID_SQL_STATEMENT_NAME, f"{what} does not exist")


def _canceled() -> PgError:
    return PgError(SqlState.QUERY_CANCELED, "canceling statement due to user request")


#: Messages that start executing something: refused once the server is shutting down.
_NEW_WORK = (m.Query, m.Execute, m.FunctionCall)
#: Extended-protocol messages that open (or continue) a unit ended by Sync.
_UNIT_MESSAGES = (m.Parse, m.Bind, m.Describe, m.Execute, m.Close, m.Flush)


class Connection:
    """Serves one socket until it closes. Made and tracked by `PgWireServer`."""

    def __init__(
        self, server: PgWireServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._server = server
        self._reader = reader
        self._writer = writer
        self._parser = FrontendParser(max_message_bytes=server.max_message_bytes)
        self._wbuf = bytearray()
        self._idle_write_scheduled = False
        self._session: Session | None = None
        self.key: BackendKey | None = None
        self.admitted = False
        self._startup_seen = False
        self._statements: dict[str, _Statement] = {}
        self._portals: dict[str, _Portal] = {}
        self._ignore_till_sync = False
        self._flush_after_message = False
        self._busy = False
        self._cancel_requested = False
        self._terminating: PgError | None = None
        #: Inside an extended-protocol unit: a message other than Sync came since the last
        #: ReadyForQuery (a terminating connection serves the unit up to its Sync).
        self._in_unit = False
        #: Waiting for the next row of an async (open-ended) stream.
        self._streaming = False
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.task: asyncio.Task[None] | None = None
        peer = writer.get_extra_info("peername")
        self.peer: tuple[str, int] | None = (
            (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        )

    # ------------------------------------------------------------------ output

    def _send(self, msg: m.BackendMessage) -> None:
        self._wbuf += msg.encode()

    def _send_error(self, err: PgError) -> None:
        # PostgreSQL flushes every ErrorResponse at once: a client that sent Parse/Describe/
        # Flush without Sync (asyncpg) must see the error even though Flush is then skipped.
        self._flush_after_message = True
        self._send(
            m.ErrorResponse(
                err.severity, err.sqlstate, err.message, err.detail, err.hint, err.position
            )
        )

    def _write_pending(self) -> None:
        if self._wbuf and not self._writer.is_closing():
            self._writer.write(bytes(self._wbuf))
        self._wbuf.clear()

    def _idle_write(self) -> None:
        self._idle_write_scheduled = False
        self._write_pending()

    def _schedule_idle_write(self) -> None:
        if not self._idle_write_scheduled:
            self._idle_write_scheduled = True
            asyncio.get_running_loop().call_soon(self._idle_write)

    async def _flush(self) -> None:
        self._write_pending()
        await self._writer.drain()

    async def _after_batch(self) -> None:
        """Between row batches: write out a full buffer, and let other connections run (a
        transport that is not paused never makes drain() yield to the event loop)."""
        if len(self._wbuf) >= OUTPUT_FLUSH_BYTES:
            await self._flush()
        await asyncio.sleep(0)

    def _on_notice(self, notice: Notice) -> None:
        if self._closed:
            return
        self._send(
            m.NoticeResponse(
                notice.severity, notice.sqlstate, notice.message, notice.detail, notice.hint
            )
        )
        self._schedule_idle_write()

    def _on_parameter_status(self, name: str, value: str) -> None:
        if self._closed:
            return
        self._send(m.ParameterStatus(name, value))
        self._schedule_idle_write()

    # ------------------------------------------------------------------ input

    async def _read_message(self) -> m.FrontendMessage:
        while True:
            msg = self._parser.next_message()
            if msg is not None:
                return msg
            data = await self._reader.read(READ_CHUNK_BYTES)
            if not data:
                raise _Closed
            self._parser.feed(data)

    # ------------------------------------------------------------------ control (from server)

    def terminate(self, error: PgError, *, force: bool = False) -> None:
        """Shutdown: send `error` (FATAL) as the last message and close. An idle session
        goes at once. A statement already running finishes and is answered (a write whose
        commit landed must be acknowledged: the balancer would re-send a statement cut off
        by the FATAL), and so does the rest of its extended-protocol unit up to Sync; new
        statements are refused with `error` unrun. `force` cuts off even a running one
        (after the server's grace period)."""
        if self._terminating is None:
            self._terminating = error
        if force or self._streaming or not (self._busy or self._in_unit):
            self._cancel_task()

    async def _next_streamed(self, source: _RowSource) -> Sequence[object] | None:
        """The next row of an open-ended stream (SUBSCRIBE); shutdown cuts off a wait here
        at once (such streams never end by themselves; the balancer resumes them)."""
        self._streaming = True
        try:
            return await source.next_async()
        finally:
            self._streaming = False

    def _cancel_task(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def request_cancel(self) -> None:
        """A CancelRequest quoted this connection's key."""
        if not self._busy or self._session is None:
            return
        self._cancel_requested = True
        task = asyncio.get_running_loop().create_task(self._cancel_session(self._session))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _cancel_session(self, session: Session) -> None:
        try:
            await session.cancel()
        except Exception:
            log.exception("session.cancel() failed")

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        self.task = asyncio.current_task()
        try:
            try:
                ready = await asyncio.wait_for(self._startup(), self._server.startup_timeout_s)
            except TimeoutError:
                if self._startup_seen:
                    raise _Fatal(
                        PgError(
                            SqlState.PROTOCOL_VIOLATION,
                            "canceling authentication due to timeout",
                            severity="FATAL",
                        )
                    ) from None
                return
            if ready:
                await self._command_loop()
        except _Fatal as fatal:
            self._send_error(fatal.error)
        except ProtocolViolation as exc:
            self._send_error(PgError(exc.sqlstate, str(exc), severity="FATAL"))
        except PgError as err:  # outside any statement (e.g. no backend key left): fatal
            err.severity = "FATAL"
            self._send_error(err)
        except (_Closed, ConnectionError):
            pass
        except asyncio.CancelledError:
            if self._terminating is None:
                raise
            self._send_error(self._terminating)
        except Exception as exc:
            log.exception("pgwire connection failed")
            self._send_error(
                PgError(SqlState.INTERNAL_ERROR, f"internal error: {exc}", severity="FATAL")
            )
        finally:
            await self._close()

    async def _close(self) -> None:
        self._closed = True
        self._write_pending()  # the last messages (a FATAL) go out before any cleanup waits
        for portal in list(self._portals.values()):
            await self._drop_portal(portal)
        self._portals.clear()
        session, self._session = self._session, None
        self._server._forget(self)
        if session is not None:
            try:
                await session.close()
            except Exception:
                log.exception("session.close() failed")
        try:
            self._write_pending()
            self._writer.close()
            await asyncio.wait_for(self._writer.wait_closed(), SHUTDOWN_FLUSH_TIMEOUT_S)
        except (ConnectionError, TimeoutError, OSError):
            self._writer.transport.abort()

    # ------------------------------------------------------------------ startup

    async def _startup(self) -> bool:
        refused: set[type] = set()
        while True:
            msg = await self._read_message()
            if isinstance(msg, m.SSLRequest | m.GSSENCRequest):
                if type(msg) in refused:
                    raise ProtocolViolation("duplicate encryption request")
                refused.add(type(msg))
                if self._parser.buffered:
                    raise ProtocolViolation("received unencrypted data after encryption request")
                self._wbuf += m.ENCRYPTION_REFUSED
                await self._flush()
                continue
            if isinstance(msg, m.CancelRequest):
                self._server.cancel(msg.pid, msg.secret)
                return False
            if isinstance(msg, m.StartupMessage):
                break
            raise ProtocolViolation("expected a startup message")
        self._startup_seen = True
        if msg.major != 3:
            raise _Fatal(
                PgError(
                    SqlState.FEATURE_NOT_SUPPORTED,
                    f"unsupported frontend protocol {msg.major}.{msg.minor}: "
                    "server supports 3.0 to 3.0",
                    severity="FATAL",
                )
            )
        params = {k: v for k, v in msg.params.items() if not k.startswith("_pq_.")}
        unknown_options = tuple(k for k in msg.params if k.startswith("_pq_."))
        if msg.minor > 0 or unknown_options:
            self._send(m.NegotiateProtocolVersion(0, unknown_options))
        user = params.get("user", "")
        if not user:
            raise _Fatal(
                PgError(
                    SqlState.INVALID_AUTHORIZATION_SPECIFICATION,
                    "no PostgreSQL user name specified in startup packet",
                    severity="FATAL",
                )
            )
        database = params.get("database") or user
        encoding = params.get("client_encoding")
        if encoding is not None:
            normalized = encoding.strip("'\" ").lower().replace("-", "").replace("_", "")
            if normalized not in _UTF8_NAMES:
                raise _Fatal(
                    PgError(
                        SqlState.INVALID_PARAMETER_VALUE,
                        f'invalid value for parameter "client_encoding": "{encoding}"',
                        hint="twinstream speaks UTF8 only.",
                        severity="FATAL",
                    )
                )
        if self._server.closing:
            raise _Fatal(
                PgError(
                    SqlState.CANNOT_CONNECT_NOW,
                    "the database system is shutting down",
                    severity="FATAL",
                )
            )
        if not self._server._admit(self):
            raise _Fatal(
                PgError(
                    SqlState.TOO_MANY_CONNECTIONS,
                    "sorry, too many clients already",
                    severity="FATAL",
                )
            )
        try:
            await self._server.authenticator.authenticate(user, _Channel(self))
        except PgError as err:
            err.severity = "FATAL"
            raise _Fatal(err) from None
        self._send(m.AuthenticationOk())
        self.key = self._server._register(self)
        ctx = ConnectionContext(
            user=user,
            database=database,
            params=params,
            peer=self.peer,
            key=self.key,
            notice_sink=self._on_notice,
            parameter_sink=self._on_parameter_status,
        )
        try:
            self._session = self._server.session_factory(ctx)
            extra = await self._session.startup(params)
        except PgError as err:
            err.severity = "FATAL"
            raise _Fatal(err) from None
        statuses = default_parameters(user, params)
        statuses.update(self._server.parameters)
        statuses.update(extra)
        for name, value in statuses.items():
            self._send(m.ParameterStatus(name, value))
        self._send(m.BackendKeyData(self.key.pid, self.key.secret))
        self._send(m.ReadyForQuery(self._session.transaction_status()))
        await self._flush()
        return True

    # ------------------------------------------------------------------ command loop

    @property
    def session(self) -> Session:
        assert self._session is not None
        return self._session

    async def _command_loop(self) -> None:
        while True:
            if self._terminating is not None and not self._in_unit:
                raise _Fatal(self._terminating)  # shutting down: answered all it started
            try:
                msg = await self._read_message()
            except MessageDecodeError as exc:
                kind = exc.message_type
                if self._ignore_till_sync and kind != "S":
                    continue
                self._send_error(PgError(exc.sqlstate, str(exc)))
                if kind in _EXTENDED_TYPES:
                    self._ignore_till_sync = kind != "S"
                    if kind == "S":
                        await self._ready()
                elif kind in ("Q", "F"):
                    await self._ready()
                await self._flush()
                continue
            if isinstance(msg, m.Terminate):
                return
            if self._ignore_till_sync and not isinstance(msg, m.Sync):
                continue
            if self._terminating is not None and isinstance(msg, _NEW_WORK):
                raise _Fatal(self._terminating)  # refused unrun: the client may re-send it
            if isinstance(msg, _UNIT_MESSAGES):
                self._in_unit = True
            elif isinstance(msg, m.Sync | m.Query | m.FunctionCall):
                self._in_unit = False
            self._busy = True
            try:
                await self._dispatch(msg)
            finally:
                self._busy = False
            if self._flush_after_message:
                self._flush_after_message = False
                await self._flush()

    async def _ready(self) -> None:
        status = self.session.transaction_status()
        if status == "I":
            for portal in list(self._portals.values()):
                await self._drop_portal(portal)
        self._send(m.ReadyForQuery(status))
        await self._flush()

    async def _dispatch(self, msg: m.FrontendMessage) -> None:
        if isinstance(msg, m.Query):
            await self._simple_query(msg.sql)
        elif isinstance(msg, m.Sync):
            self._ignore_till_sync = False
            self._cancel_requested = False
            await self._ready()
        elif isinstance(msg, m.Flush):
            await self._flush()
        elif isinstance(msg, m.Parse | m.Bind | m.Describe | m.Execute | m.Close):
            try:
                await self._extended(msg)
            except PgError as err:
                await self._report(err)
                self._ignore_till_sync = True
            except (_Closed, _Fatal, ConnectionError):
                raise
            except Exception as exc:
                log.exception("pgwire: backend failed")
                self._send_error(_internal(exc))
                self._ignore_till_sync = True
        elif isinstance(msg, m.CopyData | m.CopyDone | m.CopyFail):
            pass  # left over from a COPY that failed: dropped, per protocol
        elif isinstance(msg, m.FunctionCall):
            self._send_error(
                PgError(
                    SqlState.FEATURE_NOT_SUPPORTED, "fast-path function calls are not supported"
                )
            )
            await self._ready()
        else:
            raise ProtocolViolation(f"unexpected message {type(msg).__name__}")

    async def _report(self, err: PgError) -> None:
        if err.fatal:
            raise _Fatal(err)
        self._send_error(err)

    # ------------------------------------------------------------------ simple query

    async def _simple_query(self, sql: str) -> None:
        self._cancel_requested = False
        unnamed = self._portals.get("")
        if unnamed is not None:
            await self._drop_portal(unnamed)
        self._statements.pop("", None)
        statements = split_statements(sql)
        if not statements:
            self._send(m.EmptyQueryResponse())
        for statement in statements:
            try:
                if self._cancel_requested:
                    raise _canceled()
                result = (
                    self._deallocate(statement)
                    or await self._move(statement)
                    or await self.session.execute(statement, [], [])
                )
                await self._simple_result(result)
            except PgError as err:
                await self._report(err)
                break
            except (_Closed, _Fatal, ConnectionError):
                raise
            except Exception as exc:
                log.exception("pgwire: backend failed")
                self._send_error(_internal(exc))
                break
        await self._ready()

    def _deallocate(self, sql: str) -> QueryResult | None:
        """SQL `DEALLOCATE [PREPARE] name | ALL` acts on this connection's prepared
        statements (psycopg sends `DEALLOCATE ALL` after a rollback), so pgwire answers it."""
        match = _DEALLOCATE.match(sql)
        if match is None:
            return None
        name = match.group(1)
        if name.lower() == "all":
            keep = self._statements.get("")
            self._statements.clear()
            if keep is not None:
                self._statements[""] = keep
            return QueryResult(command_tag="DEALLOCATE ALL")
        key = name[1:-1].replace('""', '"') if name.startswith('"') else name.lower()
        if self._statements.pop(key, None) is None:
            raise PgError(
                SqlState.INVALID_SQL_STATEMENT_NAME, f'prepared statement "{key}" does not exist'
            )
        return QueryResult(command_tag="DEALLOCATE")

    async def _move(self, sql: str) -> QueryResult | None:
        """SQL `MOVE [FORWARD] [n | ALL | NEXT] {FROM | IN} portal` on a protocol-level portal
        that has started (asyncpg's `Cursor.forward` names its portal): skip rows. Other MOVEs
        (SQL cursors) go to the backend."""
        match = _MOVE.match(sql)
        if match is None:
            return None
        count_text, name = match.group(1), match.group(2)
        key = name[1:-1].replace('""', '"') if name.startswith('"') else name
        portal = self._portals.get(key)
        if portal is None or not portal.started or portal.source is None:
            return None
        word = (count_text or "1").lower()
        want = None if word == "all" else (1 if word == "next" else int(word))
        moved = 0
        source = portal.source
        while want is None or moved < want:
            step = ROW_BATCH if want is None else min(ROW_BATCH, want - moved)
            if source.is_async:
                row = await source.next_async()
                got = 0 if row is None else 1
            else:
                got = len(source.take_sync(step))
            moved += got
            if got == 0 or (not source.is_async and got < step):
                break
        return QueryResult(command_tag=f"MOVE {moved}")

    async def _simple_result(self, result: object) -> None:
        if isinstance(result, CopyInRequest):
            await self._copy_in(result)
        elif isinstance(result, CopyOutStream):
            await self._copy_out(result)
        elif isinstance(result, QueryResult):
            if result.columns is None:
                assert result.command_tag is not None
                self._send(m.CommandComplete(result.command_tag))
                return
            formats = [m.TEXT] * len(result.columns)
            self._send(_row_description(result.columns, formats))
            source = _RowSource(result.rows)
            encoders = [types.encoder(c.type_oid, m.TEXT) for c in result.columns]
            try:
                sent, _ = await self._stream_rows(source, encoders, 0)
            finally:
                await source.close()
            self._send(m.CommandComplete(result.command_tag or f"SELECT {sent}"))
        else:
            raise TypeError(f"Session.execute returned {type(result).__name__}")

    # ------------------------------------------------------------------ rows

    async def _stream_rows(
        self,
        source: _RowSource,
        encoders: list[Callable[[object], bytes | None]],
        max_rows: int,
    ) -> tuple[int, bool]:
        """Send DataRows; returns (rows sent, exhausted). max_rows 0 means all."""
        sent = 0
        ncols = len(encoders)
        buf = self._wbuf
        encode_row = m.encode_data_row
        if not source.is_async:
            while True:
                want = ROW_BATCH if max_rows <= 0 else min(ROW_BATCH, max_rows - sent)
                if want <= 0:
                    return sent, False
                if self._cancel_requested:
                    raise _canceled()
                rows = source.take_sync(want)
                for row in rows:
                    if len(row) != ncols:
                        raise _row_width(len(row), ncols)
                    buf += encode_row([enc(v) for enc, v in zip(encoders, row, strict=True)])
                sent += len(rows)
                if len(rows) < want:
                    return sent, True
                await self._after_batch()
        while max_rows <= 0 or sent < max_rows:
            if self._cancel_requested:
                raise _canceled()
            item = await self._next_streamed(source)
            if item is None:
                return sent, True
            if len(item) != ncols:
                raise _row_width(len(item), ncols)
            buf += encode_row([enc(v) for enc, v in zip(encoders, item, strict=True)])
            sent += 1
            self._schedule_idle_write()
            if sent % ROW_BATCH == 0:
                await self._flush()
        return sent, False

    # ------------------------------------------------------------------ extended protocol

    async def _extended(self, msg: m.Parse | m.Bind | m.Describe | m.Execute | m.Close) -> None:
        if isinstance(msg, m.Parse):
            await self._parse(msg)
        elif isinstance(msg, m.Bind):
            await self._bind(msg)
        elif isinstance(msg, m.Describe):
            await self._describe(msg)
        elif isinstance(msg, m.Execute):
            await self._execute(msg)
        else:
            if msg.kind == "S":
                self._statements.pop(msg.name, None)
            else:
                portal = self._portals.get(msg.name)
                if portal is not None:
                    await self._drop_portal(portal)
            self._send(m.CloseComplete())

    async def _parse(self, msg: m.Parse) -> None:
        if msg.name and msg.name in self._statements:
            raise PgError(
                SqlState.DUPLICATE_PREPARED_STATEMENT,
                f'prepared statement "{msg.name}" already exists',
            )
        statements = split_statements(msg.query)
        if len(statements) > 1:
            raise PgError(
                SqlState.SYNTAX_ERROR, "cannot insert multiple commands into a prepared statement"
            )
        if not statements:
            stmt = _Statement(msg.name, "", list(msg.param_oids), None)
        else:
            desc = await self.session.describe(statements[0], list(msg.param_oids))
            oids = [
                given or inferred
                for given, inferred in zip_longest(msg.param_oids, desc.param_oids, fillvalue=0)
            ]
            columns = list(desc.columns) if desc.columns is not None else None
            stmt = _Statement(msg.name, statements[0], oids, columns)
        self._statements[msg.name] = stmt
        self._send(m.ParseComplete())

    async def _bind(self, msg: m.Bind) -> None:
        stmt = self._statements.get(msg.statement)
        if stmt is None:
            raise _statement_not_found(msg.statement)
        if msg.portal and msg.portal in self._portals:
            raise PgError(SqlState.DUPLICATE_CURSOR, f'cursor "{msg.portal}" already exists')
        nparams = len(stmt.param_oids)
        if len(msg.params) != nparams:
            raise PgError(
                SqlState.PROTOCOL_VIOLATION,
                f"bind message supplies {len(msg.params)} parameters, but prepared statement "
                f'"{stmt.name}" requires {nparams}',
            )
        formats = _expand_formats(msg.param_formats, nparams, "parameter")
        params = [
            types.decode(oid, data, fmt)
            for oid, data, fmt in zip(stmt.param_oids, msg.params, formats, strict=True)
        ]
        if stmt.columns is not None:
            _expand_formats(msg.result_formats, len(stmt.columns), "result")
        else:
            _expand_formats(msg.result_formats, len(msg.result_formats), "result")
        old = self._portals.get(msg.portal)
        if old is not None:
            await self._drop_portal(old)
        self._portals[msg.portal] = _Portal(
            msg.portal, stmt, params, msg.result_formats, stmt.columns
        )
        self._send(m.BindComplete())

    async def _describe(self, msg: m.Describe) -> None:
        if msg.kind == "S":
            stmt = self._statements.get(msg.name)
            if stmt is None:
                raise _statement_not_found(msg.name)
            self._send(m.ParameterDescription(tuple(stmt.param_oids)))
            if stmt.columns is None:
                self._send(m.NoData())
            else:
                self._send(_row_description(stmt.columns, [m.TEXT] * len(stmt.columns)))
            return
        portal = self._portals.get(msg.name)
        if portal is None:
            columns = await self.session.describe_cursor(msg.name)
            formats: Sequence[int] = [m.TEXT] * len(columns or ())
        else:
            columns = portal.columns
            formats = _expand_formats(portal.result_formats, len(columns or ()), "result")
        if columns is None:
            self._send(m.NoData())
        else:
            self._send(_row_description(columns, formats))

    async def _execute(self, msg: m.Execute) -> None:
        self._cancel_requested = False
        portal = self._portals.get(msg.portal)
        if portal is None:
            raise PgError(SqlState.INVALID_CURSOR_NAME, f'portal "{msg.portal}" does not exist')
        if portal.statement.empty:
            self._send(m.EmptyQueryResponse())
            return
        if portal.done:
            tag = portal.tag or "SELECT 0"
            self._send(m.CommandComplete("SELECT 0" if tag.startswith("SELECT") else tag))
            return
        source = portal.source
        try:
            if not portal.started:
                portal.started = True
                stmt = portal.statement
                result = (
                    self._deallocate(stmt.sql)
                    or await self._move(stmt.sql)
                    or await self.session.execute(stmt.sql, portal.params, stmt.param_oids)
                )
                if isinstance(result, CopyInRequest):
                    portal.done = True
                    await self._copy_in(result)
                    return
                if isinstance(result, CopyOutStream):
                    portal.done = True
                    await self._copy_out(result)
                    return
                if not isinstance(result, QueryResult):
                    raise TypeError(f"Session.execute returned {type(result).__name__}")
                portal.tag = result.command_tag
                if result.columns is None:
                    portal.done = True
                    assert result.command_tag is not None
                    self._send(m.CommandComplete(result.command_tag))
                    return
                portal.columns = list(result.columns)
                formats = _expand_formats(portal.result_formats, len(portal.columns), "result")
                portal.encoders = [
                    types.encoder(c.type_oid, f)
                    for c, f in zip(portal.columns, formats, strict=True)
                ]
                source = portal.source = _RowSource(result.rows)
            assert source is not None
            sent, exhausted = await self._stream_rows(source, portal.encoders, msg.max_rows)
            portal.sent += sent
        except BaseException:
            await self._drop_portal(portal)
            raise
        if exhausted:
            portal.done = True
            portal.source = None
            await source.close()
            self._send(m.CommandComplete(portal.tag or f"SELECT {portal.sent}"))
        else:
            self._send(m.PortalSuspended())

    async def _drop_portal(self, portal: _Portal) -> None:
        if self._portals.get(portal.name) is portal:
            del self._portals[portal.name]
        source, portal.source = portal.source, None
        portal.done = True
        if source is not None:
            await source.close()

    # ------------------------------------------------------------------ COPY

    async def _copy_in(self, request: CopyInRequest) -> None:
        columns = request.columns
        fmt = request.format
        decoders = [types.TYPES.get(c.type_oid) for c in columns]
        self._send(m.CopyInResponse(fmt.code, (fmt.code,) * len(columns)))
        await self._flush()
        decoder = _copy_decoder(fmt)
        count = 0

        def decode_rows(lines: Sequence[Sequence[str | bytes | None]]) -> list[tuple[object, ...]]:
            rows = []
            for fields in lines:
                if len(fields) != len(columns):
                    what = "extra data after last expected column"
                    if len(fields) < len(columns):
                        what = f'missing data for column "{columns[len(fields)].name}"'
                    if fmt.kind == "binary":
                        what = f"row field count is {len(fields)}, expected {len(columns)}"
                    raise PgError(SqlState.BAD_COPY_FILE_FORMAT, what)
                rows.append(
                    tuple(
                        _copy_field(f, t, fmt.kind == "binary")
                        for f, t in zip(fields, decoders, strict=True)
                    )
                )
            return rows

        try:
            while True:
                try:
                    msg = await self._read_message()
                except MessageDecodeError as exc:
                    raise PgError(exc.sqlstate, str(exc)) from None
                if isinstance(msg, m.CopyData):
                    rows = decode_rows(decoder.feed(msg.data))
                    if rows:
                        await request.write_rows(rows)
                        count += len(rows)
                    if self._cancel_requested:
                        raise _canceled()
                elif isinstance(msg, m.CopyDone):
                    rows = decode_rows(decoder.finish())
                    if rows:
                        await request.write_rows(rows)
                        count += len(rows)
                    tag = await request.finish(count)
                    self._send(m.CommandComplete(tag))
                    return
                elif isinstance(msg, m.CopyFail):
                    raise PgError(SqlState.QUERY_CANCELED, f"COPY from stdin failed: {msg.message}")
                elif isinstance(msg, m.Flush | m.Sync):
                    continue  # ignored during copy-in, per protocol
                elif isinstance(msg, m.Terminate):
                    raise _Closed
                else:
                    raise PgError(
                        SqlState.PROTOCOL_VIOLATION,
                        f"unexpected message type {type(msg).__name__} during COPY from stdin",
                    )
        except BaseException as exc:
            reason = exc.message if isinstance(exc, PgError) else type(exc).__name__
            try:
                await request.abort(reason)
            except Exception:
                log.exception("CopyInRequest.abort failed")
            raise

    async def _copy_out(self, stream: CopyOutStream) -> None:
        columns = stream.columns
        ncols = len(columns)
        fmt = stream.format
        self._send(m.CopyOutResponse(fmt.code, (fmt.code,) * ncols))
        text_types = [types.TYPES.get(c.type_oid) for c in columns]
        if fmt.header and fmt.kind != "binary":
            self._send(m.CopyData(encode_header([c.name for c in columns], fmt)))
        # binary: the file header travels with the first row (or the trailer), as PostgreSQL
        # sends it (psycopg parses the first CopyData as header + row)
        prefix = [binary_header()] if fmt.kind == "binary" else []

        def line(row: Sequence[object]) -> bytes:
            if len(row) != ncols:
                raise _row_width(len(row), ncols)
            if fmt.kind == "binary":
                head = prefix.pop() if prefix else b""
                return head + encode_binary_row(
                    [
                        None if v is None else types.encode_binary(c.type_oid, v)
                        for v, c in zip(row, columns, strict=True)
                    ]
                )
            fields = [
                None
                if v is None
                else (t.text_out(v) if t is not None else types.encode_text(c.type_oid, v))
                for v, t, c in zip(row, text_types, columns, strict=True)
            ]
            if fmt.kind == "csv":
                return encode_csv_row(fields, fmt)
            return encode_text_row(fields, fmt)

        source = _RowSource(stream.rows)
        count = 0
        try:
            if not source.is_async:
                while True:
                    if self._cancel_requested:
                        raise _canceled()
                    rows = source.take_sync(ROW_BATCH)
                    for row in rows:
                        self._send(m.CopyData(line(row)))
                    count += len(rows)
                    if len(rows) < ROW_BATCH:
                        break
                    await self._after_batch()
            else:
                while True:
                    if self._cancel_requested:
                        raise _canceled()
                    item = await self._next_streamed(source)
                    if item is None:
                        break
                    self._send(m.CopyData(line(item)))
                    count += 1
                    self._schedule_idle_write()
                    if count % ROW_BATCH == 0:
                        await self._flush()
        finally:
            await source.close()
        if fmt.kind == "binary":
            self._send(m.CopyData((prefix.pop() if prefix else b"") + binary_trailer()))
        self._send(m.CopyDone())
        self._send(m.CommandComplete(stream.command_tag or f"COPY {count}"))


def _copy_decoder(fmt: CopyFormat) -> CopyTextFormatDecoder | CopyCsvDecoder | CopyBinaryDecoder:
    if fmt.kind == "csv":
        return CopyCsvDecoder(fmt)
    if fmt.kind == "binary":
        return CopyBinaryDecoder()
    return CopyTextFormatDecoder(fmt)


def _copy_field(field: str | bytes | None, t: types.PgType | None, binary: bool) -> object:
    """One COPY field decoded with its column's type (unknown types stay as given)."""
    if field is None or t is None:
        return field
    if binary:
        assert isinstance(field, bytes)
        return t.binary_in(field)
    assert isinstance(field, str)
    return t.text_in(field)


def _row_width(got: int, expected: int) -> PgError:
    return PgError(
        SqlState.INTERNAL_ERROR, f"backend produced a row of {got} values for {expected} columns"
    )


class _Channel:
    """The AuthChannel of a connection."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def send(self, message: m.BackendMessage) -> None:
        self._conn._send(message)
        await self._conn._flush()

    async def receive(
        self, kind: Literal["password", "sasl_initial", "sasl"]
    ) -> m.PasswordMessage | m.SASLInitialResponse | m.SASLResponse:
        self._conn._parser.password_kind = kind
        msg = await self._conn._read_message()
        if isinstance(msg, m.Terminate):
            raise _Closed
        if isinstance(msg, m.PasswordMessage | m.SASLInitialResponse | m.SASLResponse):
            return msg
        raise ProtocolViolation(f"expected password response, got message {type(msg).__name__}")
