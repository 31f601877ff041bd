"""Sans-IO parsers of the PostgreSQL v3 protocol: bytes in, message dataclasses out.

`FrontendParser` is the server's: feed it what the socket gave (`feed`), then take messages
(`next_message`, or iterate) until it returns None (it needs more bytes). It starts in the
startup phase (untyped packets: StartupMessage, SSLRequest, GSSENCRequest, CancelRequest) and
switches to typed messages after the StartupMessage. The 'p' message means a password, a
SASLInitialResponse or a SASLResponse depending on where authentication is; the server says
which by setting `password_kind` before reading it.

`BackendParser` is the client's side (tests, and later the balancer).

Two kinds of bad input:
- `ProtocolViolation`: the framing is broken (bad length word, unknown message type, message
  bigger than the limit). Nothing after it can be trusted: the connection must be closed.
- `MessageDecodeError` (a subclass): one well-framed message has bad content (truncated fields,
  invalid UTF-8). The parser has consumed it; the stream is still in sync and can go on.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Literal, NoReturn

from twinstream.pgwire import messages as m
from twinstream.pgwire.errors import MessageDecodeError, ProtocolViolation, SqlState
from twinstream.pgwire.limits import (
    MAX_MESSAGE_BYTES,
    MAX_SMALL_MESSAGE_BYTES,
    MAX_STARTUP_PACKET_BYTES,
)

__all__ = [
    "BackendParser",
    "FrontendParser",
    "MessageDecodeError",
    "PayloadReader",
    "ProtocolViolation",
]

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")

#: Frontend message types (after startup) and whether they are "small" (PostgreSQL's
#: PQ_SMALL_MESSAGE_LIMIT applies: they never carry user data of arbitrary size).
FRONTEND_TYPES: dict[int, bool] = {
    ord("Q"): False,
    ord("P"): False,
    ord("B"): False,
    ord("D"): True,
    ord("E"): True,
    ord("S"): True,
    ord("H"): True,
    ord("C"): True,
    ord("X"): True,
    ord("p"): False,
    ord("d"): False,
    ord("c"): True,
    ord("f"): True,
    ord("F"): False,
}

#: Keep this many consumed bytes before compacting the buffer.
_COMPACT_BYTES = 64 * 1024


class PayloadReader:
    """Reads the fields of one message payload; any overrun is a MessageDecodeError."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _fail(self, what: str) -> NoReturn:
        raise MessageDecodeError(f"invalid message format: {what}")

    def byte(self) -> int:
        if self.pos >= len(self.data):
            self._fail("missing byte")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def int16(self) -> int:
        if self.pos + 2 > len(self.data):
            self._fail("missing Int16")
        (v,) = _I16.unpack_from(self.data, self.pos)
        self.pos += 2
        return int(v)

    def int32(self) -> int:
        if self.pos + 4 > len(self.data):
            self._fail("missing Int32")
        (v,) = _I32.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(v)

    def uint32(self) -> int:
        if self.pos + 4 > len(self.data):
            self._fail("missing Int32")
        (v,) = _U32.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(v)

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            self._fail("field length out of range")
        v = self.data[self.pos : self.pos + n]
        self.pos += n
        return v

    def rest(self) -> bytes:
        v = self.data[self.pos :]
        self.pos = len(self.data)
        return v

    def cstring(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            self._fail("unterminated string")
        raw = self.data[self.pos : end]
        self.pos = end + 1
        return decode_utf8(raw)

    def count(self) -> int:
        n = self.int16()
        if n < 0:
            self._fail("negative count")
        return n

    def end(self) -> None:
        if self.pos != len(self.data):
            self._fail("trailing bytes")


def decode_utf8(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 1].hex()
        raise MessageDecodeError(
            f'invalid byte sequence for encoding "UTF8": 0x{bad}',
            SqlState.CHARACTER_NOT_IN_REPERTOIRE,
        ) from None


class _Framer:
    """The shared buffer of both parsers."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos and (self._pos >= _COMPACT_BYTES or self._pos == len(self._buf)):
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet consumed as messages."""
        return len(self._buf) - self._pos

    def _typed_frame(self, types: dict[int, bool] | None, limit: int) -> tuple[int, bytes] | None:
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 5:
            return None
        type_byte = buf[pos]
        (length,) = _I32.unpack_from(buf, pos + 1)
        if types is not None:
            small = types.get(type_byte)
            if small is None:
                raise ProtocolViolation(f"invalid frontend message type {type_byte}")
            if small:
                limit = min(limit, MAX_SMALL_MESSAGE_BYTES)
        if length < 4 or length > limit:
            raise ProtocolViolation(f"invalid message length {length} for type {chr(type_byte)!r}")
        if len(buf) - pos < 1 + length:
            return None
        payload = bytes(buf[pos + 5 : pos + 1 + length])
        self._pos = pos + 1 + length
        return type_byte, payload


class FrontendParser(_Framer):
    """What a server reads. See the module docstring."""

    def __init__(self, *, startup: bool = True, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        super().__init__()
        self.in_startup = startup
        self.max_message_bytes = max_message_bytes
        self.password_kind: Literal["password", "sasl_initial", "sasl"] = "password"

    def __iter__(self) -> Iterator[m.FrontendMessage]:
        while (msg := self.next_message()) is not None:
            yield msg

    def next_message(self) -> m.FrontendMessage | None:
        if self.in_startup:
            return self._next_startup()
        got = self._typed_frame(FRONTEND_TYPES, self.max_message_bytes)
        if got is None:
            return None
        type_byte, payload = got
        try:
            return self._decode(type_byte, payload)
        except MessageDecodeError as exc:
            exc.message_type = chr(type_byte)
            raise

    def _next_startup(self) -> m.FrontendMessage | None:
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 4:
            return None
        (length,) = _I32.unpack_from(buf, pos)
        if length < 8 or length > MAX_STARTUP_PACKET_BYTES:
            raise ProtocolViolation(f"invalid length of startup packet: {length}")
        if len(buf) - pos < length:
            return None
        payload = bytes(buf[pos + 4 : pos + length])
        self._pos = pos + length
        try:
            msg = _decode_startup(payload)
        except MessageDecodeError as exc:
            # Nothing in the startup phase is recoverable.
            raise ProtocolViolation(str(exc)) from None
        if isinstance(msg, m.StartupMessage):
            self.in_startup = False
        return msg

    def _decode(self, t: int, payload: bytes) -> m.FrontendMessage:
        r = PayloadReader(payload)
        msg: m.FrontendMessage
        if t == 0x51:  # Q
            msg = m.Query(r.cstring())
        elif t == 0x50:  # P
            name, query = r.cstring(), r.cstring()
            msg = m.Parse(name, query, tuple(r.uint32() for _ in range(r.count())))
        elif t == 0x42:  # B
            portal, statement = r.cstring(), r.cstring()
            param_formats = tuple(r.int16() for _ in range(r.count()))
            params: list[bytes | None] = []
            for _ in range(r.count()):
                n = r.int32()
                params.append(None if n == -1 else r.take(n))
            result_formats = tuple(r.int16() for _ in range(r.count()))
            msg = m.Bind(portal, statement, param_formats, tuple(params), result_formats)
        elif t == 0x44:  # D
            msg = m.Describe(_kind(r), r.cstring())
        elif t == 0x45:  # E
            msg = m.Execute(r.cstring(), r.int32())
        elif t == 0x53:  # S
            msg = m.Sync()
        elif t == 0x48:  # H
            msg = m.Flush()
        elif t == 0x43:  # C
            msg = m.Close(_kind(r), r.cstring())
        elif t == 0x58:  # X
            msg = m.Terminate()
        elif t == 0x70:  # p
            if self.password_kind == "sasl_initial":
                mechanism = r.cstring()
                n = r.int32()
                msg = m.SASLInitialResponse(mechanism, None if n == -1 else r.take(n))
            elif self.password_kind == "sasl":
                msg = m.SASLResponse(r.rest())
            else:
                msg = m.PasswordMessage(r.cstring())
        elif t == 0x64:  # d
            msg = m.CopyData(r.rest())
        elif t == 0x63:  # c
            msg = m.CopyDone()
        elif t == 0x66:  # f
            msg = m.CopyFail(r.cstring())
        else:  # F (the only other entry of FRONTEND_TYPES)
            msg = m.FunctionCall(r.rest())
        r.end()
        return msg


def _kind(r: PayloadReader) -> Literal["S", "P"]:
    k = r.byte()
    if k == 0x53:
        return "S"
    if k == 0x50:
        return "P"
    raise MessageDecodeError(f"invalid DESCRIBE/CLOSE message subtype {k}")


def _decode_startup(payload: bytes) -> m.FrontendMessage:
    r = PayloadReader(payload)
    code = r.int32()
    if code == m.SSL_REQUEST_CODE:
        r.end()
        return m.SSLRequest()
    if code == m.GSSENC_REQUEST_CODE:
        r.end()
        return m.GSSENCRequest()
    if code == m.CANCEL_REQUEST_CODE:
        pid, secret = r.uint32(), r.uint32()
        r.end()
        return m.CancelRequest(pid, secret)
    if code >> 16 != 3:
        # Another protocol (2.0, or garbage): the server refuses it with a clear FATAL.
        return m.StartupMessage({}, code & 0xFFFFFFFF)
    params: dict[str, str] = {}
    while True:
        name = r.cstring()
        if not name:
            break
        params[name] = r.cstring()
    r.end()
    return m.StartupMessage(params, code)


class BackendParser(_Framer):
    """What a client reads: typed backend messages (answer bytes of SSLRequest aside)."""

    def __init__(self, *, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        super().__init__()
        self.max_message_bytes = max_message_bytes

    def __iter__(self) -> Iterator[m.BackendMessage]:
        while (msg := self.next_message()) is not None:
            yield msg

    def next_message(self) -> m.BackendMessage | None:
        got = self._typed_frame(None, self.max_message_bytes)
        if got is None:
            return None
        t, payload = got
        r = PayloadReader(payload)
        msg = _decode_backend(chr(t), r)
        r.end()
        return msg


def _decode_error_fields(r: PayloadReader) -> dict[str, str]:
    fields: dict[str, str] = {}
    while (code := r.byte()) != 0:
        fields[chr(code)] = r.cstring()
    return fields


_EMPTY_BACKEND: dict[str, m.BackendMessage] = {
    "I": m.EmptyQueryResponse(),
    "1": m.ParseComplete(),
    "2": m.BindComplete(),
    "3": m.CloseComplete(),
    "n": m.NoData(),
    "s": m.PortalSuspended(),
    "c": m.CopyDone(),
}


def _decode_backend(t: str, r: PayloadReader) -> m.BackendMessage:
    empty = _EMPTY_BACKEND.get(t)
    if empty is not None:
        return empty
    if t == "R":
        kind = r.int32()
        if kind == 0:
            return m.AuthenticationOk()
        if kind == 3:
            return m.AuthenticationCleartextPassword()
        if kind == 5:
            return m.AuthenticationMD5Password(r.take(4))
        if kind == 10:
            mechanisms: list[str] = []
            while name := r.cstring():
                mechanisms.append(name)
            return m.AuthenticationSASL(tuple(mechanisms))
        if kind == 11:
            return m.AuthenticationSASLContinue(r.rest())
        if kind == 12:
            return m.AuthenticationSASLFinal(r.rest())
        raise MessageDecodeError(f"unsupported authentication request {kind}")
    if t == "S":
        return m.ParameterStatus(r.cstring(), r.cstring())
    if t == "K":
        return m.BackendKeyData(r.uint32(), r.uint32())
    if t == "Z":
        status = chr(r.byte())
        if status == "I":
            return m.ReadyForQuery("I")
        if status == "T":
            return m.ReadyForQuery("T")
        if status == "E":
            return m.ReadyForQuery("E")
        raise MessageDecodeError(f"invalid transaction status {status!r}")
    if t == "T":
        fields = []
        for _ in range(r.count()):
            name = r.cstring()
            table_oid, column_number = r.uint32(), r.int16()
            type_oid, type_size, type_modifier = r.uint32(), r.int16(), r.int32()
            fmt = r.int16()
            fields.append(
                m.FieldDescription(
                    name, type_oid, type_size, type_modifier, fmt, table_oid, column_number
                )
            )
        return m.RowDescription(tuple(fields))
    if t == "D":
        values: list[bytes | None] = []
        for _ in range(r.count()):
            n = r.int32()
            values.append(None if n == -1 else r.take(n))
        return m.DataRow(tuple(values))
    if t == "C":
        return m.CommandComplete(r.cstring())
    if t in ("E", "N"):
        f = _decode_error_fields(r)
        known = {"S", "V", "C", "M", "D", "H", "P"}
        position = f.get("P")
        args = (
            f.get("V", f.get("S", "")),
            f.get("C", ""),
            f.get("M", ""),
            f.get("D"),
            f.get("H"),
            int(position) if position and position.isdigit() else None,
            tuple((k, v) for k, v in f.items() if k not in known),
        )
        return m.ErrorResponse(*args) if t == "E" else m.NoticeResponse(*args)
    if t == "t":
        return m.ParameterDescription(tuple(r.uint32() for _ in range(r.count())))
    if t in ("G", "H"):
        fmt = r.byte()
        formats = tuple(r.int16() for _ in range(r.count()))
        return m.CopyInResponse(fmt, formats) if t == "G" else m.CopyOutResponse(fmt, formats)
    if t == "d":
        return m.CopyData(r.rest())
    if t == "A":
        return m.NotificationResponse(r.uint32(), r.cstring(), r.cstring())
    if t == "v":
        newest = r.int32()
        n = r.int32()
        if n < 0:
            raise MessageDecodeError("negative count")
        return m.NegotiateProtocolVersion(newest, tuple(r.cstring() for _ in range(n)))
    raise ProtocolViolation(f"invalid backend message type {t!r}")
