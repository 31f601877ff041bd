"""One client connection through the balancer: startup, splicing, session tracking, moves,
retries. See doc/design/cutover.md for the rules; the short version:

- One driver task owns all of the session's state. Reader tasks (client, current backend) only
  copy bytes into the session's event queue, so moving a session or retrying a statement never
  races with traffic: whatever arrives meanwhile waits in the queue.
- Client messages are grouped into *units*: a simple Query (or FunctionCall), or extended
  protocol messages up to and including Sync. Each unit ends with one ReadyForQuery. Units in
  flight keep their bytes until that ReadyForQuery, so they can be re-sent.
- While the session is outside a transaction, the head unit's answer is held back (up to
  `response_hold_bytes` / `response_hold_s`, and never past a client Flush or a COPY) until its
  ReadyForQuery: if the backend is fenced (57P01) or vanishes before that, nothing of the
  answer has reached the client and the unit is re-sent on the current route's generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from twinstream.balancer.backend import Backend, BackendRefused, NeedsPassword, cstring_pairs
from twinstream.balancer.frames import (
    ErrorFields,
    FrameSplitter,
    cstring_at,
    error_frame,
    parse_error,
    read_frame,
    read_startup_packet,
    ready_frame,
)
from twinstream.balancer.retry import RetryableError, match_retryable
from twinstream.balancer.route import Route
from twinstream.balancer.sqlclass import Stmt, classify, classify_query, is_ddl_text
from twinstream.balancer.stats import SessionInfo
from twinstream.balancer.subscribe import SubscribeResume, parse_resumable
from twinstream.pgwire import messages as m
from twinstream.pgwire.errors import ProtocolViolation
from twinstream.pgwire.limits import STARTUP_TIMEOUT_S

if TYPE_CHECKING:
    from twinstream.balancer.server import Balancer

__all__ = ["ClientSession"]

log = logging.getLogger(__name__)

_I32 = struct.Struct("!i")

# Message type bytes.
_Q, _P, _S, _H, _C, _X, _F = b"QPSHCXF"
_COPY_DATA, _COPY_DONE, _COPY_FAIL = b"dcf"
_RFQ, _ERR, _AUTH, _PARAM = b"ZERS"
_PARSE_COMPLETE, _CLOSE_COMPLETE, _COMMAND_COMPLETE = b"13C"
_COPY_IN, _COPY_OUT, _COPY_BOTH = b"GHW"

#: Backend messages that may appear at any time (not part of a unit's answer proper).
_ASYNC_TYPES = frozenset(b"SNA")
#: Answer types a client may have seen without the statement having run (Parse/Bind/Describe/
#: Close answers): a unit whose forwarded answer is only these can still be re-sent, skipping
#: the same prefix of the new answer.
_SAFE_PREFIX = frozenset(b"12tTn3SNA")

ADMIN_SHUTDOWN = "57P01"
CRASH_SHUTDOWN = "57P02"
CANNOT_CONNECT_NOW = "57P03"
SERIALIZATION_FAILURE = "40001"
TX_MOVED_MESSAGE = (
    "connection moved to a new generation during a transaction; retry the transaction"
)
QUERY_CANCELED = "57014"
NO_BACKEND_MESSAGE = "no backend available"

#: After a 57P01 from generation G, wait this long for the route to leave G before trying G
#: again (a restarted G, rather than a fenced one, still gets the session back).
FENCED_PROBE_S = 1.0
#: A failed move is tried again after this long.
MOVE_RETRY_S = 1.0
#: Time a planned move may take (connect, startup, replay) before it is abandoned.
MOVE_TIMEOUT_S = 5.0
#: Bytes buffered from a reader before it waits for the other side's socket to drain.
WRITE_HIGH_WATER = 1 << 20


class _Close(Exception):
    """End the session (whatever had to be said has been said)."""


class _Fatal(Exception):
    """Send `frame` (a FATAL ErrorResponse) to the client, then end the session."""

    def __init__(self, frame: bytes) -> None:
        super().__init__(frame[:60])
        self.frame = frame


class _NoBackend(Exception):
    pass


def _fatal(sqlstate: str, message: str) -> _Fatal:
    return _Fatal(error_frame(sqlstate, message, severity="FATAL"))


@dataclass
class _Unit:
    """Client messages answered by one ReadyForQuery, and what is known of their answer."""

    frames: list[bytes] = field(default_factory=list)
    complete: bool = False
    has_named_parse: bool = False
    is_commit: bool = False
    #: Parse/Close messages in order, matched to ParseComplete/CloseComplete answers:
    #: (kind, name, parse frame) with kind "parse" or "close_s" / "close_p".
    ops: list[tuple[str, str, bytes]] = field(default_factory=list)
    op_pos: int = 0
    #: Statements of a simple Query, matched to CommandComplete answers.
    stmts: list[Stmt] = field(default_factory=list)
    stmt_pos: int = 0
    #: Session-state changes confirmed by the answer, applied at ReadyForQuery.
    effects: list[tuple[str, str | None, bytes | str | None]] = field(default_factory=list)
    #: The held-back answer.
    resp: list[bytes] = field(default_factory=list)
    resp_bytes: int = 0
    resp_since: float = 0.0
    #: Types of answer messages already forwarded to the client (async ones excepted).
    forwarded: list[int] = field(default_factory=list)
    #: After a re-send: the answer prefix the client already has, skipped once.
    skip: deque[int] = field(default_factory=deque)
    #: Some of the answer reached the client that proves the statement ran (or COPY began).
    unsafe: bool = False
    flush_mode: bool = False
    copy: bool = False
    error: ErrorFields | None = None
    retry_deadline: float | None = None
    counted_retry: bool = False
    attempts: int = 0
    #: CommandComplete messages in the answer so far (statements that finished).
    commands_done: int = 0
    #: A SUBSCRIBE the balancer can resume on the next generation (subscribe.py).
    subscribe: SubscribeResume | None = None

    def reset_for_resend(self) -> None:
        self.op_pos = 0
        self.stmt_pos = 0
        self.effects.clear()
        self.resp.clear()
        self.resp_bytes = 0
        self.error = None
        self.commands_done = 0
        self.skip = deque(self.forwarded)


class ClientSession:
    def __init__(
        self, balancer: Balancer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.balancer = balancer
        self.reader = reader
        self.writer = writer
        with contextlib.suppress(Exception):
            writer.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.client_splitter = FrameSplitter(frontend=True)
        self.events: asyncio.Queue[tuple[str, object, bytes]] = asyncio.Queue(maxsize=32)
        self.wake = asyncio.Event()
        self.backend: Backend | None = None
        self.startup_raw = b""
        self.startup_params: dict[str, str] = {}
        self.client_key: tuple[int, int] | None = None
        #: ParameterStatus values the client has been told.
        self.client_params: dict[str, str] = {}
        self.status = "I"
        self.units: deque[_Unit] = deque()
        # Session state replayed on a new backend.
        self.sets: dict[str, str] = {}
        self.statements: dict[str, bytes] = {}
        self.sql_prepared: dict[str, str] = {}
        self.hold_cursors: set[str] = set()
        # Modes.
        self.discard_until_sync = False
        self.drop_copy = False
        self.pending_abort = False
        self.cancel_requested = False
        self.move_requested = False
        self.unmovable = False
        self.move_retry_at = 0.0
        self.moves = 0
        self.closing = False
        self._client_task: asyncio.Task[None] | None = None
        self.task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ public (balancer)

    def info(self) -> SessionInfo:
        b = self.backend
        return SessionInfo(
            client_key=self.client_key,
            backend_key=b.key if b is not None else None,
            generation=b.generation if b is not None else None,
            status=self.status,
            in_flight=len(self.units),
            moves=self.moves,
            user=self.startup_params.get("user", ""),
            database=self.startup_params.get("database", ""),
        )

    @property
    def generation(self) -> int | None:
        return self.backend.generation if self.backend is not None else None

    def wants_move(self, route: Route) -> bool:
        b = self.backend
        return (
            b is not None
            and b.generation != route.generation
            and not self.move_requested
            and not self.unmovable
            and not self.closing
            and time.monotonic() >= self.move_retry_at
        )

    def request_move(self) -> None:
        self.move_requested = True
        self._poke()

    def cancel_from_client(self) -> None:
        """The client sent a CancelRequest with its (original) key."""
        if not self.units:
            return
        self.cancel_requested = True
        self.wake.set()
        b = self.backend
        if b is not None and b.key is not None and not b.closed:
            self.balancer.forward_cancel(b.route.host, b.route.port, *b.key)

    def _canceled(self) -> bool:
        """Whether a cancel arrived (a method, so it is re-read after every await)."""
        return self.cancel_requested

    def _poke(self) -> None:
        self.wake.set()
        with contextlib.suppress(asyncio.QueueFull):
            self.events.put_nowait(("wake", None, b""))

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        self.task = asyncio.current_task()
        try:
            if await self._startup():
                await self._loop()
        except _Fatal as f:
            self._send_client(f.frame)
        except ProtocolViolation as e:
            self.balancer.counters.protocol_errors += 1
            self._send_client(error_frame("08P01", str(e), severity="FATAL"))
        except (_Close, ConnectionError, asyncio.IncompleteReadError, EOFError):
            pass
        except asyncio.CancelledError:
            if not self.balancer.closing:
                raise
            self._send_client(
                error_frame(ADMIN_SHUTDOWN, "the balancer is shutting down", severity="FATAL")
            )
        except Exception:
            log.exception("balancer session failed")
            self._send_client(error_frame("XX000", "balancer internal error", severity="FATAL"))
        finally:
            await self._cleanup()

    async def _cleanup(self) -> None:
        self.closing = True
        if self._client_task is not None:
            self._client_task.cancel()
        if self.backend is not None:
            self.backend.close()
        self.balancer._forget(self)
        try:
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 2.0)
        except (ConnectionError, TimeoutError, OSError):
            self.writer.transport.abort()

    # ------------------------------------------------------------------ startup

    async def _startup(self) -> bool:
        refused: set[type] = set()
        while True:
            try:
                msg, raw = await asyncio.wait_for(
                    read_startup_packet(self.reader), STARTUP_TIMEOUT_S
                )
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                return False
            except ProtocolViolation as e:
                self.balancer.counters.protocol_errors += 1
                raise _fatal("08P01", str(e)) from None
            if isinstance(msg, m.SSLRequest | m.GSSENCRequest):
                if type(msg) in refused:
                    self.balancer.counters.protocol_errors += 1
                    raise _fatal("08P01", "duplicate encryption request")
                refused.add(type(msg))
                self.writer.write(m.ENCRYPTION_REFUSED)
                await self.writer.drain()
                continue
            if isinstance(msg, m.CancelRequest):
                await self.balancer.handle_cancel(msg.pid, msg.secret)
                return False
            if isinstance(msg, m.StartupMessage):
                break
            self.balancer.counters.protocol_errors += 1
            raise _fatal("08P01", "expected a startup message")
        if msg.major != 3:
            raise _fatal(
                "0A000",
                f"unsupported frontend protocol {msg.major}.{msg.minor}: "
                "server supports 3.0 to 3.0",
            )
        self.startup_raw = raw
        self.startup_params = dict(msg.params)
        await self._initial_connect()
        self.balancer.counters.sessions += 1
        self.balancer._register(self)
        return True

    async def _initial_connect(self) -> None:
        """Hold until there is a route and a backend accepts us, then relay authentication."""
        deadline = time.monotonic() + self.balancer.hold_timeout_s
        held = False
        backoff = 0.02
        while True:
            route = self.balancer.route
            if route is not None:
                try:
                    backend = await Backend.connect(route)
                except (OSError, TimeoutError) as e:
                    log.debug("backend %s unreachable: %s", route, e)
                else:
                    if await self._relay_auth(backend):
                        return
                    backend.abort()
            if not held:
                held = True
                self.balancer.counters.held += 1
            now = time.monotonic()
            if now >= deadline:
                self.balancer.counters.hold_timeouts += 1
                raise _fatal(CANNOT_CONNECT_NOW, NO_BACKEND_MESSAGE)
            if self.reader.at_eof():
                raise _Close
            await self._wait_route_change(min(backoff, deadline - now))
            backoff = min(backoff * 2, 0.25)

    async def _relay_auth(self, backend: Backend) -> bool:
        """Relay the startup exchange; False when the backend refused us before the client
        saw anything (try again later), True once the backend is ready for queries."""
        backend.write(self.startup_raw)
        forwarded = False
        while True:
            try:
                frame = await asyncio.wait_for(
                    read_frame(backend.reader, backend.splitter), STARTUP_TIMEOUT_S
                )
            except (EOFError, OSError, TimeoutError):
                if not forwarded:
                    return False
                raise _fatal("08006", "the backend closed the connection during startup") from None
            t = frame[0]
            if t == _ERR:
                err = parse_error(frame)
                if not forwarded and err.code in (ADMIN_SHUTDOWN, CANNOT_CONNECT_NOW):
                    return False
                self._send_client(frame)
                raise _Close
            backend.note_frame(frame)
            self._send_client(frame)
            forwarded = True
            if t == _AUTH:
                (kind,) = _I32.unpack_from(frame, 5)
                if kind not in (0, 12):
                    await self._drain_client()
                    answer = await asyncio.wait_for(
                        read_frame(self.reader, self.client_splitter), STARTUP_TIMEOUT_S
                    )
                    if answer[0] != ord("p"):
                        self.balancer.counters.protocol_errors += 1
                        raise _fatal("08P01", "expected a password response")
                    backend.write(answer)
            elif t == _RFQ:
                self.status = chr(frame[5])
                self.client_key = backend.key
                self._install(backend)
                await self._drain_client()
                return True

    # ------------------------------------------------------------------ the driver

    async def _loop(self) -> None:
        self._client_task = asyncio.get_running_loop().create_task(
            self._client_pump(), name="balancer-client"
        )
        await self._process_client_frames()
        while True:
            if self.move_requested and self._idle():
                await self._move()
            timeout = self._hold_timeout()
            if timeout is None:
                kind, src, data = await self.events.get()
            else:
                try:
                    kind, src, data = await asyncio.wait_for(self.events.get(), timeout)
                except TimeoutError:
                    self._age_flush()
                    continue
            if kind == "c":
                if not data:
                    raise _Close
                self.client_splitter.feed(data)
                await self._process_client_frames()
            elif kind in ("b", "bx"):
                if src is not self.backend or self.backend is None:
                    continue
                backend = self.backend
                if kind == "b":
                    if not data:
                        await self._on_backend_death(None, None)
                        continue
                    backend.splitter.feed(data)
                while self.backend is backend:
                    frame = backend.splitter.next_frame()
                    if frame is None:
                        break
                    await self._on_backend_frame(frame)

    async def _process_client_frames(self) -> None:
        while True:
            frame = self.client_splitter.next_frame()
            if frame is None:
                return
            await self._on_client_frame(frame)

    async def _client_pump(self) -> None:
        try:
            while True:
                await self._wait_writable(self.backend)
                data = await self.reader.read(64 * 1024)
                await self.events.put(("c", None, data))
                if not data:
                    return
        except (ConnectionError, OSError):
            await self.events.put(("c", None, b""))

    async def _wait_writable(self, backend: Backend | None) -> None:
        """Backpressure: read no more from the client while the backend is not reading."""
        while (
            backend is not None
            and not backend.closed
            and backend.writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER
        ):
            await asyncio.sleep(0.005)

    async def _wait_client_writable(self) -> None:
        while (
            not self.closing
            and not self.writer.transport.is_closing()
            and self.writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER
        ):
            await asyncio.sleep(0.005)

    def _idle(self) -> bool:
        return (
            self.backend is not None
            and self.status == "I"
            and not self.units
            and not self.hold_cursors
            and not self.discard_until_sync
            and not self.pending_abort
        )

    def _install(self, backend: Backend) -> None:
        self.backend = backend
        session = self

        async def gate() -> None:
            await session._wait_client_writable()

        backend.start_reader(self.events, gate)
        if backend.splitter.buffered:  # bytes read past the handshake: process them soon
            with contextlib.suppress(asyncio.QueueFull):
                self.events.put_nowait(("bx", backend, b""))

    # ------------------------------------------------------------------ output

    def _send_client(self, frame: bytes) -> None:
        if self.writer.transport.is_closing():
            return
        if frame[:1] == b"S":
            parts = cstring_pairs(frame[5:])
            if len(parts) >= 2:
                self.client_params[parts[0]] = parts[1]
        self.writer.write(frame)

    async def _drain_client(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    def _to_backend(self, frame: bytes) -> None:
        if self.backend is not None:
            self.backend.write(frame)

    # ------------------------------------------------------------------ client messages

    async def _on_client_frame(self, frame: bytes) -> None:
        t = frame[0]
        if self.discard_until_sync:
            if t == _S:
                self.discard_until_sync = False
                self._send_client(ready_frame(self.status))
            elif t == _X:
                raise _Close
            return
        if t in (_COPY_DATA, _COPY_DONE, _COPY_FAIL):
            if not self.drop_copy:
                self._to_backend(frame)
            return
        self.drop_copy = False
        if t == _X:
            self._to_backend(frame)
            raise _Close
        if self.pending_abort:
            self._answer_aborted(t, frame)
            return
        unit = self.units[-1] if self.units and not self.units[-1].complete else None
        if unit is None:
            if t == _H:
                self._to_backend(frame)
                return
            if self._ddl_refused(t, frame):
                return
            unit = _Unit()
            if not self.units:
                self.cancel_requested = False
            self.units.append(unit)
        unit.frames.append(frame)
        if t == _H:
            unit.flush_mode = True
            if unit is self.units[0]:
                self._flush_unit(unit)
        else:
            unit.flush_mode = False
        if t == _Q:
            sql = _payload_cstring(frame)
            unit.stmts = classify_query(sql)
            unit.is_commit = any(s.kind == "commit" for s in unit.stmts)
            unit.complete = True
            if len(unit.stmts) == 1 and len(unit.frames) == 1:
                unit.subscribe = parse_resumable(sql)
        elif t in (_F, _S):
            unit.complete = True
        elif t == _P:
            name, pos = cstring_at(frame, 5)
            query, _ = cstring_at(frame, pos)
            unit.ops.append(("parse", name, frame))
            if name:
                unit.has_named_parse = True
            if classify(query).kind == "commit":
                unit.is_commit = True
        elif t == _C and len(frame) > 5:
            kind = "close_s" if frame[5] == ord("S") else "close_p"
            name, _ = cstring_at(frame, 6)
            unit.ops.append((kind, name, b""))
        self._to_backend(frame)

    def _ddl_refused(self, t: int, frame: bytes) -> bool:
        if (
            self.balancer.ddl_policy != "error"
            or self.units
            or self.status != "I"
            or t not in (_Q, _P)
        ):
            return False
        if t == _Q:
            sql = _payload_cstring(frame)
        else:
            _, pos = cstring_at(frame, 5)
            sql, _ = cstring_at(frame, pos)
        if not is_ddl_text(sql) or not self.balancer.cutover_in_progress():
            return False
        self.balancer.counters.ddl_rejected += 1
        self._send_client(error_frame("0A000", "DDL is not allowed during version cutover"))
        if t == _Q:
            self._send_client(ready_frame("I"))
        else:
            self.discard_until_sync = True
        return True

    def _answer_aborted(self, t: int, frame: bytes) -> None:
        """The first unit after the backend was lost inside a transaction."""
        if t == _H:
            return
        self.pending_abort = False
        self.status = "I"
        if t == _Q:
            stmts = classify_query(_payload_cstring(frame))
            if len(stmts) == 1 and stmts[0].kind == "rollback":
                self._send_client(m.CommandComplete("ROLLBACK").encode())
                self._send_client(ready_frame("I"))
                return
        self.balancer.counters.tx_aborted_40001 += 1
        self._send_client(error_frame(SERIALIZATION_FAILURE, TX_MOVED_MESSAGE))
        if t in (_Q, _F, _S):
            self._send_client(ready_frame("I"))
        else:
            self.discard_until_sync = True

    # ------------------------------------------------------------------ backend messages

    async def _on_backend_frame(self, frame: bytes) -> None:
        t = frame[0]
        head = self.units[0] if self.units else None
        if head is not None and head.subscribe is not None:
            sub = head.subscribe
            if t == _COPY_OUT and sub.swallow_copy_out:
                sub.swallow_copy_out = False  # a resumed SUBSCRIBE: the client has one
                return
            if t == _COPY_DATA and not sub.admit(frame):
                return
        if t == _ERR:
            err = parse_error(frame)
            if err.fatal:
                await self._on_backend_death(err, frame)
                return
            if head is not None and head.error is None:
                head.error = err
        elif t == _RFQ:
            await self._on_ready(frame)
            return
        elif head is None:
            pass
        elif t in (_COPY_IN, _COPY_OUT, _COPY_BOTH):
            head.copy = True
            head.unsafe = True
            self._flush_unit(head)
        elif t == _COMMAND_COMPLETE:
            head.commands_done += 1
            self._on_command_complete(head, frame)
        elif t in (_PARSE_COMPLETE, _CLOSE_COMPLETE):
            self._on_statement_op(head, t)
        elif t == _PARAM and self.backend is not None:
            self.backend.note_frame(frame)
        self._respond(head, frame, t)

    def _respond(self, head: _Unit | None, frame: bytes, t: int) -> None:
        """Deliver one answer message: held back while the head unit can still be re-sent."""
        if head is None:
            self._send_client(frame)
            return
        if head.skip and t not in _ASYNC_TYPES:
            expected = head.skip.popleft()
            if expected == t:
                return
            log.warning("re-sent unit answered differently (%r, not %r)", chr(t), chr(expected))
            head.skip.clear()
        if self.status == "I" and not head.unsafe:
            if not head.resp:
                head.resp_since = time.monotonic()
            head.resp.append(frame)
            head.resp_bytes += len(frame)
            if head.flush_mode or head.resp_bytes > self.balancer.response_hold_bytes:
                self._flush_unit(head)
        else:
            self._forward(head, frame, t)

    def _forward(self, head: _Unit, frame: bytes, t: int) -> None:
        self._send_client(frame)
        if t not in _ASYNC_TYPES:
            head.forwarded.append(t)
            if t not in _SAFE_PREFIX:
                head.unsafe = True

    def _flush_unit(self, head: _Unit) -> None:
        resp, head.resp = head.resp, []
        head.resp_bytes = 0
        for frame in resp:
            self._forward(head, frame, frame[0])

    def _hold_timeout(self) -> float | None:
        if self.units and self.units[0].resp:
            left = self.units[0].resp_since + self.balancer.response_hold_s - time.monotonic()
            return max(left, 0.0)
        return None

    def _age_flush(self) -> None:
        if self.units and self.units[0].resp:
            head = self.units[0]
            if time.monotonic() - head.resp_since >= self.balancer.response_hold_s:
                self._flush_unit(head)

    def _on_command_complete(self, head: _Unit, frame: bytes) -> None:
        if head.stmt_pos >= len(head.stmts):
            return
        stmt = head.stmts[head.stmt_pos]
        head.stmt_pos += 1
        tag = _payload_cstring(frame).split(" ", 1)[0].upper()
        kind = stmt.kind
        if kind == "set" and tag == "SET":
            head.effects.append(("set", stmt.name, stmt.sql))
        elif kind == "reset" and tag == "RESET":
            head.effects.append(("reset", stmt.name, None))
        elif kind == "discard_all" and tag == "DISCARD":
            head.effects.append(("discard_all", None, None))
        elif kind == "prepare" and tag == "PREPARE":
            head.effects.append(("sql_prepare", stmt.name, stmt.sql))
        elif kind == "deallocate" and tag == "DEALLOCATE":
            head.effects.append(("deallocate", stmt.name, None))
        elif kind == "declare" and tag == "DECLARE" and stmt.hold:
            head.effects.append(("cursor_add", stmt.name, None))
        elif kind == "close_cursor" and tag == "CLOSE":
            head.effects.append(("cursor_del", stmt.name, None))

    def _on_statement_op(self, head: _Unit, t: int) -> None:
        if head.op_pos >= len(head.ops):
            return
        kind, name, parse = head.ops[head.op_pos]
        head.op_pos += 1
        if t == _PARSE_COMPLETE and kind == "parse" and name:
            head.effects.append(("stmt_add", name, parse))
        elif t == _CLOSE_COMPLETE and kind == "close_s" and name:
            head.effects.append(("stmt_del", name, None))

    def _apply(self, effects: list[tuple[str, str | None, bytes | str | None]]) -> None:
        for kind, name, value in effects:
            if kind == "set" and name is not None and isinstance(value, str):
                self.sets.pop(name, None)
                self.sets[name] = value
            elif kind == "reset":
                if name is None:
                    self.sets.clear()
                else:
                    self.sets.pop(name, None)
            elif kind == "discard_all":
                self.sets.clear()
                self.statements.clear()
                self.sql_prepared.clear()
                self.hold_cursors.clear()
            elif kind == "stmt_add" and name and isinstance(value, bytes):
                self.statements[name] = value
            elif kind == "stmt_del" and name:
                self.statements.pop(name, None)
            elif kind == "sql_prepare" and name and isinstance(value, str):
                self.sql_prepared[name] = value
            elif kind == "deallocate":
                if name is None:
                    self.statements.clear()
                    self.sql_prepared.clear()
                else:
                    self.statements.pop(name, None)
                    self.sql_prepared.pop(name, None)
            elif kind == "cursor_add" and name:
                self.hold_cursors.add(name)
            elif kind == "cursor_del":
                if name is None:
                    self.hold_cursors.clear()
                else:
                    self.hold_cursors.discard(name)

    async def _on_ready(self, frame: bytes) -> None:
        status = chr(frame[5])
        if not self.units:
            self._send_client(frame)
            self.status = status
            return
        head = self.units[0]
        rule = self._retry_rule(head, status)
        if rule is not None and rule.fenced:
            dead = self.backend
            assert dead is not None
            log.info("generation %d answered as fenced; re-sending elsewhere", dead.generation)
            dead.abort()
            self.backend = None
            lost = error_frame(ADMIN_SHUTDOWN, "this generation was fenced out", severity="FATAL")
            await self._retry_elsewhere(head, dead.generation, lost)
            return
        if rule is not None:
            saved = [*head.resp, frame]
            if await self._retry_later(head):
                return
            for f in saved:  # give up: the client gets the error after all
                self._send_client(f)
            self.units.popleft()
            self.status = status
            return
        self._apply(head.effects)
        self._flush_unit(head)
        self.units.popleft()
        self._send_client(frame)
        self.status = status
        if not self.units:
            self.cancel_requested = False

    # ------------------------------------------------------------------ retries

    def _retry_rule(self, head: _Unit, status: str) -> RetryableError | None:
        """The rule that makes the head unit's ERROR retryable, if any: outside a transaction,
        the only unit in flight, nothing of its answer seen by the client, no statement of
        it completed, not cancelled, deadline not passed."""
        if not (
            status == "I"
            and self.status == "I"
            and head.complete
            and len(self.units) == 1
            and not self.cancel_requested
            and self._resendable(head)
        ):
            return None
        return match_retryable(self.balancer.retryable_errors, head.error)

    def _count_retry(self, head: _Unit) -> None:
        if head.retry_deadline is None:
            head.retry_deadline = time.monotonic() + self.balancer.hold_timeout_s
        if not head.counted_retry:
            head.counted_retry = True
            self.balancer.counters.retried += 1

    async def _retry_later(self, head: _Unit) -> bool:
        """The backend answered "not now" (e.g. read-only): wait a little or for the route to
        move on, then re-send there. False if no backend can be had before the deadline."""
        self._count_retry(head)
        assert head.retry_deadline is not None
        backend = self.backend
        assert backend is not None
        head.reset_for_resend()
        delay = min(0.05 * 1.5**head.attempts, 0.5)
        head.attempts += 1
        await self._wait_route_change(delay)
        if self._canceled():
            self._fail_inflight(QUERY_CANCELED, "canceling statement due to user request")
            return True
        route = self.balancer.route
        if route is not None and (route.generation != backend.generation or head.has_named_parse):
            try:
                new = await self._attach(head.retry_deadline, avoid=None)
            except _NoBackend:
                return False
            backend.close()
            self._install(new)
            self._sync_client_params(new)
        if self._canceled():
            self._fail_inflight(QUERY_CANCELED, "canceling statement due to user request")
            return True
        self._resend()
        return True

    def _resend(self) -> None:
        for unit in self.units:
            unit.reset_for_resend()
            for frame in unit.frames:
                self._to_backend(frame)

    async def _on_backend_death(self, err: ErrorFields | None, frame: bytes | None) -> None:
        dead = self.backend
        assert dead is not None
        dead.abort()
        self.backend = None
        code = err.code if err is not None else None
        log.info("session lost its backend (generation %d): %s", dead.generation, err or "closed")
        lost = frame or error_frame(
            "08006", "the backend closed the connection unexpectedly", severity="FATAL"
        )
        avoid = dead.generation if code in (ADMIN_SHUTDOWN, CRASH_SHUTDOWN) else None
        hold = time.monotonic() + self.balancer.hold_timeout_s
        if not self.units:
            self.hold_cursors.clear()  # they lived on the lost backend
            await self._reattach(hold, avoid, lost)
            if self.status == "I":
                self.balancer.counters.reconnected += 1
            else:
                self.pending_abort = True
            return
        head = self.units[0]
        if (
            self.status == "I"
            and len(self.units) == 1
            and head.subscribe is not None
            and head.subscribe.resumable()
            and code in (None, ADMIN_SHUTDOWN, CRASH_SHUTDOWN)
            and not self.cancel_requested
        ):
            await self._resume_subscribe(head, head.subscribe, avoid, lost, hold)
            return
        if self.status == "I":
            not_run = code == ADMIN_SHUTDOWN or (err is None and self.balancer.retry_on_eof)
            if not (not_run and self._resendable(head)):
                self._flush_unit(head)  # what the client would have seen without us
                raise _Fatal(lost)
            if self.cancel_requested:
                await self._reattach(hold, avoid, lost)
                self._fail_inflight(QUERY_CANCELED, "canceling statement due to user request")
                return
            await self._retry_elsewhere(head, avoid, lost)
            return
        # Inside an explicit transaction: the transaction is gone.
        if any(u.is_commit for u in self.units) and code != ADMIN_SHUTDOWN:
            raise _Fatal(lost)  # the COMMIT may or may not have happened: do not guess
        await self._reattach(hold, avoid, lost)
        self.balancer.counters.tx_aborted_40001 += 1
        self._fail_inflight(SERIALIZATION_FAILURE, TX_MOVED_MESSAGE)

    async def _resume_subscribe(
        self, head: _Unit, sub: SubscribeResume, avoid: int | None, lost: bytes, deadline: float
    ) -> None:
        """Re-issue a cut SUBSCRIBE on a fresh backend from its last progress timestamp."""
        await self._reattach(deadline, avoid, lost)
        sql = sub.resume_sql()
        log.info("resuming a SUBSCRIBE on generation %s: %s", self.generation, sql)
        frame = m.Query(sql).encode()
        head.frames = [frame]
        head.commands_done = 0
        head.error = None
        self.balancer.counters.subscribes_resumed += 1
        self._to_backend(frame)

    def _resendable(self, head: _Unit) -> bool:
        """The units in flight can be re-sent: the client has seen nothing of the head's
        answer beyond Parse/Bind/Describe results, no statement of it completed (the backend
        may commit each one), and its retry deadline has not passed."""
        return (
            not head.unsafe
            and head.commands_done == 0
            and (head.retry_deadline is None or time.monotonic() < head.retry_deadline)
        )

    async def _retry_elsewhere(self, head: _Unit, avoid: int | None, lost: bytes) -> None:
        """Re-send the units in flight on a fresh backend (the current one is gone)."""
        self._count_retry(head)
        assert head.retry_deadline is not None
        await self._reattach(head.retry_deadline, avoid, lost)
        if self._canceled():
            self._fail_inflight(QUERY_CANCELED, "canceling statement due to user request")
            return
        self._resend()

    def _fail_inflight(self, sqlstate: str, message: str) -> None:
        """Answer every unit in flight with an error; the session is idle afterwards."""
        for unit in self.units:
            unit.resp.clear()
            self._send_client(error_frame(sqlstate, message))
            if unit.complete:
                self._send_client(ready_frame("I"))
            else:
                self.discard_until_sync = True
            if unit.copy:
                self.drop_copy = True
        self.units.clear()
        self.status = "I"
        self.cancel_requested = False

    async def _reattach(self, deadline: float, avoid: int | None, lost: bytes) -> None:
        try:
            backend = await self._attach(deadline, avoid)
        except NeedsPassword:
            raise _Fatal(lost) from None
        except _NoBackend:
            raise _fatal(CANNOT_CONNECT_NOW, NO_BACKEND_MESSAGE) from None
        self._install(backend)
        self._sync_client_params(backend)

    async def _attach(self, deadline: float, avoid: int | None) -> Backend:
        """A fresh backend on the current route with the session's state replayed. Waits for
        a route (one not `avoid` for the first FENCED_PROBE_S) until `deadline`."""
        probe_at = time.monotonic() + FENCED_PROBE_S
        backoff = 0.02
        while True:
            if self.closing:
                raise _Close
            route = self.balancer.route
            now = time.monotonic()
            if route is not None and not (route.generation == avoid and now < probe_at):
                try:
                    return await self._open(route, max(deadline - now, 1.0))
                except NeedsPassword:
                    raise
                except (OSError, EOFError, TimeoutError, BackendRefused) as e:
                    log.debug("could not attach to %s: %s", route, e)
            now = time.monotonic()
            if now >= deadline:
                raise _NoBackend
            await self._wait_route_change(min(backoff, deadline - now))
            backoff = min(backoff * 2, 0.25)

    async def _open(self, route: Route, timeout_s: float) -> Backend:
        backend = await Backend.connect(route, min(timeout_s, 5.0))
        try:
            await backend.handshake(self.startup_raw, self._replay(), timeout_s)
        except BaseException:
            backend.abort()
            raise
        return backend

    def _replay(self) -> list[bytes]:
        out = [m.Query(sql).encode() for sql in self.sets.values()]
        out += [m.Query(sql).encode() for sql in self.sql_prepared.values()]
        sync = m.Sync().encode()
        out += [parse + sync for parse in self.statements.values()]
        return out

    def _sync_client_params(self, backend: Backend) -> None:
        for name, value in backend.params.items():
            if self.client_params.get(name) != value:
                self._send_client(m.ParameterStatus(name, value).encode())

    async def _wait_route_change(self, timeout_s: float) -> None:
        """Sleep up to `timeout_s`, waking early on a route change or a cancel."""
        if timeout_s <= 0:
            return
        route_event = self.balancer.route_event()
        self.wake.clear()
        waiters = [
            asyncio.ensure_future(route_event.wait()),
            asyncio.ensure_future(self.wake.wait()),
        ]
        try:
            await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    # ------------------------------------------------------------------ moves

    async def _move(self) -> None:
        self.move_requested = False
        route = self.balancer.route
        old = self.backend
        if route is None or old is None or route.generation == old.generation:
            return
        try:
            new = await self._open(route, MOVE_TIMEOUT_S)
        except NeedsPassword:
            log.info("session cannot move to generation %d: it needs a password", route[0])
            self.unmovable = True
            self.balancer.counters.move_failed += 1
            return
        except (OSError, EOFError, TimeoutError, BackendRefused) as e:
            log.info("session could not move to generation %d: %s", route.generation, e)
            self.move_retry_at = time.monotonic() + MOVE_RETRY_S
            self.balancer.counters.move_failed += 1
            return
        old.close()
        self._install(new)
        self._sync_client_params(new)
        self.moves += 1
        self.balancer.counters.moved += 1
        self.balancer._mover_wake.set()


def _payload_cstring(frame: bytes) -> str:
    end = frame.find(b"\0", 5)
    return frame[5 : end if end >= 0 else len(frame)].decode(errors="replace")
